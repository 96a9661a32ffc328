"""DICOM cine series: write (for the phantom sample and tests) and read into a de-identified CineStack.

Reading trusts tags, never file names or file order: slices are sorted by their position projected
on the slice normal (cross product of the orientation cosines), frames by TriggerTime (falling back
to InstanceNumber). Anything that would make the stack ambiguous is refused with a StudyError that
names the offending files (relative to the folder). Identifiers are never copied: the stack meta is
an allow-list, and the study is known by ``study_key`` (HMAC of the StudyInstanceUID).
Input files are opened read-only and never modified.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import structlog
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cardiomics.errors import InputError, StudyError
from cardiomics.hashing import sha256_file

from ._deid import quote_text, study_key
from ._stack import CineStack

log = structlog.get_logger(__name__)

# An oblique short-axis plane (row and column direction cosines, LPS), as a scanner would plan it.
SAX_ROW = (0.7071068, 0.6123724, -0.3535534)
SAX_COL = (-0.2236068, 0.6708204, 0.7071068)

# Files that may sit next to a series and are not DICOM: skipped, counted in meta.
_SIDECAR_SUFFIXES = {".txt", ".json", ".md", ".csv", ".xml", ".html", ".htm", ".pdf", ".jpg", ".jpeg", ".png",
                     ".cfg", ".ini", ".log", ".yaml", ".yml", ".nii", ".gz", ".zip", ".tsv"}
_SKIP_NAMES = {"DICOMDIR", "Thumbs.db", "desktop.ini"}
_NON_IMAGE_MODALITIES = {"SR", "PR", "KO", "REG", "RTSTRUCT", "RTPLAN", "DOC", "SEG", "FID", "PLAN"}
_MAX_LISTED = 8
_POSITION_TOL_MM = 0.1


def _orthonormal(row: Sequence[float], col: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.asarray(row, dtype=np.float64)
    c = np.asarray(col, dtype=np.float64)
    r = r / np.linalg.norm(r)
    c = c - np.dot(c, r) * r
    c = c / np.linalg.norm(c)
    return r, c, np.cross(r, c)


# --------------------------------------------------------------------------------------------
# writing


def write_dicom_series(
    images: np.ndarray,
    spacing_mm: Sequence[float],
    out_dir: str | Path,
    *,
    patient_name: str = "ANON",
    patient_id: str = "ANON",
    birth_date: str = "",
    series_description: str = "SAX cine",
    seed: int = 0,
    shuffle_names: bool = True,
    slice_thickness_mm: float | None = None,
    rr_ms: float = 1000.0,
    series_number: int = 1,
    orientation: Sequence[float] | None = None,
    origin_mm: Sequence[float] = (-95.0, -130.0, 40.0),
) -> list[Path]:
    """Write a (T, S, R, C) stack as one MR Image Storage file per (frame, slice); return the paths (t-major).

    Slice s lies at ``origin + s * spacing * normal`` with an oblique SAX orientation; frame t has
    TriggerTime ``t * rr_ms / T``. Pixel data are uint16 with RescaleSlope/Intercept chosen to keep
    the float values to within half a slope step. UIDs are deterministic for ``seed`` and the series
    description. With ``shuffle_names`` file names are random (from the seed), so a reader must
    order by tags.
    """
    arr = np.asarray(images, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError("bad-shape", f"images must be (frames, slices, rows, columns), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError("bad-values", "images hold NaN or infinite values")
    T, S, R, C = arr.shape
    s_mm, r_mm, c_mm = (float(v) for v in spacing_mm)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    row, col, normal = _orthonormal(*(
        (orientation[:3], orientation[3:6]) if orientation is not None else (SAX_ROW, SAX_COL)))
    iop = [float(f"{v:.8f}") for v in (*row, *col)]
    origin = np.asarray(origin_mm, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    intercept = min(0.0, math.floor(lo))
    slope = float(f"{max((hi - intercept) / 65000.0, 1e-6):.6g}")
    thickness = float(slice_thickness_mm) if slice_thickness_mm is not None else s_mm

    def uid(*parts: Any) -> str:
        return generate_uid(entropy_srcs=["cardiomics", str(seed), *map(str, parts)])

    study_uid = uid("study")
    series_uid = uid("series", series_description, series_number)
    frame_uid = uid("frame-of-reference")
    rng = random.Random(f"{seed}:{series_description}:{series_number}")
    paths: list[Path] = []
    for t in range(T):
        for s in range(S):
            sop = uid("sop", series_description, series_number, t, s)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = sop
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = sop
            ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
            ds.StudyDate = "20240315"
            ds.SeriesDate = "20240315"
            ds.StudyTime = "101500"
            ds.Modality = "MR"
            ds.Manufacturer = "cardiomics"
            ds.ManufacturerModelName = "phantom"
            ds.InstitutionName = "Synthetic General Hospital"
            ds.ReferringPhysicianName = "REFERRER^FAKE"
            ds.AccessionNumber = f"ACC{seed:06d}"
            ds.StudyDescription = "Cardiac MRI"
            ds.SeriesDescription = series_description
            ds.PatientName = patient_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = birth_date
            ds.PatientSex = "O"
            ds.BodyPartExamined = "HEART"
            ds.ScanningSequence = "GR"
            ds.SequenceVariant = "SS"
            ds.MRAcquisitionType = "2D"
            ds.MagneticFieldStrength = 1.5
            ds.SliceThickness = thickness
            ds.SpacingBetweenSlices = s_mm
            ds.NominalInterval = rr_ms
            ds.CardiacNumberOfImages = T
            ds.TriggerTime = round(t * rr_ms / T, 3)
            ds.PatientPosition = "HFS"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = series_number
            ds.AcquisitionNumber = 1
            ds.InstanceNumber = s * T + t + 1
            pos = origin + s * s_mm * normal
            ds.ImagePositionPatient = [float(f"{v:.6f}") for v in pos]
            ds.ImageOrientationPatient = iop
            ds.FrameOfReferenceUID = frame_uid
            ds.SliceLocation = float(f"{float(np.dot(pos, normal)):.6f}")
            ds.PixelSpacing = [r_mm, c_mm]
            ds.RescaleIntercept = intercept
            ds.RescaleSlope = slope
            ds.RescaleType = "US"
            stored = np.clip(np.rint((arr[t, s] - intercept) / slope), 0, 65535).astype(np.uint16)
            # pydicom 3 would otherwise replace the SOP Instance UID with a random one (of random length),
            # making the written series differ from run to run
            ds.set_pixel_data(stored, photometric_interpretation="MONOCHROME2", bits_stored=16, generate_instance_uid=False)
            name = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if shuffle_names else f"IM_{t:04d}_{s:04d}.dcm"
            path = out / name
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# reading


@dataclass
class _Header:
    path: Path
    rel: str
    ds: Dataset


_MAX_MATRIX = 1024 * 1024  # rows x columns of one image
_MAX_STACK_BYTES = 2 * 2**30  # float32 stack in memory


def _rel(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return path.name


def _names(items: Sequence[str]) -> str:
    items = list(items)
    shown = ", ".join(quote_text(x, 120) for x in items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _candidate_files(folder: Path) -> tuple[list[Path], int]:
    files, ignored = [], 0
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if not p.is_file():
            continue
        if p.name in _SKIP_NAMES or p.suffix.lower() in _SIDECAR_SUFFIXES:
            ignored += 1
            continue
        files.append(p)
    return files, ignored


def _truncated(ds: Dataset, file_size: int | None = None) -> bool:
    """An element whose value is shorter than its declared length, or runs past the end of the file: the file was cut.

    Reads the raw elements without loading deferred values (``get_item`` would load them, and a
    lying length would then allocate whatever it claims).
    """
    for raw in list(ds._dict.values()):
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
            continue
        if file_size is not None and raw.value_tell is not None and raw.value_tell + raw.length > file_size:
            return True
        if raw.value is not None and len(raw.value) < raw.length:
            return True
    return False


def _is_non_image(ds: Dataset) -> str | None:
    """Why a dataset is not a single-frame greyscale image, or None."""
    sop = ds.get("SOPClassUID")
    name = UID(str(sop)).name if sop else ""
    modality = str(ds.get("Modality", "")).upper()
    if name and name != str(sop) and "Image" not in name:
        return f"it is a {name} object"
    if modality in _NON_IMAGE_MODALITIES:
        return f"its modality is {modality}"
    if "Rows" not in ds or "Columns" not in ds:
        # a file cut exactly between two header elements parses cleanly and ends up here too
        return "it has no image matrix (Rows/Columns); if it should be an image, it may be truncated"
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return "it is a colour image (e.g. a screen capture), not a greyscale MR image"
    return None


def _transfer_syntax_ok(ts: UID) -> bool:
    """Uncompressed, or compressed with a decoder available here; unknown syntaxes are refused."""
    if not ts.is_transfer_syntax:
        return False
    if not ts.is_compressed:
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(ts).is_available)
    except (NotImplementedError, ValueError, ImportError):
        return False


def _floats(ds: Dataset, keyword: str, n: int) -> np.ndarray | None:
    value = ds.get(keyword)
    if value is None:
        return None
    try:
        vals = [float(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value])]
    except (TypeError, ValueError):
        return None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        return None
    return np.asarray(vals, dtype=np.float64)


def _majority_refuse(headers: list[_Header], key, what: str, folder: Path) -> None:
    values = [key(h) for h in headers]
    counts = Counter(values)
    if len(counts) <= 1:
        return
    common, _ = counts.most_common(1)[0]
    odd = [h.rel for h, v in zip(headers, values) if v != common]
    detail = "; ".join(f"{v}: {n} file(s)" for v, n in counts.most_common(5))
    raise StudyError("inconsistent-geometry",
                     f"the files in {folder.name} disagree on {what} ({detail}); differing: {_names(odd)}",
                     hint="a cine stack needs one matrix size, pixel spacing and orientation; pass a folder with one consistent series",
                     files=odd)


def read_dicom_series(folder: str | Path, salt: bytes) -> CineStack:
    """Read one cine SAX series from a folder into a de-identified (T, S, R, C) CineStack."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError("not-found", f"{folder} is not a folder", hint="pass the folder that holds one DICOM series")
    files, ignored = _candidate_files(folder)

    # pass 1: headers only
    headers: list[_Header] = []
    unreadable: list[tuple[str, str]] = []
    for path in files:
        rel = _rel(path, folder)
        try:
            # read once, pixels included: pass 2 decodes them from memory (reading every file twice
            # cost half the load time). Elements over 4 MB stay deferred, so a header that claims a
            # huge length allocates nothing before the truncation check refuses it.
            ds = pydicom.dcmread(path, defer_size="4 MB")
        except InvalidDicomError as exc:
            unreadable.append((rel, f"not a DICOM file ({exc})"))
            continue
        except Exception as exc:  # noqa: BLE001 - any parser failure means the file cannot be trusted
            unreadable.append((rel, f"{type(exc).__name__}: {exc}"))
            continue
        if _truncated(ds, path.stat().st_size) or _truncated(ds.file_meta if hasattr(ds, "file_meta") else Dataset()):
            unreadable.append((rel, "truncated: an element is shorter than its declared length"))
            continue
        headers.append(_Header(path, rel, ds))
    if not headers:
        raise StudyError("no-dicom", f"no DICOM files found in {folder} (looked at {len(files)} file(s)"
                         + (f": {_names([r for r, _ in unreadable])})" if unreadable else ")"),
                         hint="pass a folder that holds the DICOM files of one cine short-axis series")
    if unreadable:
        raise StudyError("unreadable-file", "cannot read " + "; ".join(f"{quote_text(r, 120)}: {quote_text(why, 160)}" for r, why in unreadable[:_MAX_LISTED])
                         + (f" and {len(unreadable) - _MAX_LISTED} more" if len(unreadable) > _MAX_LISTED else ""),
                         hint="the file may be truncated or corrupt: copy the series again from the archive, or remove the file",
                         files=[r for r, _ in unreadable])

    non_image = [(h.rel, why) for h in headers if (why := _is_non_image(h.ds))]
    if non_image:
        raise StudyError("not-an-image", "not an image: " + "; ".join(f"{quote_text(r, 120)} ({why})" for r, why in non_image[:_MAX_LISTED]),
                         hint="remove reports, presentation states and other non-image objects from the series folder",
                         files=[r for r, _ in non_image])
    wrong = [h for h in headers if str(h.ds.get("Modality", "")).upper() != "MR"]
    if wrong:
        mods = Counter(quote_text(h.ds.get("Modality", "") or "missing", 16) for h in wrong)
        raise StudyError("wrong-modality", f"expected MR images; {_names([h.rel for h in wrong])} have modality "
                         + ", ".join(f"{m} ({n})" for m, n in mods.items()),
                         hint="pass a cardiac MR cine series", files=[h.rel for h in wrong])
    multi = [h.rel for h in headers if int(h.ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        raise StudyError("unsupported-format", f"enhanced (multi-frame) DICOM is not supported: {_names(multi)}",
                         hint="export the series as classic single-frame MR images", files=multi)

    # one series only
    by_series: dict[str, list[_Header]] = defaultdict(list)
    for h in headers:
        by_series[str(h.ds.get("SeriesInstanceUID", "")) or "(no SeriesInstanceUID)"].append(h)
    if len(by_series) > 1:
        lines = []
        for i, (_, hs) in enumerate(sorted(by_series.items(), key=lambda kv: -len(kv[1])), start=1):
            ds0 = hs[0].ds
            desc = quote_text(ds0.get("SeriesDescription", ""), 64) or "(no description)"
            lines.append(f"({i}) \"{desc}\" (SeriesNumber {quote_text(ds0.get('SeriesNumber', '?'), 8)}), "
                         f"{len(hs)} file(s) e.g. {_names([h.rel for h in hs][:3])}")
        raise StudyError("mixed-series", f"{folder.name} holds {len(by_series)} series: " + "; ".join(lines),
                         hint="pass a folder that holds exactly one series (move the others to their own folders)",
                         files=[h.rel for hs in by_series.values() for h in hs])

    bad_ts = []
    for h in headers:
        ts = h.ds.file_meta.get("TransferSyntaxUID") if hasattr(h.ds, "file_meta") else None
        if ts is None or not _transfer_syntax_ok(UID(str(ts))):
            bad_ts.append((h.rel, UID(str(ts)).name if ts else "missing"))
    if bad_ts:
        raise StudyError("unsupported-transfer-syntax",
                         "cannot decode the pixel data of " + "; ".join(f"{quote_text(r, 120)} ({quote_text(n, 64)})" for r, n in bad_ts[:_MAX_LISTED]),
                         hint="convert the series to an uncompressed transfer syntax (e.g. `dcmdjpeg` or `gdcmconv --raw`)",
                         files=[r for r, _ in bad_ts])

    missing = []
    for h in headers:
        gaps = [k for k, n in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2))
                if _floats(h.ds, k, n) is None]
        spacing_mm = _floats(h.ds, "PixelSpacing", 2)
        if spacing_mm is not None and np.any(spacing_mm <= 0):
            gaps.append("PixelSpacing (not positive)")
        if gaps:
            missing.append((h.rel, gaps))
    if missing:
        raise StudyError("missing-geometry",
                         "no usable geometry in " + "; ".join(f"{quote_text(r, 120)} (missing or invalid {', '.join(g)})" for r, g in missing[:_MAX_LISTED]),
                         hint="the stack cannot be placed in space without these tags; export the series with full headers",
                         files=[r for r, _ in missing])

    # consistent in-plane geometry
    _majority_refuse(headers, lambda h: (int(h.ds.Rows), int(h.ds.Columns)), "the matrix size (rows, columns)", folder)
    _majority_refuse(headers, lambda h: tuple(np.round(_floats(h.ds, "PixelSpacing", 2), 4)), "the pixel spacing", folder)
    _majority_refuse(headers, lambda h: tuple(np.round(_floats(h.ds, "ImageOrientationPatient", 6), 3)), "the image orientation", folder)

    iop = _floats(headers[0].ds, "ImageOrientationPatient", 6)
    row_dir, col_dir, normal = _orthonormal(iop[:3], iop[3:])
    if not np.all(np.isfinite(normal)):
        raise StudyError("missing-geometry", f"degenerate ImageOrientationPatient in {headers[0].rel}")

    # slices by position along the normal
    proj = np.array([float(np.dot(_floats(h.ds, "ImagePositionPatient", 3), normal)) for h in headers])
    order = np.argsort(proj, kind="stable")
    clusters: list[list[int]] = []
    for i in order:
        if clusters and proj[i] - proj[clusters[-1][-1]] <= _POSITION_TOL_MM:
            clusters[-1].append(int(i))
        else:
            clusters.append([int(i)])
    centres = np.array([float(np.mean(proj[c])) for c in clusters])

    # frames by trigger time, else instance number
    have_tt = all("TriggerTime" in h.ds and h.ds.TriggerTime not in (None, "") for h in headers)
    have_in = all("InstanceNumber" in h.ds and h.ds.InstanceNumber not in (None, "") for h in headers)
    if not (have_tt or have_in):
        raise StudyError("missing-geometry", "cannot order the cardiac phases: files lack both TriggerTime and InstanceNumber, e.g. "
                         + _names([h.rel for h in headers if "TriggerTime" not in h.ds][:3]),
                         hint="export the cine with its timing tags")
    frame_key = (lambda h: float(h.ds.TriggerTime)) if have_tt else (lambda h: float(h.ds.InstanceNumber))
    per_slice: list[list[_Header]] = []
    duplicated: list[str] = []
    for c in clusters:
        hs = sorted((headers[i] for i in c), key=lambda h: (frame_key(h), h.rel))
        keys = [frame_key(h) for h in hs]
        for a, b, ha, hb in zip(keys, keys[1:], hs, hs[1:]):
            if abs(b - a) < 1e-3:
                duplicated.append(f"{ha.rel} and {hb.rel} (same position, {'trigger time' if have_tt else 'instance number'} {a:g})")
        per_slice.append(hs)
    counts = [len(hs) for hs in per_slice]
    summary = ", ".join(f"{centres[i] - centres[0]:.1f} mm: {n}" for i, n in enumerate(counts))
    if duplicated:
        raise StudyError("incomplete-series", f"duplicated images in {folder.name}: {_names(duplicated)}; frames per slice position "
                         f"(offset along the slice normal): {summary}",
                         hint="the folder seems to hold a repeated acquisition; keep one copy of each image")
    if len(set(counts)) > 1:
        expected = Counter(counts).most_common(1)[0][0]
        short = [f"{centres[i] - centres[0]:.1f} mm has {n}" for i, n in enumerate(counts) if n != expected]
        raise StudyError("incomplete-series", f"slice positions hold different numbers of frames (most have {expected}): "
                         f"{'; '.join(short)}. All positions: {summary}",
                         hint="some images are missing or extra: copy the complete series again")
    n_frames, n_slices = counts[0], len(per_slice)
    if n_slices > 1:
        gaps = np.diff(centres)
        spacing = float(np.median(gaps))
        if spacing <= 0:
            raise StudyError("inconsistent-geometry", "slice positions coincide")
        ratio = gaps / spacing
        if np.any(np.abs(ratio - 1.0) > 0.1):
            holes = [f"{gaps[i]:.1f} mm between {centres[i] - centres[0]:.1f} and {centres[i + 1] - centres[0]:.1f} mm"
                     for i in np.nonzero(np.abs(ratio - 1.0) > 0.1)[0]]
            whole = np.all(np.abs(ratio - np.rint(ratio)) < 0.1) and np.all(np.rint(ratio) >= 1)
            raise StudyError("incomplete-series" if whole else "inconsistent-geometry",
                             f"uneven slice spacing (typical {spacing:.2f} mm): {'; '.join(holes)}"
                             + (" - a slice position seems to be missing" if whole else ""),
                             hint="copy the complete series again" if whole else "the stack must have evenly spaced parallel slices")
    else:
        spacing = float(_floats(headers[0].ds, "SpacingBetweenSlices", 1)[0]) if _floats(headers[0].ds, "SpacingBetweenSlices", 1) is not None \
            else float(_floats(headers[0].ds, "SliceThickness", 1)[0]) if _floats(headers[0].ds, "SliceThickness", 1) is not None else 1.0

    # pass 2: pixels
    rows, cols = int(headers[0].ds.Rows), int(headers[0].ds.Columns)
    n_bytes = n_frames * n_slices * rows * cols * 4
    if rows * cols > _MAX_MATRIX or n_bytes > _MAX_STACK_BYTES:
        raise StudyError("image-too-large", f"{n_frames} frames x {n_slices} slices of {rows} x {cols} pixels "
                         f"({n_bytes / 2**30:.1f} GiB) is beyond what a cine SAX study holds",
                         hint=f"cine SAX matrices are at most {int(_MAX_MATRIX ** 0.5)} x {int(_MAX_MATRIX ** 0.5)}; check the series")
    images = np.empty((n_frames, n_slices, rows, cols), dtype=np.float32)
    trig = np.full((n_frames, n_slices), np.nan)
    for s, hs in enumerate(per_slice):
        for t, h in enumerate(hs):
            images[t, s] = _pixels(h)
            if have_tt:
                trig[t, s] = float(h.ds.TriggerTime)

    ds0 = per_slice[0][0].ds
    pixel_spacing = _floats(ds0, "PixelSpacing", 2)
    row_mm, col_mm = float(pixel_spacing[0]), float(pixel_spacing[1])
    origin = _floats(ds0, "ImagePositionPatient", 3)
    if n_slices > 1:
        last = _floats(per_slice[-1][0].ds, "ImagePositionPatient", 3)
        step = (last - origin) / (n_slices - 1)
    else:
        step = normal * spacing
    affine = np.eye(4)
    affine[:3, 0] = row_dir * col_mm  # column index runs along the row direction
    affine[:3, 1] = col_dir * row_mm
    affine[:3, 2] = step
    affine[:3, 3] = origin
    thickness = _floats(ds0, "SliceThickness", 1)
    study_uid = str(ds0.get("StudyInstanceUID", "") or "")
    key = study_key(study_uid, salt) if study_uid else study_key("sha256:" + sha256_file(per_slice[0][0].path), salt)
    field = _floats(ds0, "MagneticFieldStrength", 1)
    nominal = _floats(ds0, "NominalInterval", 1)
    ts = ds0.file_meta.get("TransferSyntaxUID")
    meta: dict[str, Any] = {
        "modality": "MR",
        "manufacturer": quote_text(ds0.get("Manufacturer", ""), 64),
        "manufacturer_model": quote_text(ds0.get("ManufacturerModelName", ""), 64),
        "magnetic_field_strength_t": float(field[0]) if field is not None else None,
        "series_description": quote_text(ds0.get("SeriesDescription", ""), 128),
        "n_files": len(headers),
        "n_ignored_files": ignored,
        "transfer_syntax": UID(str(ts)).name if ts else "",
        "frame_order": "trigger-time" if have_tt else "instance-number",
        "nominal_interval_ms": float(nominal[0]) if nominal is not None else None,
        "affine_space": "LPS",
    }
    shear = float(np.degrees(np.arccos(np.clip(abs(np.dot(step, normal)) / max(np.linalg.norm(step), 1e-9), -1, 1)))) if n_slices > 1 else 0.0
    if shear > 1.0:
        meta["slice_shear_deg"] = round(shear, 2)
    log.info("dicom series read", study_key=key, frames=n_frames, slices=n_slices, rows=rows, columns=cols,
             n_files=len(headers), n_ignored=ignored)
    return CineStack(
        images=images,
        spacing_mm=(abs(float(spacing)), row_mm, col_mm),
        slice_thickness_mm=float(thickness[0]) if thickness is not None else abs(float(spacing)),
        orientation=tuple(float(v) for v in (*row_dir, *col_dir)),
        origin_mm=tuple(float(v) for v in origin),
        affine=affine,
        trigger_times_ms=np.nanmedian(trig, axis=1) if have_tt else np.full(n_frames, np.nan),
        source="dicom",
        study_key=key,
        meta=meta,
    )


