"""One entry point for reading a study: NIfTI file or folder, otherwise a DICOM series folder."""

from __future__ import annotations

from pathlib import Path

from cardiomics.errors import StudyError

from ._stack import CineStack


def looks_like_dicom(path: Path) -> bool:
    """A DICOM file by its name (.dcm, .ima) or its Part 10 preamble ("DICM" at byte 128)."""
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def first_dicom_file(folder: Path) -> Path | None:
    """The first DICOM-looking file under ``folder`` (hidden entries skipped), or None."""
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts) and looks_like_dicom(f):
            return f
    return None


def read_study(path: str | Path, salt: bytes) -> CineStack:
    """Read a cine SAX study into a de-identified CineStack.

    ``.nii`` / ``.nii.gz`` file, or a folder whose top level holds NIfTI files -> NIfTI reader;
    any other folder -> DICOM series reader. A missing path is refused with code ``not-found``; a
    folder holding NIfTI files and DICOM files with ``ambiguous-study-folder`` (which one is the
    study cannot be told: a NIfTI beside a series is often a mask or a conversion).
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
    niftis = sorted(f.name for f in p.iterdir() if f.is_file() and is_nifti(f) and not f.name.startswith("."))
    if niftis:
        dicom = first_dicom_file(p)
        if dicom is not None:
            raise StudyError("ambiguous-study-folder",
                             f"{p} holds NIfTI files ({', '.join(niftis[:3])}{' …' if len(niftis) > 3 else ''}) "
                             f"and DICOM files ({dicom.relative_to(p).as_posix()} …): which one is the study is unclear",
                             hint="keep one kind per study folder: move the NIfTI files out, or pass the NIfTI file itself")
        return read_nifti(p, salt)
    from ._dicom import read_dicom_series

    return read_dicom_series(p, salt)
