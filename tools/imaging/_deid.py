"""De-identification helpers: salted study keys, quoting of free text, the tags never copied.

A study is known downstream only by ``study_key`` (an HMAC of its UID or content hash under a
per-deployment secret salt), so results can be linked to a study without revealing it. Free text
found in input files (series descriptions, comments) is data, never instructions: ``quote_text``
makes it printable and bounded before it is shown to a person or an LLM.
"""

from __future__ import annotations

import hashlib
import hmac

from cardiomics.errors import InputError
from cardiomics.text import quote_text  # noqa: F401  (re-exported: the imaging modules quote through here)

# DICOM keywords that identify a patient, a visit, a place or a person, or that link back to the
# source archive. Nothing under these keywords is ever copied into ``CineStack.meta`` (the readers
# copy an allow-list; this list is what tests and reviews check against).
IDENTIFYING_TAGS: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "OtherPatientIDs",
    "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "MilitaryRank",
    "BranchOfService", "MedicalRecordLocator", "EthnicGroup", "Occupation", "PatientReligiousPreference",
    "PatientInsurancePlanCodeSequence", "IssuerOfPatientID", "PatientComments",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "OperatorsName",
    "RequestingPhysician", "ScheduledPerformingPhysicianName",
    "AccessionNumber", "StudyID", "AdmissionID", "RequestedProcedureID", "ScheduledProcedureStepID",
    "PerformedProcedureStepID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "MediaStorageSOPInstanceUID", "ReferencedSOPInstanceUID",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime",
    "AcquisitionTime", "ContentTime", "AcquisitionDateTime", "InstanceCreationDate", "InstanceCreationTime",
    "DeviceSerialNumber", "StudyDescription", "ImageComments", "RequestAttributesSequence",
)



def study_key(study_uid: str, salt: bytes) -> str:
    """``"study-"`` + the first 24 hex digits of HMAC-SHA256(salt, uid): stable per deployment, not reversible."""
    if not isinstance(salt, (bytes, bytearray)) or len(salt) == 0:
        raise InputError("bad-salt", "the de-identification salt must be non-empty bytes",
                         hint="use Settings.from_env().salt, which creates one on first use")
    uid = str(study_uid).strip()
    if not uid:
        raise InputError("bad-uid", "cannot derive a study key from an empty identifier")
    digest = hmac.new(bytes(salt), uid.encode("utf-8"), hashlib.sha256).hexdigest()
    return "study-" + digest[:24]


