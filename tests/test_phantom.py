"""The synthetic cine phantom: its truth is exact for its labels, and its anatomy follows the spec."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from cardiomics.synthetic.phantom import LV_CAVITY, LV_MYOCARDIUM, MYOCARDIAL_DENSITY_G_PER_ML, RV_CAVITY, PhantomSpec, make_lge, make_phantom

SMALL = dict(n_frames=8, n_slices=6, rows=96, cols=96, pixel_mm=2.0, slice_mm=10.0, lv_edv_ml=130.0, rv_edv_ml=140.0)


@pytest.fixture(scope="module")
def default():
    return make_phantom(PhantomSpec())


def test_shapes_types_and_contrast(default):
    spec = default.spec
    assert default.images.shape == (25, 10, 192, 192) and default.images.dtype == np.float32
    assert default.labels.shape == default.images.shape and default.labels.dtype == np.uint8
    assert set(np.unique(default.labels)) == {0, RV_CAVITY, LV_MYOCARDIUM, LV_CAVITY}
    assert default.spacing_mm == (spec.slice_mm, spec.pixel_mm, spec.pixel_mm)
    assert default.images.min() >= 0 and 800 < default.images.max() < 2000  # scanner-like, Rician (non-negative)
    ed = default.images[0]
    blood = np.median(ed[default.labels[0] == LV_CAVITY])
    myo = np.median(ed[default.labels[0] == LV_MYOCARDIUM])
    assert blood > 2.5 * myo  # bright blood, dark-grey myocardium


def test_truth_is_label_counts_times_voxel_volume(default):
    t, lab = default.truth, default.labels
    v = default.voxel_ml
    assert v == pytest.approx(8.0 * 1.5 * 1.5 / 1000)
    ed, es = t["ed_frame"], t["es_frame"]
    assert t["lv_edv_ml"] == pytest.approx(np.count_nonzero(lab[ed] == LV_CAVITY) * v)
    assert t["lv_esv_ml"] == pytest.approx(np.count_nonzero(lab[es] == LV_CAVITY) * v)
    assert t["lv_sv_ml"] == pytest.approx(t["lv_edv_ml"] - t["lv_esv_ml"])
    assert t["lv_ef_pct"] == pytest.approx(100 * t["lv_sv_ml"] / t["lv_edv_ml"])
    assert t["lv_mass_g"] == pytest.approx(np.count_nonzero(lab[ed] == LV_MYOCARDIUM) * v * MYOCARDIAL_DENSITY_G_PER_ML)
    assert t["rv_edv_ml"] == pytest.approx(np.count_nonzero(lab[ed] == RV_CAVITY) * v)
    assert t["rv_esv_ml"] == pytest.approx(np.count_nonzero(lab[es] == RV_CAVITY) * v)
    curve = [np.count_nonzero(lab[i] == LV_CAVITY) * v for i in range(lab.shape[0])]
    assert t["lv_volume_curve_ml"] == pytest.approx(curve)


def test_volumes_and_ejection_fractions_follow_the_spec(default):
    t, spec = default.truth, default.spec
    assert t["lv_edv_ml"] == pytest.approx(spec.lv_edv_ml, rel=0.03)
    assert t["rv_edv_ml"] == pytest.approx(spec.rv_edv_ml, rel=0.03)
    assert abs(t["lv_ef_pct"] - 100 * spec.lv_ef) < 2.0
    assert abs(t["rv_ef_pct"] - 100 * spec.rv_ef) < 2.0
    assert 90 < t["lv_mass_g"] < 200  # a normal-sized LV with a 9 mm wall


def test_ed_at_frame_zero_and_es_at_the_spec_fraction(default):
    assert default.truth["ed_frame"] == 0
    assert default.truth["es_frame"] == default.spec.es_frame == round(0.35 * 25)
    curve = np.asarray(default.truth["lv_volume_curve_ml"])
    assert np.all(np.diff(curve[: default.spec.es_frame + 1]) < 0)  # systole: the cavity shrinks every frame


def test_myocardial_volume_is_conserved_and_the_wall_thickens(default):
    myo = np.asarray(default.truth["lv_myo_volume_curve_ml"])
    assert myo.max() / myo.min() < 1.03
    ed, es = default.truth["ed_frame"], default.truth["es_frame"]
    s = 3  # a mid slice: same myocardial area on a smaller cavity means a thicker wall

    def mean_radius(mask):
        return np.sqrt(np.count_nonzero(mask) / np.pi)

    wall_ed = mean_radius(default.labels[ed, s] >= LV_MYOCARDIUM) - mean_radius(default.labels[ed, s] == LV_CAVITY)
    wall_es = mean_radius(default.labels[es, s] >= LV_MYOCARDIUM) - mean_radius(default.labels[es, s] == LV_CAVITY)
    assert wall_es > 1.2 * wall_ed
    assert 4.5 < wall_ed * default.spec.pixel_mm < 11  # about the 9 mm asked for


def test_base_to_apex_and_rv_beside_the_septum(default):
    lv = [np.count_nonzero(default.labels[0, s] == LV_CAVITY) for s in range(default.spec.n_slices)]
    assert lv[0] > lv[-3] and lv[-1] == 0  # the stack ends past the apex
    lab = default.labels[0, 2]
    rv = np.argwhere(lab == RV_CAVITY).mean(axis=0)
    lvc = np.argwhere(lab == LV_CAVITY).mean(axis=0)
    d = rv - lvc  # (row, col): rotation_deg 160 puts the RV left of the LV and a little up
    assert d[1] < -10 and abs(d[0]) < abs(d[1])


def test_deterministic_for_a_seed():
    a, b = make_phantom(PhantomSpec(**SMALL, seed=3)), make_phantom(PhantomSpec(**SMALL, seed=3))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels) and a.truth == b.truth
    c = make_phantom(PhantomSpec(**SMALL, seed=4))
    assert not np.array_equal(a.images, c.images)  # other noise and bias field
    assert np.array_equal(a.labels, c.labels)  # same anatomy


def test_random_specs_are_varied_plausible_and_exact():
    specs = [PhantomSpec.random(s) for s in range(60)]
    assert all(90 <= s.lv_edv_ml <= 300 and 0.15 <= s.lv_ef <= 0.70 and 6 <= s.myo_thickness_mm <= 16 for s in specs)
    assert all(1.2 <= s.pixel_mm <= 2.0 for s in specs)
    assert np.ptp([s.lv_edv_ml for s in specs]) > 120 and np.ptp([s.rotation_deg for s in specs]) > 40
    assert any(s.scar_segments for s in specs) and PhantomSpec.random(5) == PhantomSpec.random(5)
    for seed in (1, 4):
        spec = specs[seed]
        ph = make_phantom(spec)
        t = ph.truth
        assert t["lv_edv_ml"] == pytest.approx(np.count_nonzero(ph.labels[t["ed_frame"]] == LV_CAVITY) * ph.voxel_ml)
        assert abs(t["lv_ef_pct"] - 100 * spec.lv_ef) < 3.0
        assert t["ed_frame"] == 0 and t["es_frame"] == spec.es_frame


def test_spec_validation():
    with pytest.raises(ValidationError):
        PhantomSpec(scar_segments=[0, 17])
    with pytest.raises(ValidationError):
        PhantomSpec(unknown_field=1)
    assert PhantomSpec(scar_segments=[8, 2, 2]).scar_segments == [2, 8]


def test_lge_scar_burden_truth_and_segments():
    spec = PhantomSpec(**SMALL, scar_segments=[2, 3, 8, 9, 14], scar_transmurality=0.5)
    lge = make_lge(spec)
    myo = lge.labels == LV_MYOCARDIUM
    assert lge.image.shape == (6, 96, 96) and lge.scar_mask.any()
    assert not (lge.scar_mask & ~myo).any()  # scar lies in the myocardium
    assert set(np.unique(lge.aha_segments[lge.scar_mask])) <= {2, 3, 8, 9, 14}
    assert lge.truth["scar_burden_pct"] == pytest.approx(100 * lge.scar_mask.sum() / myo.sum())
    assert lge.truth["scar_ml"] == pytest.approx(lge.scar_mask.sum() * np.prod(lge.spacing_mm) / 1000)
    assert 5 < lge.truth["scar_burden_pct"] < 30
    # IR contrast: nulled myocardium dark, scar brightest, blood in between
    scar_i = np.median(lge.image[lge.scar_mask])
    remote_i = np.median(lge.image[myo & ~lge.scar_mask])
    blood_i = np.median(lge.image[lge.labels == LV_CAVITY])
    assert scar_i > blood_i > 3 * remote_i
    # the listed segments are septal: they face the RV
    s = int(np.nonzero((lge.aha_segments == 8).any(axis=(1, 2)))[0][0])
    rv = np.argwhere(lge.labels[s] == RV_CAVITY).mean(axis=0)
    septal = np.argwhere(np.isin(lge.aha_segments[s], [8, 9])).mean(axis=0)
    lateral = np.argwhere(np.isin(lge.aha_segments[s], [11, 12])).mean(axis=0)
    assert np.linalg.norm(septal - rv) < np.linalg.norm(lateral - rv)
    # deeper scar, larger burden; no segments, no scar
    full = make_lge(spec.model_copy(update={"scar_transmurality": 1.0}))
    assert full.truth["scar_burden_pct"] > 1.5 * lge.truth["scar_burden_pct"]
    assert make_lge(PhantomSpec(**SMALL)).truth["scar_burden_pct"] == 0.0


def test_aha_segments_cover_the_ed_myocardium_of_the_cavity_slices(default):
    """Thirds of the slices with an LV cavity, as the 16-segment model: the myocardial cap beyond the cavity is in no segment."""
    ed = default.labels[default.truth["ed_frame"]]
    myo = ed == LV_MYOCARDIUM
    cavity = [s for s in range(ed.shape[0]) if np.count_nonzero(ed[s] == LV_CAVITY) >= 3]
    levelled = np.zeros_like(myo)
    levelled[cavity[0]:cavity[-1] + 1] = myo[cavity[0]:cavity[-1] + 1]
    cap = myo & ~levelled
    assert cap.any(), "the default phantom has an apical cap"
    assert np.array_equal(default.aha_segments > 0, levelled)
    assert set(np.unique(default.aha_segments[levelled])) == set(range(1, 17))
    # nine cavity slices: three basal, three mid, three apical
    assert [int(default.aha_segments[s].max()) for s in cavity] == [6, 6, 6, 12, 12, 12, 16, 16, 16][: len(cavity)]
