"""cardiac_function on label series with planted voxel counts: per-ventricle ED/ES frames and TTA intervals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import cardiomics.tools.imaging._function  # noqa: F401 - registers the tool
from cardiomics.tools import ArtifactStore, ToolContext, call_tool
from cardiomics.tools.imaging._interval import tta_interval
from cardiomics.tools.imaging._segment import _ed_es_frames

TRUTH_MODEL = {"id": "planted", "version": "0", "weights_sha256": "0" * 64}
SPACING = (10.0, 2.0, 2.0)  # 0.04 ml per voxel
VOXEL_ML = 0.04
MYO_VOXELS = 2500  # 105 g at 1.05 g/ml
# LV largest at frame 0, smallest at 3; the RV largest at 0, smallest one frame later (4)
LV = [3000, 2600, 1800, 1400, 2000, 2800]
RV_LAGGING = [3200, 3000, 2400, 1900, 1600, 2900]


@pytest.fixture
def ctx(tmp_path):
    return ToolContext(store=ArtifactStore(tmp_path / "store"))


def _series(lv: list[int], rv: list[int]) -> np.ndarray:
    """Labels (T, 2, 80, 80): LV cavity and myocardium counts on slice 0, RV cavity count on slice 1."""
    out = np.zeros((len(lv), 2, 80, 80), dtype=np.uint8)
    for t, (n_lv, n_rv) in enumerate(zip(lv, rv)):
        s0 = out[t, 0].reshape(-1)
        s0[:n_lv] = 3
        s0[n_lv:n_lv + MYO_VOXELS] = 2
        out[t, 1].reshape(-1)[:n_rv] = 1
    return out


def _put(ctx: ToolContext, labels: np.ndarray, **arrays) -> str:
    return ctx.store.put("seg", {"labels": labels, **arrays},
                         {"study_id": "study-" + "0" * 24, "spacing_mm": list(SPACING), "model": TRUTH_MODEL})


def test_rv_end_systole_is_the_rv_minimum_not_the_lv_one(ctx):
    labels = _series(LV, RV_LAGGING)
    out = call_tool("cardiac_function", {"segmentation_id": _put(ctx, labels)}, ctx)
    assert (out.ed_frame, out.es_frame) == (0, 3)
    assert (out.rv_ed_frame, out.rv_es_frame) == (0, 4)
    assert out.lv_edv_ml.value == 120.0 and out.lv_esv_ml.value == 56.0  # 3000 and 1400 voxels
    assert out.lv_mass_g.value == 105.0
    assert out.rv_edv_ml.value == 128.0  # 3200 voxels
    assert out.rv_esv_ml.value == 64.0  # 1600 voxels at frame 4, not 1900 (76 ml) at the LV's frame 3
    assert out.rv_ef_pct.value == 50.0  # (3200 - 1600) / 3200, not 40.6 at the LV frames
    note = next(q for q in out.qc if q.check == "rv-frames")
    assert note.passed and "frame 4" in note.detail  # informational: it does not change the verdict
    assert out.qc_verdict == "pass"


def test_rv_frames_equal_to_the_lv_ones_add_no_note(ctx):
    rv = [3200, 3000, 2400, 1600, 1900, 2900]
    out = call_tool("cardiac_function", {"segmentation_id": _put(ctx, _series(LV, rv))}, ctx)
    assert (out.rv_ed_frame, out.rv_es_frame) == (out.ed_frame, out.es_frame) == (0, 3)
    assert out.rv_esv_ml.value == 64.0 and out.rv_ef_pct.value == 50.0
    assert "rv-frames" not in {q.check for q in out.qc}


def test_augmented_frames_include_each_ventricle_extremes():
    assert _ed_es_frames(_series(LV, RV_LAGGING)) == [0, 3, 4]


def test_intervals_use_the_t_quantile_at_each_ventricle_frames(ctx):
    labels = _series(LV, RV_LAGGING)
    # four augmentations, each differing from the prediction at the LV ES frame (3) and the RV ES frame (4) only
    d_lv = [-50, 25, 75, -100]  # LV cavity voxels at frame 3
    d_rv = [-1500, 1500, -1400, 1400]  # RV cavity voxels at frame 4: a spread wide enough to reach the physical limits
    members = []
    for a, b in zip(d_lv, d_rv):
        lv, rv = list(LV), list(RV_LAGGING)
        lv[3] += a
        rv[4] += b
        members.append(_series(lv, rv))
    out = call_tool("cardiac_function", {"segmentation_id": _put(ctx, labels, tta=np.stack(members))}, ctx)
    t4 = stats.t.ppf(0.975, 4)  # 5 values: the prediction and 4 members
    lv_esv = np.array([1400 + x for x in [0, *d_lv]]) * VOXEL_ML
    half = t4 * lv_esv.std(ddof=1)
    iv = out.lv_esv_ml.interval
    assert iv.lower == round(56.0 - half, 1) and iv.upper == round(56.0 + half, 1)
    assert iv.level == 0.95 and "t(0.975, 4 df)" in iv.method and "clipped" not in iv.method
    # RV members taken at the RV ES frame: 64, 4, 124, 8, 120 ml; the lower bound would be negative
    rv_esv = np.array([1600 + x for x in [0, *d_rv]]) * VOXEL_ML
    iv = out.rv_esv_ml.interval
    assert 64.0 - t4 * rv_esv.std(ddof=1) < 0
    assert iv.lower == 0.0 and iv.upper == round(64.0 + t4 * rv_esv.std(ddof=1), 1) and "clipped" in iv.method
    rv_ef = 100.0 * (128.0 - rv_esv) / 128.0
    assert 50.0 + t4 * rv_ef.std(ddof=1) > 100.0
    assert (out.rv_ef_pct.interval.lower, out.rv_ef_pct.interval.upper) == (0.0, 100.0)
    assert out.rv_edv_ml.interval.lower == out.rv_edv_ml.interval.upper == 128.0  # no spread at the RV ED frame


def test_tta_interval_half_width_and_clipping():
    members = [10.0, 14.0, 9.0, 13.0]
    iv = tta_interval(12.0, members, lower_bound=0.0)
    half = stats.t.ppf(0.975, 4) * np.std([12.0, *members], ddof=1)
    assert (iv.lower, iv.upper) == (round(12.0 - half, 1), round(12.0 + half, 1))
    assert half / np.std([12.0, *members], ddof=1) == pytest.approx(2.776, abs=1e-3)
    ef = tta_interval(97.0, [99.0, 92.0, 100.0, 95.0], lower_bound=0.0, upper_bound=100.0)
    assert ef.upper == 100.0 and ef.lower < 97.0 and "≤ 100" in ef.method
    assert tta_interval(5.0, [6.0]) is None and tta_interval(float("nan"), [1.0, 2.0]) is None


@pytest.mark.parametrize("declared, frame_numbers, passed", [
    ({"ed_frame_number": 1, "es_frame_number": 4}, None, True),     # frames 0 and 3 of the cine: agree
    ({"ed_frame_number": 1, "es_frame_number": 5}, None, True),     # ES one frame later: within tolerance
    ({"ed_frame_number": 1, "es_frame_number": 6}, None, False),    # two frames from the LV minimum: warns
    ({"ed_frame_number": 3, "es_frame_number": 4}, None, False),    # ED declared at frame 2: warns
    ({"ed_frame_number": 1, "es_frame_number": 11}, [1, 3, 5, 7, 9, 11], False),  # per-frame files: 11 is position 5
    ({"ed_frame_number": 1, "es_frame_number": 7}, [1, 3, 5, 7, 9, 11], True),   # 7 is position 3, the LV minimum
])
def test_frames_declared_by_the_study_are_checked_not_used(ctx, declared, frame_numbers, passed):
    stack_meta = {"format": "nifti", "acdc_info": declared, **({"frame_numbers": frame_numbers} if frame_numbers else {})}
    study_id = ctx.store.put("study", {"images": np.zeros((1, 1, 1, 1), dtype=np.float32)}, {"meta": stack_meta})
    seg = ctx.store.put("seg", {"labels": _series(LV, RV_LAGGING)},
                        {"study_id": study_id, "spacing_mm": list(SPACING), "model": TRUTH_MODEL})
    out = call_tool("cardiac_function", {"segmentation_id": seg}, ctx)
    assert (out.ed_frame, out.es_frame) == (0, 3)  # the volume extremes, whatever is declared
    check = next(q for q in out.qc if q.check == "declared-frames")
    assert check.passed is passed, check.detail
    assert out.qc_verdict == ("pass" if passed else "warn")
    assert "Info.cfg" in check.detail and ("apart" in check.detail) is (not passed)


def test_no_declared_frames_no_check(ctx):
    out = call_tool("cardiac_function", {"segmentation_id": _put(ctx, _series(LV, RV_LAGGING))}, ctx)
    assert all(q.check != "declared-frames" for q in out.qc)
