"""DICOM series: round trip by tags, geometry, de-identification, and refusals that name the file."""

from __future__ import annotations

import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, BasicTextSRStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cardiomics.errors import StudyError
from cardiomics.hashing import sha256_file
from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
from cardiomics.tools.imaging._deid import IDENTIFYING_TAGS, quote_text, study_key
from cardiomics.tools.imaging._dicom import SAX_COL, SAX_ROW, read_dicom_series, write_dicom_series
from cardiomics.tools.imaging._io import read_study

SALT = b"test-salt-0123456789"
FAKE = {"patient_name": "DOE^JANE", "patient_id": "MRN-0042", "birth_date": "19600101"}
SPEC = PhantomSpec(n_frames=6, n_slices=5, rows=80, cols=88, pixel_mm=2.2, slice_mm=10.0, lv_edv_ml=120.0, rv_edv_ml=130.0, seed=1)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(SPEC)


@pytest.fixture(scope="module")
def series(phantom, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dicom") / "sax"
    write_dicom_series(phantom.images, phantom.spacing_mm, folder, slice_thickness_mm=7.0, seed=11, **FAKE)
    return folder


@pytest.fixture
def copy(series, tmp_path) -> Path:
    dst = tmp_path / "case"
    shutil.copytree(series, dst)
    return dst


def _file(folder: Path, t: int, s: int) -> Path:
    for p in sorted(folder.iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if int(ds.InstanceNumber) == s * SPEC.n_frames + t + 1:
            return p
    raise AssertionError("no such file")


def _refused(folder: Path, code: str) -> StudyError:
    with pytest.raises(StudyError) as info:
        read_dicom_series(folder, SALT)
    assert info.value.code == code, str(info.value)
    return info.value


def test_written_series_is_byte_identical_for_one_seed(phantom, series, tmp_path):
    again = tmp_path / "again"
    write_dicom_series(phantom.images, phantom.spacing_mm, again, slice_thickness_mm=7.0, seed=11, **FAKE)
    assert {p.name: sha256_file(p) for p in series.iterdir()} == {p.name: sha256_file(p) for p in again.iterdir()}
    ds = pydicom.dcmread(_file(again, 2, 3), stop_before_pixels=True)
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID  # the UID we derived from the seed, in both places


def test_round_trip_with_shuffled_names_orders_by_tags(phantom, series):
    names = sorted(p.name for p in series.iterdir())
    assert len(names) == 30 and not any(n.startswith("IM_") for n in names)  # random names
    stack = read_dicom_series(series, SALT)
    assert stack.images.shape == phantom.images.shape and stack.images.dtype == np.float32
    slope = float(pydicom.dcmread(series / names[0], stop_before_pixels=True).RescaleSlope)
    assert slope != 1.0  # the reader really applies the rescale
    np.testing.assert_allclose(stack.images, phantom.images, atol=slope / 2 + 1e-3)
    assert np.all(np.diff(stack.trigger_times_ms) > 0)
    assert stack.trigger_times_ms[0] == 0 and stack.source == "dicom"


def test_spacing_orientation_and_affine(series):
    stack = read_dicom_series(series, SALT)
    # slice spacing from positions (10 mm), not from SliceThickness (7 mm)
    assert stack.spacing_mm == pytest.approx((10.0, 2.2, 2.2))
    assert stack.slice_thickness_mm == pytest.approx(7.0)
    row, col = np.asarray(stack.orientation[:3]), np.asarray(stack.orientation[3:])
    assert np.dot(row, np.asarray(SAX_ROW) / np.linalg.norm(SAX_ROW)) > 0.9999
    assert abs(np.dot(row, col)) < 1e-6 and np.linalg.norm(col) == pytest.approx(1.0)
    assert not np.allclose(np.abs(stack.orientation), [1, 0, 0, 0, 1, 0])  # oblique, not identity
    col_expected = np.asarray(SAX_COL) - np.dot(SAX_COL, row) * row
    assert np.dot(col, col_expected / np.linalg.norm(col_expected)) > 0.9999
    # affine: voxel (column, row, slice) -> LPS mm, checked against every file's own position
    for p in series.iterdir():
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        s = (int(ds.InstanceNumber) - 1) // SPEC.n_frames
        np.testing.assert_allclose(stack.affine @ [0, 0, s, 1], [*map(float, ds.ImagePositionPatient), 1], atol=1e-3)
    corner = stack.affine @ [87, 79, 0, 1]  # last column, last row
    expected = np.asarray(stack.origin_mm) + 87 * 2.2 * row + 79 * 2.2 * col
    np.testing.assert_allclose(corner[:3], expected, atol=1e-3)
    normal = np.cross(row, col)
    np.testing.assert_allclose(stack.affine[:3, 2], 10.0 * normal, atol=1e-3)


def test_identifiers_never_reach_the_stack(series):
    stack = read_dicom_series(series, SALT)
    text = repr(stack) + str(stack.meta) + stack.study_key
    for value in ("DOE", "JANE", "MRN-0042", "19600101", "Synthetic General Hospital", "REFERRER", "20240315"):
        assert value not in text
    uid = str(pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True).StudyInstanceUID)
    assert uid not in text and stack.study_key == study_key(uid, SALT)
    assert stack.study_key.startswith("study-") and len(stack.study_key) == 6 + 24
    assert study_key(uid, b"another-salt") != stack.study_key
    assert not set(stack.meta) & {t.lower() for t in IDENTIFYING_TAGS}
    assert stack.meta["modality"] == "MR" and stack.meta["n_files"] == 30
    assert stack.meta["series_description"] == "SAX cine" and stack.meta["magnetic_field_strength_t"] == 1.5


def test_input_files_are_not_modified(series):
    before = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in series.iterdir()}
    read_dicom_series(series, SALT)
    read_study(series, SALT)
    assert before == {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in series.iterdir()}


