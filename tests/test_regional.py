"""regional_function and the AHA segment model, checked on phantoms with known geometry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import cardiomics.tools.imaging._regional as regional  # registers the tool
from cardiomics.errors import CardiomicsError, InputError, NotFoundError
from cardiomics.synthetic.phantom import PhantomSpec, make_phantom
from cardiomics.tools import ArtifactStore, ToolContext, call_tool

SEPTAL = {2, 3, 8, 9, 14}
LATERAL = {5, 6, 11, 12, 16}
TRUTH_MODEL = {"id": "phantom-truth", "version": "0", "weights_sha256": "0" * 64}


def _spec(**kw) -> PhantomSpec:
    return PhantomSpec(**{"n_frames": 12, "n_slices": 10, "rows": 128, "cols": 128, "seed": 1, **kw})


def _put_seg(ctx: ToolContext, labels: np.ndarray, spacing, **arrays) -> str:
    return ctx.store.put("seg", {"labels": labels.astype(np.uint8), **arrays},
                         {"study_id": "study-" + "0" * 24, "spacing_mm": list(spacing), "model": TRUTH_MODEL})


@pytest.fixture
def ctx(tmp_path):
    return ToolContext(store=ArtifactStore(tmp_path / "store"))


def _in_plane_truth(spec: PhantomSpec, slices: list[int]) -> float:
    """Mean in-plane ED wall thickness of the phantom on the given slices (along both ellipse axes)."""
    from cardiomics.synthetic.phantom import _lv_geometry

    _, _, b_cav, b_epi, _, _ = _lv_geometry(spec)
    wall = b_epi[0, slices] - b_cav[0, slices]
    return float(np.mean(wall * (1.0 + spec.ellipticity) / 2.0))


@pytest.mark.parametrize("thickness, flag", [(4.0, "low"), (9.0, "normal"), (16.0, "high")])
def test_wall_thickness_matches_phantom(ctx, thickness, flag):
    spec = _spec(myo_thickness_mm=thickness, rotation_deg=140.0)
    ph = make_phantom(spec)
    out = call_tool("regional_function", {"segmentation_id": _put_seg(ctx, ph.labels, ph.spacing_mm)}, ctx)
    assert (out.ed_frame, out.es_frame) == (ph.truth["ed_frame"], ph.truth["es_frame"])
    assert out.slice_order == "base-first"
    by = {s.segment: s for s in out.segments}
    assert all(by[k].ed_wall_thickness_mm is not None for k in range(1, 17))
    # the phantom's in-plane wall equals its nominal thickness where the slice cuts the wall square (base, mid
    # ventricle) and grows towards the apex, where the slice cuts the tapering wall obliquely
    for level, ring in (("basal", range(1, 7)), ("mid", range(7, 13)), ("apical", range(13, 17))):
        measured = [g.slice for g in out.slices if g.level == level and (ph.labels[out.ed_frame, g.slice] == 3).sum() >= 3]
        expected = _in_plane_truth(spec, measured)
        if level == "basal":
            assert expected == pytest.approx(thickness, abs=0.6)
        for k in ring:
            assert by[k].ed_wall_thickness_mm.value == pytest.approx(expected, abs=1.0), (k, by[k].ed_wall_thickness_mm, expected)
    for k in range(1, 7):
        assert by[k].ed_wall_thickness_mm.value == pytest.approx(thickness, abs=1.0)
        assert by[k].ed_wall_thickness_mm.flag == flag
    # a normally contracting heart thickens everywhere
    for s in out.segments:
        assert s.systolic_thickening_pct.value > 10.0, s
        assert s.es_wall_thickness_mm.value > s.ed_wall_thickness_mm.value
    ref = by[1].ed_wall_thickness_mm.reference
    assert ref.lower == 5.5 and ref.upper == 15.0 and "Shah" in ref.source
    assert {f.id for f in out.figures} == {"bullseye-ed-thickness", "bullseye-thickening"}
    assert all(f.png_base64.startswith("iVBOR") and f.result_id == out.aha_map_id for f in out.figures)


def _rv_contact(labels_ed: np.ndarray) -> np.ndarray:
    """Myocardium voxels with an RV cavity voxel among their in-plane 8 neighbours."""
    rv = ndimage.binary_dilation(labels_ed == 1, structure=np.ones((1, 3, 3), dtype=bool))
    return (labels_ed == 2) & rv


@pytest.mark.parametrize("rotation", [160.0, 100.0, 230.0, 20.0])
def test_septum_found_from_the_rv_whatever_the_rotation(ctx, rotation):
    ph = make_phantom(_spec(rotation_deg=rotation, seed=2))
    ed = ph.truth["ed_frame"]
    segs = regional.aha_segments(ph.labels[ed], ph.spacing_mm)
    myo = ph.labels[ed] == 2
    assert set(np.unique(segs[myo])) == set(range(1, 17)) and not segs[~myo].any()
    # same segments as the phantom's own AHA map (built from its known septal direction)
    assert (segs[myo] == ph.aha_segments[myo]).mean() > 0.97
    contact = _rv_contact(ph.labels[ed])
    touched = set(np.unique(segs[contact]).tolist())
    assert SEPTAL <= touched, touched
    assert not touched & LATERAL, touched
    # in every ring, the segments with the largest share of RV-contact myocardium are the septal ones
    share = {k: contact[segs == k].mean() for k in range(1, 17)}
    for ring, septal in ((range(1, 7), {2, 3}), (range(7, 13), {8, 9}), (range(13, 17), {14})):
        top = sorted(ring, key=share.get, reverse=True)[: len(septal)]
        assert set(top) == septal, (rotation, share)
    # the tool reports the septum in the direction of the RV
    out = call_tool("regional_function", {"segmentation_id": _put_seg(ctx, ph.labels, ph.spacing_mm)}, ctx)
    for g in out.slices:
        assert abs((g.septal_deg - rotation + 180.0) % 360.0 - 180.0) < 5.0, g
    assert out.orientation_source == "assumed" and "anterior" in out.orientation_note


def test_mirrored_display(ctx):
    ph = make_phantom(_spec(rotation_deg=150.0, seed=3))
    ed = ph.truth["ed_frame"]
    flipped = ph.labels[..., ::-1].copy()
    seg_id = _put_seg(ctx, flipped, ph.spacing_mm)
    mirrored = call_tool("regional_function", {"segmentation_id": seg_id, "orientation": "mirrored"}, ctx)
    seg_map = ctx.store.arrays(mirrored.aha_map_id)["segments"][..., ::-1]
    myo = ph.labels[ed] == 2
    assert (seg_map[myo] == ph.aha_segments[myo]).mean() > 0.97
    # read as a standard view, the mirror swaps anterior and inferior: 2 <-> 3, 1 <-> 4
    standard = ctx.store.arrays(call_tool("regional_function", {"segmentation_id": seg_id, "orientation": "standard"}, ctx)
                                .aha_map_id)["segments"][..., ::-1]
    assert (standard[ph.aha_segments == 2] == 3).mean() > 0.9
    assert (standard[ph.aha_segments == 1] == 4).mean() > 0.9


def _sax_affine(mirror: bool) -> list[list[float]]:
    """An oblique short-axis plane in LPS with the patient's anterior up-left and patient left to the right."""
    x = np.array([0.7071068, 0.6123724, -0.3535534])  # column direction (screen right)
    y = np.array([-0.2236068, 0.6708204, 0.7071068])  # row direction (screen down)
    if mirror:
        x = -x
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = 1.5 * x, 1.5 * y, 8.0 * np.cross(x, y)
    return aff.tolist()


