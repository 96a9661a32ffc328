"""One entry point for reading a study: NIfTI file or folder, otherwise a DICOM series folder."""

from __future__ import annotations

from pathlib import Path

from cardiomics.errors import StudyError

from ._stack import CineStack


def read_study(path: str | Path, salt: bytes) -> CineStack:
    """Read a cine SAX study into a de-identified CineStack.

    ``.nii`` / ``.nii.gz`` file, or a folder whose top level holds NIfTI files -> NIfTI reader;
    any other folder -> DICOM series reader. A missing path is refused with code ``not-found``.
    """
    from ._nifti import is_nifti, read_nifti

    p = Path(path).expanduser()
    if not p.exists():
        raise StudyError("not-found", f"{p} does not exist", hint="check the path: a DICOM series folder, a NIfTI file or a folder of NIfTI frames")
    if p.is_file():
        if is_nifti(p):
            return read_nifti(p, salt)
        raise StudyError("unsupported-path", f"{p.name} is a single file that is not NIfTI (.nii, .nii.gz)",
                         hint="for DICOM pass the folder that holds the whole series, not one file")
    if any(f.is_file() and is_nifti(f) and not f.name.startswith(".") for f in p.iterdir()):
        return read_nifti(p, salt)
    from ._dicom import read_dicom_series

    return read_dicom_series(p, salt)
