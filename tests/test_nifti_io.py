"""NIfTI (ACDC layout): spacing from the header's pixdim, one axis convention both ways, refusals."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardiomics.errors import InputError, StudyError
from cardiomics.hashing import sha256_file
from cardiomics.tools.imaging._io import read_study
from cardiomics.tools.imaging._nifti import read_nifti, write_labels_nifti
from cardiomics.tools.imaging._stack import CineStack

SALT = b"test-salt-nifti"
DATA = Path(os.environ.get("CARDIOMICS_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
ACDC101 = DATA / "nifti" / "acdc101_emidec" / "patient101_frame01.nii.gz"


@pytest.fixture
def real_frame() -> Path:
    if not ACDC101.is_file():
        pytest.skip(f"shared data not found at {ACDC101} (set CARDIOMICS_DATA)")
    return ACDC101


def _save(path: Path, data: np.ndarray, zooms, affine=None, t_unit="sec") -> Path:
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    pixdim = img.header["pixdim"].copy()
    pixdim[1 : 1 + len(zooms)] = zooms  # raw, so invalid values reach the file as they would from a broken tool
    img.header["pixdim"] = pixdim
    img.header.set_xyzt_units("mm", t_unit)
    nib.save(img, str(path))
    return path


def test_real_acdc_frame_spacing_comes_from_pixdim_not_the_affine(real_frame):
    before = sha256_file(real_frame)
    stack = read_nifti(real_frame, SALT)
    assert stack.images.shape == (1, 10, 256, 232)  # (t, slice, row=y, column=x) of a (232, 256, 10) file
    assert stack.spacing_mm == pytest.approx((10.0, 1.64062, 1.64062), abs=1e-4)
    assert stack.voxel_ml == pytest.approx(10 * 1.64062**2 / 1000, rel=1e-4)  # not 0.001 ml from the unit affine
    assert stack.slice_thickness_mm == pytest.approx(10.0)
    assert np.allclose(np.abs(np.diag(stack.affine)[:3]), 1.0)  # the file's affine kept as is...
    assert stack.meta["affine_scale_mismatch"] is True  # ...and its inconsistency recorded
    assert stack.source == "nifti" and stack.study_key.startswith("study-") and "patient101" not in repr(stack.meta)
    assert stack.study_key == read_nifti(real_frame, SALT).study_key != read_nifti(real_frame, b"other").study_key
    data = np.asarray(nib.load(str(real_frame)).dataobj, dtype=np.float32)
    np.testing.assert_array_equal(stack.images[0], data.transpose(2, 1, 0))
    assert sha256_file(real_frame) == before
    assert read_study(real_frame, SALT).images.shape == stack.images.shape


def test_label_write_back_preserves_affine_zooms_and_orientation(real_frame, tmp_path):
    stack = read_nifti(real_frame, SALT)
    img = stack.images[0]
    labels = np.zeros(img.shape, dtype=np.uint8)
    labels[img > np.percentile(img, 95)] = 3
    labels[2, 10:20, 5:8] = 1  # asymmetric marker: slice 2, rows 10-19, columns 5-7
    out = write_labels_nifti(labels, stack, tmp_path / "labels.nii.gz")
    written, original = nib.load(str(out)), nib.load(str(real_frame))
    np.testing.assert_allclose(written.affine, original.affine)
    np.testing.assert_allclose(written.header.get_zooms(), original.header.get_zooms()[:3])
    assert int(written.header["sform_code"]) == int(original.header["sform_code"])
    assert written.get_data_dtype() == np.uint8 and written.shape == original.shape
    data = np.asarray(written.dataobj)
    assert (data[5:8, 10:20, 2] == 1).all() and data[10:20, 5:8, 2].sum() == 0  # x = column, y = row, z = slice
    orig = np.asarray(original.dataobj, dtype=np.float32)
    hot = (orig > np.percentile(orig, 95)) & (data != 1)
    assert np.array_equal(data == 3, hot)  # overlays the original voxels exactly
    back = read_nifti(out, SALT)
    assert back.spacing_mm == pytest.approx(stack.spacing_mm)
    np.testing.assert_array_equal(back.images[0], labels.astype(np.float32))


def test_4d_file_axis_convention_and_frame_times(tmp_path):
    x, y, z, t = 7, 5, 3, 4
    data = np.arange(x * y * z * t, dtype=np.float32).reshape(x, y, z, t)
    path = _save(tmp_path / "cine_4d.nii.gz", data, (1.25, 1.25, 8.0, 0.04))
    stack = read_nifti(path, SALT)
    assert stack.images.shape == (t, z, y, x)
    assert stack.images[3, 2, 4, 6] == data[6, 4, 2, 3] and stack.images[1, 0, 2, 5] == data[5, 2, 0, 1]
    assert stack.spacing_mm == pytest.approx((8.0, 1.25, 1.25))
    np.testing.assert_allclose(stack.trigger_times_ms, [0, 40, 80, 120])


def test_folder_of_frames_sorted_by_number(tmp_path):
    a = np.zeros((6, 5, 3), dtype=np.int16)
    b = np.ones((6, 5, 3), dtype=np.int16)
    _save(tmp_path / "patient007_frame12.nii.gz", b, (1.5, 1.5, 10.0))
    _save(tmp_path / "patient007_frame01.nii.gz", a, (1.5, 1.5, 10.0))
    _save(tmp_path / "patient007_frame01_gt.nii.gz", a.astype(np.uint8), (1.5, 1.5, 10.0))  # labels: ignored
    (tmp_path / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\nHeight: 170.0\nNbFrame: 30\nWeight: 70.0\n")
    stack = read_study(tmp_path, SALT)
    assert stack.images.shape == (2, 3, 5, 6) and stack.images[0].max() == 0 and stack.images[1].min() == 1
    assert stack.meta["frame_numbers"] == [1, 12]
    assert stack.meta["acdc_info"] == {"ed_frame_number": 1, "es_frame_number": 12, "height_cm": 170.0, "weight_kg": 70.0}
    _save(tmp_path / "patient008_frame01.nii.gz", a, (1.5, 1.5, 10.0))
    with pytest.raises(StudyError) as info:
        read_nifti(tmp_path, SALT)
    assert info.value.code == "mixed-series" and "patient008_frame01.nii.gz" in info.value.message


def test_bad_headers_and_unreadable_files_are_refused(tmp_path):
    data = np.zeros((4, 4, 2), dtype=np.float32)
    cases = {
        "zero.nii.gz": ("bad-header", lambda p: _save(p, data, (0.0, 1.0, 1.0))),
        "negative.nii.gz": ("bad-header", lambda p: _save(p, data, (1.0, -1.5, 1.0))),
        "nan.nii.gz": ("bad-header", lambda p: _save(p, data, (1.0, 1.0, float("nan")))),
        "flat.nii.gz": ("bad-header", lambda p: _save(p, np.zeros((4, 4), np.float32), (1.0, 1.0))),
        "garbage.nii.gz": ("unreadable-file", lambda p: p.write_bytes(gzip.compress(b"not a nifti header" * 10))),
    }
    for name, (code, make) in cases.items():
        path = tmp_path / name
        make(path)
        with pytest.raises(StudyError) as info:
            read_nifti(path, SALT)
        assert info.value.code == code and name in info.value.message, (name, str(info.value))


def test_labels_for_a_dicom_stack_are_written_in_ras(tmp_path):
    lps = np.array([[0, 0, 8.0, -50], [1.5, 0, 0, 20], [0, -1.5, 0, 30], [0, 0, 0, 1]])
    stack = CineStack(images=np.zeros((1, 3, 4, 5), np.float32), spacing_mm=(8.0, 1.5, 1.5), slice_thickness_mm=8.0,
                      orientation=(0, 1, 0, 0, 0, -1), origin_mm=(-50, 20, 30), affine=lps, trigger_times_ms=np.zeros(1),
                      source="dicom", study_key="study-" + "0" * 24, meta={"affine_space": "LPS"})
    out = write_labels_nifti(np.ones((3, 4, 5), np.uint8), stack, tmp_path / "seg.nii.gz")
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, np.diag([-1, -1, 1, 1]) @ lps)
    assert img.shape == (5, 4, 3)
    np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.5, 8.0))
    with pytest.raises(InputError):
        write_labels_nifti(np.ones((3, 5, 4), np.uint8), stack, tmp_path / "bad.nii.gz")


def test_label_frames_are_written_as_one_4d_file(tmp_path):
    lps = np.array([[0, 0, 8.0, -50], [1.5, 0, 0, 20], [0, -1.5, 0, 30], [0, 0, 0, 1]])
    stack = CineStack(images=np.zeros((2, 3, 4, 5), np.float32), spacing_mm=(8.0, 1.5, 1.5), slice_thickness_mm=8.0,
                      orientation=(0, 1, 0, 0, 0, -1), origin_mm=(-50, 20, 30), affine=lps, trigger_times_ms=np.zeros(2),
                      source="dicom", study_key="study-" + "0" * 24, meta={"affine_space": "LPS"})
    labels = np.zeros((2, 3, 4, 5), np.uint8)
    labels[0, 1, 2, 3] = 3  # frame 0, slice 1, row 2, column 3
    labels[1, 2, 0, 4] = 1  # frame 1, slice 2, row 0, column 4
    out = write_labels_nifti(labels, stack, tmp_path / "seg.nii.gz")
    img = nib.load(str(out))
    assert img.shape == (5, 4, 3, 2)
    np.testing.assert_allclose(img.header.get_zooms(), (1.5, 1.5, 8.0, 1.0))
    data = np.asarray(img.dataobj)
    assert data[3, 2, 1, 0] == 3 and data[4, 0, 2, 1] == 1 and data.sum() == 4  # x = column, y = row, z = slice, t = frame
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]