def test_handedness_from_image_geometry(ctx):
    ph = make_phantom(_spec(rotation_deg=150.0, seed=3))
    ed = ph.truth["ed_frame"]
    frame = regional.aha_frame(ph.labels[ed], ph.spacing_mm)
    mirrored_frame = regional.aha_frame(ph.labels[ed, ..., ::-1], ph.spacing_mm)
    h = regional.handedness_from_geometry
    assert h({"source": "dicom", "affine": _sax_affine(False)}, frame) == 1
    assert h({"source": "dicom", "affine": _sax_affine(True)}, mirrored_frame) == -1
    assert h({"source": "dicom", "affine": np.diag([1.5, 1.5, 8.0, 1.0]).tolist()}, frame) == 1  # anterior straight up
    placeholder = {"source": "nifti", "affine": np.diag([-1.5, -1.5, 8.0, 1.0]).tolist(), "meta": {"affine_space": "RAS", "nifti_sform_code": 0}}
    assert h(placeholder, frame) is None and h(None, frame) is None
    # end to end: a mirrored image with its geometry is read with the mirrored handedness
    study_id = ctx.store.put("study", {"images": np.zeros((1, 1, 1, 1), np.float32)},
                             {"source": "dicom", "affine": _sax_affine(True), "spacing_mm": list(ph.spacing_mm)})
    seg_id = ctx.store.put("seg", {"labels": ph.labels[..., ::-1].copy()},
                           {"study_id": study_id, "spacing_mm": list(ph.spacing_mm), "model": TRUTH_MODEL})
    out = call_tool("regional_function", {"segmentation_id": seg_id}, ctx)
    assert out.orientation_source == "study-geometry"
    seg_map = ctx.store.arrays(out.aha_map_id)["segments"][..., ::-1]
    myo = ph.labels[ed] == 2
    assert (seg_map[myo] == ph.aha_segments[myo]).mean() > 0.97


