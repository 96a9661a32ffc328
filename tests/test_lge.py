"""lge_burden: planted scar on LGE phantoms is recovered overall and in the right AHA segments."""

from __future__ import annotations

import numpy as np
import pytest

import cardiomics.tools.imaging._lge as lge_mod  # registers the tool
from cardiomics.errors import InputError, NotFoundError
from cardiomics.synthetic.phantom import PhantomSpec, make_lge, make_phantom
from cardiomics.tools import ArtifactStore, ToolContext, call_tool

TRUTH_MODEL = {"id": "phantom-truth", "version": "0", "weights_sha256": "0" * 64}


def _spec(**kw) -> PhantomSpec:
    return PhantomSpec(**{"n_frames": 12, "n_slices": 10, "rows": 128, "cols": 128, "seed": 3, **kw})


@pytest.fixture
def ctx(tmp_path):
    return ToolContext(store=ArtifactStore(tmp_path / "store"))


def _put(ctx: ToolContext, image: np.ndarray, labels: np.ndarray, spacing) -> tuple[str, str]:
    study_id = lge_mod.put_lge_study(ctx.store, image, spacing)
    seg_id = ctx.store.put("seg", {"labels": labels.astype(np.uint8)},
                           {"study_id": study_id, "spacing_mm": list(spacing), "model": TRUTH_MODEL})
    return study_id, seg_id


CASES = [
    ([7], 1.0, 160.0),  # one segment, transmural
    ([2, 3], 0.5, 160.0),  # two septal segments, half the wall
    ([4, 5, 10, 11], 0.3, 60.0),  # inferolateral territory, subendocardial, heart rotated
]


@pytest.mark.parametrize("method", ["nsd", "fwhm"])
@pytest.mark.parametrize("segments, transmurality, rotation", CASES)
def test_planted_scar_is_recovered(ctx, segments, transmurality, rotation, method):
    ph = make_lge(_spec(scar_segments=segments, scar_transmurality=transmurality, rotation_deg=rotation))
    study_id, seg_id = _put(ctx, ph.image, ph.labels[None], ph.spacing_mm)
    out = call_tool("lge_burden", {"study_id": study_id, "segmentation_id": seg_id, "method": method}, ctx)
    truth = ph.truth
    assert truth["scar_burden_pct"] > 3.0
    assert out.scar_burden_pct.value == pytest.approx(truth["scar_burden_pct"], abs=5.0)
    assert out.lv_myocardium_ml == pytest.approx(truth["lv_myo_ml"], abs=0.01)
    assert out.scar_volume_ml.value == pytest.approx(truth["scar_ml"], abs=0.05 * truth["lv_myo_ml"])
    assert out.scar_mass_g.value == pytest.approx(1.05 * out.scar_volume_ml.value, abs=0.02)
    carrying = {s.segment for s in out.segments if s.scar_pct >= 10.0}
    assert carrying == set(segments), (carrying, segments)
    for s in out.segments:
        assert s.scar_pct == pytest.approx(truth["segment_scar_pct"][str(s.segment)], abs=10.0), s
    assert out.remote_segment not in segments
    stored = ctx.store.arrays(out.scar_mask_id)
    assert int(stored["scar"].sum()) * np.prod(ph.spacing_mm) / 1000 == pytest.approx(out.scar_volume_ml.value, abs=0.01)
    assert (stored["scar"].astype(bool) & ph.scar_mask).sum() >= 0.85 * ph.scar_mask.sum()  # the same voxels, not just the count
    fig = out.figures[0]
    assert fig.id == "bullseye-lge" and fig.result_id == out.scar_mask_id and fig.png_base64.startswith("iVBOR")


def test_no_scar_gives_no_burden(ctx):
    ph = make_lge(_spec(rotation_deg=120.0))
    study_id, seg_id = _put(ctx, ph.image, ph.labels[None], ph.spacing_mm)
    nsd = call_tool("lge_burden", {"study_id": study_id, "segmentation_id": seg_id}, ctx)
    fwhm = call_tool("lge_burden", {"study_id": study_id, "segmentation_id": seg_id, "method": "fwhm"}, ctx)
    assert nsd.scar_burden_pct.value < 1.0
    assert fwhm.scar_burden_pct.value == 0.0
    assert any(q.check == "fwhm-seed" and not q.passed for q in fwhm.qc)


def test_cine_segmentation_on_the_same_grid_uses_end_diastole(ctx):
    spec = _spec(scar_segments=[9, 10], scar_transmurality=0.7, rotation_deg=200.0)
    ph, cine = make_lge(spec), make_phantom(spec)
    study_id = lge_mod.put_lge_study(ctx.store, ph.image, ph.spacing_mm)
    seg_id = ctx.store.put("seg", {"labels": cine.labels}, {"study_id": "study-" + "0" * 24, "spacing_mm": list(cine.spacing_mm),
                                                            "model": TRUTH_MODEL})
    out = call_tool("lge_burden", {"study_id": study_id, "segmentation_id": seg_id}, ctx)
    assert out.segmentation_frame == cine.truth["ed_frame"]
    assert out.scar_burden_pct.value == pytest.approx(ph.truth["scar_burden_pct"], abs=5.0)
    assert {s.segment for s in out.segments if s.scar_pct >= 10.0} == {9, 10}