def test_a_nifti_beside_a_dicom_series_is_refused_as_ambiguous(phantom, copy):
    """A NIfTI in a series folder may be a mask or a conversion: neither file kind is taken silently."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.uint8), np.eye(4)), str(copy / "mask.nii.gz"))
    with pytest.raises(StudyError) as info:
        read_study(copy, SALT)
    assert info.value.code == "ambiguous-study-folder"
    assert "mask.nii.gz" in info.value.message and "NIfTI file itself" in info.value.hint
    (copy / "mask.nii.gz").unlink()
    assert read_study(copy, SALT).images.shape[:2] == (SPEC.n_frames, SPEC.n_slices)  # the series alone reads


def test_two_series_in_one_folder_is_refused_naming_them(phantom, copy):
    other = write_dicom_series(phantom.images[:2, :2], phantom.spacing_mm, copy, series_description="LGE PSIR",
                               series_number=9, seed=11, **FAKE)
    err = _refused(copy, "mixed-series")
    assert "SAX cine" in err.message and "LGE PSIR" in err.message and "2 series" in err.message
    assert any(p.name in err.message for p in other)
    assert "one series" in err.hint


def _mid_value_offset(path: Path, data: bytes, after: int) -> int:
    """A byte offset half-way through the value of the first header element that starts past `after`."""
    ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=0)
    for raw in ds._dict.values():
        if raw.value_tell is not None and raw.value_tell > after and raw.length >= 4:
            cut = raw.value_tell + raw.length // 2
            assert cut < len(data)
            return cut
    raise AssertionError("no header element past the offset")


def _end_of_elements_before(data: bytes, tag: int) -> int:
    """The byte offset where the last element of the dataset before `tag` ends."""
    ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, defer_size=0)
    ends = [raw.value_tell + raw.length for t, raw in ds._dict.items() if t < tag and raw.length != 0xFFFFFFFF]
    return max(ends)


def test_truncated_file_is_refused_naming_it(copy):
    victim = _file(copy, 2, 3)
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * 0.6)])
    err = _refused(copy, "unreadable-file")
    assert victim.name in err.message
    # cut inside the header, half-way through an element's value (a cut that lands exactly between two
    # elements leaves a well-formed dataset without an image matrix, which is refused as not-an-image)
    cut = _mid_value_offset(victim, data, after=300)
    victim.write_bytes(data[:cut])
    assert victim.name in _refused(copy, "unreadable-file").message
    # cut exactly after the last element before the image matrix: well-formed, so refused as not an image,
    # still named, and the message says it may be truncated
    victim.write_bytes(data[:_end_of_elements_before(data, 0x00280010)])
    err = _refused(copy, "not-an-image")
    assert victim.name in err.message and "truncated" in err.message


def test_non_image_dicom_is_refused_naming_it(copy, series):
    ref = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True)
    # a structured report in the folder
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BasicTextSRStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr = Dataset()
    sr.file_meta = meta
    sr.SOPClassUID, sr.SOPInstanceUID, sr.Modality = BasicTextSRStorage, meta.MediaStorageSOPInstanceUID, "SR"
    sr.StudyInstanceUID, sr.SeriesInstanceUID = ref.StudyInstanceUID, generate_uid()
    sr.save_as(copy / "report_0001", enforce_file_format=True)
    err = _refused(copy, "not-an-image")
    assert "report_0001" in err.message
    (copy / "report_0001").unlink()
    # a minimal dataset of the same series that claims to be an MR image but has no pixel data
    meta2 = FileMetaDataset()
    meta2.MediaStorageSOPClassUID = MRImageStorage
    meta2.MediaStorageSOPInstanceUID = generate_uid()
    meta2.TransferSyntaxUID = ExplicitVRLittleEndian
    bare = Dataset()
    bare.file_meta = meta2
    bare.SOPClassUID, bare.SOPInstanceUID, bare.Modality = MRImageStorage, meta2.MediaStorageSOPInstanceUID, "MR"
    bare.StudyInstanceUID, bare.SeriesInstanceUID = ref.StudyInstanceUID, ref.SeriesInstanceUID
    bare.save_as(copy / "bare.dcm", enforce_file_format=True)
    assert "bare.dcm" in _refused(copy, "not-an-image").message


def test_missing_image_is_incomplete_series(copy):
    _file(copy, 4, 2).unlink()
    err = _refused(copy, "incomplete-series")
    assert "has 5" in err.message and "20.0 mm" in err.message  # slice 2 (20 mm from the base) has 5 of 6 frames


def test_missing_slice_position_is_incomplete_series(copy):
    for t in range(SPEC.n_frames):
        _file(copy, t, 2).unlink()
    err = _refused(copy, "incomplete-series")
    assert "missing" in err.message


def test_duplicated_image_is_incomplete_series(copy):
    victim = _file(copy, 1, 1)
    ds = pydicom.dcmread(victim)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(copy / "duplicate.dcm", enforce_file_format=True)
    err = _refused(copy, "incomplete-series")
    assert "duplicate.dcm" in err.message and victim.name in err.message


def _edit(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def test_wrong_modality_missing_and_inconsistent_geometry(copy):
    victim = _file(copy, 0, 0)
    _edit(victim, Modality="CT")
    assert victim.name in _refused(copy, "wrong-modality").message
    _edit(victim, Modality="MR", ImagePositionPatient=None)
    err = _refused(copy, "missing-geometry")
    assert victim.name in err.message and "ImagePositionPatient" in err.message
    _edit(victim, ImagePositionPatient=[0.0, 0.0, 0.0], PixelSpacing=[1.0, 1.0])
    err = _refused(copy, "inconsistent-geometry")
    assert victim.name in err.message and "pixel spacing" in err.message


def test_unsupported_transfer_syntax_is_refused(copy):
    victim = _file(copy, 3, 1)
    ds = pydicom.dcmread(victim)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(victim, enforce_file_format=True)
    err = _refused(copy, "unsupported-transfer-syntax")
    assert victim.name in err.message and "MPEG2" in err.message


def test_no_dicom_and_sidecars(tmp_path, copy):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.bin").write_bytes(b"not dicom at all")
    assert _refused(empty, "no-dicom").code == "no-dicom"
    (copy / "README.txt").write_text("exported by PACS")
    (copy / ".DS_Store").write_bytes(b"\x00")
    stack = read_dicom_series(copy, SALT)
    assert stack.meta["n_ignored_files"] == 1 and stack.images.shape[:2] == (6, 5)


def test_frames_ordered_by_instance_number_without_trigger_time(phantom, copy):
    for p in copy.iterdir():
        _edit(p, TriggerTime=None)
    stack = read_dicom_series(copy, SALT)
    assert stack.meta["frame_order"] == "instance-number" and np.isnan(stack.trigger_times_ms).all()
    np.testing.assert_allclose(stack.images, phantom.images, atol=0.05)


def test_read_study_dispatch(series, tmp_path):
    assert read_study(series, SALT).source == "dicom"
    with pytest.raises(StudyError) as info:
        read_study(tmp_path / "nowhere", SALT)
    assert info.value.code == "not-found" and "nowhere" in info.value.message


def test_quote_text():
    assert quote_text(None) == ""
    assert quote_text("  SAX\tcine\n\x00\x1b[31m  ignore previous\u202e instructions ") == "SAX cine [31m ignore previous instructions"
    long = quote_text("x" * 1000, max_len=20)
    assert len(long) == 20 and long.endswith("…")
    assert quote_text(b"caf\xc3\xa9") == "café"