def test_apex_first_stack_is_reordered(ctx):
    ph = make_phantom(_spec(rotation_deg=160.0, seed=4))
    ed = ph.truth["ed_frame"]
    segs = regional.aha_segments(ph.labels[ed, ::-1], ph.spacing_mm)[::-1]
    myo = ph.labels[ed] == 2
    assert (segs[myo] == ph.aha_segments[myo]).mean() > 0.97


def test_intervals_from_test_time_augmentation(ctx):
    ph = make_phantom(_spec(seed=5))
    shifted = np.stack([np.roll(ph.labels, 1, axis=-1), np.roll(ph.labels, -1, axis=-2)])
    out = call_tool("regional_function", {"segmentation_id": _put_seg(ctx, ph.labels, ph.spacing_mm, tta=shifted)}, ctx)
    est = out.segments[0].ed_wall_thickness_mm
    assert est.interval is not None and est.interval.lower <= est.value <= est.interval.upper


def test_bad_inputs_are_typed_errors(ctx):
    ph = make_phantom(_spec(seed=6))
    with pytest.raises(InputError) as exc:  # an id of the wrong kind
        call_tool("regional_function", {"segmentation_id": "study-" + "a" * 24}, ctx)
    assert exc.value.code == "invalid-arguments"
    with pytest.raises(NotFoundError):
        call_tool("regional_function", {"segmentation_id": "seg-" + "b" * 24}, ctx)
    no_myo = np.where(ph.labels == 2, 0, ph.labels)
    for labels, code in ((no_myo, "no-myocardium"), (ph.labels[:1], "single-frame"),
                         (np.where(ph.labels == 1, 0, ph.labels), "no-rv-contact"),
                         (np.where(np.arange(10)[None, :, None, None] < 8, 0, ph.labels), "too-few-slices")):
        with pytest.raises(InputError) as exc:
            call_tool("regional_function", {"segmentation_id": _put_seg(ctx, labels, ph.spacing_mm)}, ctx)
        assert exc.value.code == code and exc.value.hint
    with pytest.raises(CardiomicsError):
        call_tool("regional_function", {"segmentation_id": _put_seg(ctx, ph.labels, ph.spacing_mm), "orientation": "sideways"}, ctx)


def test_example_on_the_dicom_sample(tmp_path):
    """The registered example: the DICOM sample through load_study, segmented with the phantom's own labels."""
    ctx = ToolContext(store=ArtifactStore(tmp_path / "store"))
    spec = regional_tool_spec()
    out = call_tool("regional_function", spec.example(ctx), ctx)
    assert out.orientation_source == "study-geometry" and out.qc_verdict == "pass"
    by = {s.segment: s for s in out.segments}
    assert all(by[k].ed_wall_thickness_mm.value == pytest.approx(9.0, abs=1.0) for k in range(1, 7))
    assert all(s.systolic_thickening_pct.value > 10 for s in out.segments)


def regional_tool_spec():
    from cardiomics.tools import registry

    return registry()["regional_function"]