def test_bad_inputs_are_typed_errors(ctx):
    ph = make_lge(_spec(scar_segments=[7], scar_transmurality=1.0))
    study_id, seg_id = _put(ctx, ph.image, ph.labels[None], ph.spacing_mm)
    # ids of the wrong kind
    for args in ({"study_id": seg_id, "segmentation_id": seg_id}, {"study_id": study_id, "segmentation_id": study_id},
                 {"study_id": study_id, "segmentation_id": seg_id, "method": "otsu"},
                 {"study_id": study_id, "segmentation_id": seg_id, "n_sd": 0}):
        with pytest.raises(InputError) as exc:
            call_tool("lge_burden", args, ctx)
        assert exc.value.code == "invalid-arguments"
    with pytest.raises(NotFoundError):
        call_tool("lge_burden", {"study_id": "study-" + "c" * 24, "segmentation_id": seg_id}, ctx)
    # a cine (many frames) passed as the LGE image
    cine = make_phantom(_spec())
    cine_id = ctx.store.put("study", {"images": cine.images, "trigger_times_ms": np.zeros(cine.images.shape[0])},
                            {**ctx.store.meta(study_id), "spacing_mm": list(cine.spacing_mm)})
    with pytest.raises(InputError) as exc:
        call_tool("lge_burden", {"study_id": cine_id, "segmentation_id": seg_id}, ctx)
    assert exc.value.code == "not-single-frame"
    # mismatched grids: another matrix, another pixel size
    small = make_lge(_spec(rows=112, cols=112))
    _, small_seg = _put(ctx, small.image, small.labels[None], small.spacing_mm)
    coarse_seg = ctx.store.put("seg", {"labels": ph.labels[None]}, {"study_id": study_id, "spacing_mm": [8.0, 1.8, 1.8], "model": TRUTH_MODEL})
    for bad in (small_seg, coarse_seg):
        with pytest.raises(InputError) as exc:
            call_tool("lge_burden", {"study_id": study_id, "segmentation_id": bad}, ctx)
        assert exc.value.code == "grid-mismatch" and study_id in exc.value.message and exc.value.hint
    # no myocardium
    _, empty_seg = _put(ctx, ph.image, np.where(ph.labels == 2, 0, ph.labels)[None], ph.spacing_mm)
    with pytest.raises(InputError) as exc:
        call_tool("lge_burden", {"study_id": study_id, "segmentation_id": empty_seg}, ctx)
    assert exc.value.code == "no-myocardium"


def test_example_on_the_dicom_sample(tmp_path):
    """The registered example: scar planted in the phantom's segments 7 and 8 of the sample anatomy, geometry from the DICOM sample."""
    from cardiomics.tools import registry

    ctx = ToolContext(store=ArtifactStore(tmp_path / "store"))
    out = call_tool("lge_burden", registry()["lge_burden"].example(ctx), ctx)
    # levels are thirds of the six cavity slices (2-3 mid) for the phantom and the tool alike; the cap is in no segment
    labels = ctx.store.arrays(out.segmentation_id)["labels"][0]
    segs = ctx.store.arrays(out.scar_mask_id)["segments"]
    assert np.flatnonzero((labels == 3).sum(axis=(1, 2)) >= 3).tolist() == [0, 1, 2, 3, 4, 5]
    assert (labels[6] == 2).any() and not segs[6].any()  # the apical cap: in no segment
    assert [int(segs[s].max()) for s in range(6)] == [6, 6, 12, 12, 16, 16]  # thirds of the cavity slices
    assert {s.segment for s in out.segments if s.scar_pct >= 10.0} == {7, 8}
    # oblique DICOM geometry shows where anterior is: the segments are located, not assumed
    assert out.orientation_source == "study-geometry"
    assert next(q for q in out.qc if q.check == "segments-located").passed and out.qc_verdict == "pass"
    assert 5.0 < out.scar_burden_pct.value < 16.0  # truth about 10 %


def test_assumed_orientation_warns_that_segments_may_be_mirrored(ctx):
    """An axis-aligned, uncoded NIfTI affine does not show which way is anterior: the segments rest on an assumption."""
    ph = make_lge(_spec(scar_segments=[7], scar_transmurality=1.0))
    study_id, seg_id = _put(ctx, ph.image, ph.labels[None], ph.spacing_mm)
    assumed = call_tool("lge_burden", {"study_id": study_id, "segmentation_id": seg_id}, ctx)
    checks = {q.check: q for q in assumed.qc}
    assert assumed.orientation_source == "assumed"
    assert not checks["segments-located"].passed and "swapped" in checks["segments-located"].detail
    assert all(q.passed for name, q in checks.items() if name != "segments-located")  # the orientation alone warns
    assert assumed.qc_verdict == "warn"
    given = call_tool("lge_burden", {"study_id": study_id, "segmentation_id": seg_id, "orientation": "standard"}, ctx)
    assert given.orientation_source == "given"
    assert all(q.passed for q in given.qc) and given.qc_verdict == "pass"
    assert {s.segment for s in given.segments if s.scar_pct >= 10.0} == {7}