def _native_pixels(ds: Dataset) -> np.ndarray | None:
    """Uncompressed little-endian 8/16-bit single-frame greyscale straight from the bytes, else None.

    pydicom's generic decoder pipeline costs ~5 ms per image; this is what nearly every cine series is.
    """
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None or UID(str(ts)).is_compressed or not UID(str(ts)).is_little_endian:
        return None
    bits, signed = int(ds.get("BitsAllocated", 0)), int(ds.get("PixelRepresentation", 0))
    if bits not in (8, 16) or int(ds.get("SamplesPerPixel", 1)) != 1 or int(ds.get("NumberOfFrames", 1) or 1) != 1:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    data = ds.PixelData
    if not isinstance(data, (bytes, bytearray)) or len(data) < rows * cols * bits // 8:
        return None
    dtype = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2"}[(bits, signed)]
    arr = np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)
    stored = int(ds.get("BitsStored", bits))
    if stored < bits:  # bits above BitsStored may hold overlays: mask them, sign-extend signed values
        arr = arr.astype(np.int32) & ((1 << stored) - 1)
        if signed:
            arr = np.where(arr >= 1 << (stored - 1), arr - (1 << stored), arr)
    return arr


def _pixels(h: _Header) -> np.ndarray:
    """Rescaled pixel values of one file (float32, rows x columns), from the dataset read in pass 1."""
    ds = h.ds
    if "PixelData" not in ds:
        raise StudyError("not-an-image", f"not an image: {h.rel} has no pixel data (if it should be an image, it may be truncated)",
                         hint="remove non-image objects from the series folder", files=[h.rel])
    if _truncated(ds):
        raise StudyError("unreadable-file", f"cannot read {h.rel}: truncated (an element is shorter than its declared length)",
                         hint="the file may be truncated or corrupt: copy the series again", files=[h.rel])
    try:
        raw = _native_pixels(ds)
        if raw is None:
            raw = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise StudyError("unreadable-file", f"cannot decode the pixel data of {h.rel}: {quote_text(f'{type(exc).__name__}: {exc}', 200)}",
                         hint="the file may be truncated or corrupt: copy the series again", files=[h.rel]) from None
    if raw.shape != (int(ds.Rows), int(ds.Columns)):
        raise StudyError("unreadable-file", f"pixel data of {h.rel} has shape {raw.shape}, expected ({ds.Rows}, {ds.Columns})",
                         files=[h.rel])
    arr = raw.astype(np.float64)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = float(2 ** int(ds.get("BitsStored", 16)) - 1) - arr
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (arr * slope + intercept).astype(np.float32)
