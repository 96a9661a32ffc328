"""A real ACDC test patient (101, group DCM) read from NIfTI: spacing from the header, EF in the DCM range.

ACDC's DCM criterion (Bernard et al. 2018): LVEF < 40 % with LV end-diastolic volume index > 100 ml/m².
With the unit affine instead of the header's pixdim, volumes would be ~27x too small and the index
far below 100, so this also checks that spacing comes from the header.
"""

from __future__ import annotations

import math

import numpy as np
import pytest


def test_patient101_segments_in_the_dcm_range(data_dir):
    from cardiomics.models.segmenter import load_segmenter
    from cardiomics.tools.imaging._nifti import read_nifti

    folder = data_dir / "nifti" / "acdc101_emidec"
    info = dict(line.split(":", 1) for line in (folder / "Info.cfg").read_text().splitlines() if ":" in line)
    assert info["Group"].strip() == "DCM"
    height, weight = float(info["patient's Height"]), float(info["patient's Weight"])
    seg = load_segmenter()
    lv = {}
    for frame in ("frame01", "frame14"):  # ED and ES per Info.cfg
        stack = read_nifti(folder / f"patient101_{frame}.nii.gz", b"test")
        assert stack.spacing_mm[1] == pytest.approx(1.64, abs=0.01) and stack.spacing_mm[0] == pytest.approx(10.0)
        t, s, r, c = stack.images.shape
        labels, _ = seg.predict(stack.images.reshape(t * s, r, c), stack.spacing_mm[1:], n_slices=s)
        lv[frame] = float((labels == 3).sum()) * stack.voxel_ml
    ef = 100 * (lv["frame01"] - lv["frame14"]) / lv["frame01"]
    edv_index = lv["frame01"] / math.sqrt(height * weight / 3600)
    assert ef < 40, f"LVEF {ef:.1f} % is not in the DCM range"
    assert edv_index > 100, f"LVEDV index {edv_index:.0f} ml/m² is not dilated"
    assert np.isfinite([ef, edv_index]).all()
