"""regional_function: AHA 16-segment wall thickness and systolic thickening from a cine segmentation.

Segment model (Cerqueira et al., Circulation 2002): the short-axis slices with an LV cavity at
end-diastole (and any cavity-less slice between them) are split into basal / mid / apical thirds
(6 / 6 / 4 segments). Myocardium beyond the end of the cavity (the apical cap: segment 17 of the
17-segment model, outside the 16-segment one) belongs to no level and no segment. The angular origin
comes from the anatomy: on every slice the myocardium touching the RV cavity forms an arc whose
ends are the anterior and inferior RV insertion points; their bisector is the mid-septum (the
boundary of segments 2|3 and 8|9, the centre of 14). Slices without RV contact (usually apical)
take the septal direction of the nearest slice that has one.

Orientation. Which insertion point is anterior depends only on the handedness of the display:
in the standard short-axis view (as seen from the apex; RV on the left, anterior up) anterior lies
clockwise on screen from the septum and inferior counter-clockwise. A mirrored display reverses
this. With ``orientation="auto"`` the patient's anterior direction is projected into the image
plane from trusted geometry (DICOM orientation; an oblique, coded NIfTI affine) and the insertion
point nearer to it is taken as anterior. Without such geometry the standard view is assumed and
the output says so.

Thickness is measured perpendicular to the wall, as in clinical and research practice. 360 rays
from the cavity centroid per slice only place the measurements (a ray's angle gives its segment);
at each ray's endocardial crossing the thickness is the distance to the nearest point of the
epicardial border. The radial chord itself equals the wall thickness only where the LV is a circle
about its centroid: wherever the wall is oblique to the ray (an elliptical or D-shaped LV, an
off-centre centroid, near the RV insertions) it over-reads, enough to cross the 15 mm hypertrophy
criterion on a 12 mm wall. The nearest-border distance was chosen over the centreline method
(Sheehan et al., Circulation 1986), which agrees with it on a regular wall, because it needs no
ordered contours or correspondence between the two borders (open basal rings, trabeculated masks),
and it keeps a focal bulge's full height: from the top of an endocardial bulge the epicardium
behind it is still the nearest border. Both borders are taken as sub-pixel curves half-way between
unlike pixel centres, so a rendered wall reads its nominal thickness along any direction and with
any pixel aspect; each segment keeps its mean and the maximum of the ray profile after an 11-ray
running median.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import structlog
from pydantic import BaseModel, Field
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage import measure

from cardiomics.errors import InputError

from .._registry import ToolContext, tool
from ..contract import Estimate, Interval, ModelRef, QcCheck, ReferenceRange, ToolOutput
from ._bullseye import BullseyeFigure, bullseye_figure
from ._interval import tta_interval
from ._labels import LV, MYO, RV

log = structlog.get_logger(__name__)

SEGMENT_NAMES = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral", 7: "mid anterior", 8: "mid anteroseptal",
    9: "mid inferoseptal", 10: "mid inferior", 11: "mid inferolateral", 12: "mid anterolateral",
    13: "apical anterior", 14: "apical septal", 15: "apical inferior", 16: "apical lateral",
}
SEPTAL_SEGMENTS = (2, 3, 8, 9, 14)
Level = Literal["basal", "mid", "apical"]
Orientation = Literal["auto", "standard", "mirrored"]
STANDARD_VIEW = ("standard short-axis view assumed (as seen from the apex: RV on the screen left, anterior up): "
                 "the anterior RV insertion lies clockwise on screen from the septum")
_DATA = Path(__file__).with_name("data") / "regional_reference.json"
_MIN_CAVITY_VOXELS = 3  # fewer LV cavity voxels on a slice: no cavity (apical cap, stray labels)


@lru_cache(maxsize=1)
def _reference_table() -> dict:
    return json.loads(_DATA.read_text())


def thickness_reference() -> ReferenceRange:
    """ED wall-thickness cut-offs: published as thinning <= lower and hypertrophy >= upper, so inclusive."""
    entry = _reference_table()["ed_wall_thickness_mm"]
    return ReferenceRange(lower=entry["lower"], upper=entry["upper"], population=entry["population"], source=entry["source"],
                          inclusive=bool(entry.get("inclusive", False)))


# --------------------------------------------------------------------------------------------
# geometry: where each segment lies


def _screen_angles(shape: tuple[int, int], centre: tuple[float, float], row_mm: float, col_mm: float) -> np.ndarray:
    """On-screen angle (deg, counter-clockwise from +column, rows running down) of every pixel about ``centre``."""
    rr, cc = np.indices(shape, dtype=np.float64)
    return np.degrees(np.arctan2(-(rr - centre[0]) * row_mm, (cc - centre[1]) * col_mm)) % 360.0


def _centre(mask_cavity: np.ndarray, mask_myo: np.ndarray) -> tuple[float, float]:
    """LV blood-pool centroid; the centroid of the myocardium where there is no cavity (apical cap)."""
    use = mask_cavity if mask_cavity.sum() >= _MIN_CAVITY_VOXELS else (mask_myo | mask_cavity)
    r, c = ndimage.center_of_mass(use)
    return float(r), float(c)


def _insertion_arc(angles: np.ndarray) -> tuple[float, float] | None:
    """(start, width) in deg of the smallest counter-clockwise arc holding all angles (the RV contact arc)."""
    if angles.size < 3:
        return None
    a = np.sort(angles % 360.0)
    gaps = np.diff(np.concatenate([a, [a[0] + 360.0]]))
    j = int(np.argmax(gaps))
    width = 360.0 - float(gaps[j])
    if width < 5.0:
        return None
    return float(a[(j + 1) % a.size]), width


def _six(beta: np.ndarray) -> np.ndarray:
    """Basal/mid segment index 1-6 from beta (deg counter-clockwise from septum towards inferior, standard)."""
    return (np.floor(((beta + 120.0) % 360.0) / 60.0).astype(np.int64) % 6) + 1


def _four(beta: np.ndarray) -> np.ndarray:
    return (np.floor(((beta + 135.0) % 360.0) / 90.0).astype(np.int64) % 4) + 13


@dataclass
class AhaFrame:
    """Per-slice LV centre, level and septal direction of an ED label map: where each segment lies."""

    row_mm: float
    col_mm: float
    handedness: int  # +1 standard view (anterior clockwise from the septum on screen), -1 mirrored
    base_first: bool
    level: dict[int, Level] = field(default_factory=dict)
    centre: dict[int, tuple[float, float]] = field(default_factory=dict)
    septal_deg: dict[int, float] = field(default_factory=dict)
    insertion_deg: dict[int, tuple[float, float]] = field(default_factory=dict)  # (anterior, inferior), slices with RV contact

    def beta(self, s: int, angles: np.ndarray) -> np.ndarray:
        """Angle from the septal direction, positive towards inferior (whatever the display handedness)."""
        return (self.handedness * (angles - self.septal_deg[s])) % 360.0

    def segments_at(self, s: int, angles: np.ndarray) -> np.ndarray:
        beta = self.beta(s, angles)
        if self.level[s] == "apical":
            return _four(beta)
        return _six(beta) + (6 if self.level[s] == "mid" else 0)

    def segment_map(self, myo: np.ndarray) -> np.ndarray:
        """AHA segment of every voxel of ``myo`` (S, R, C) on the slices of this frame; 0 elsewhere."""
        out = np.zeros(myo.shape, dtype=np.uint8)
        for s in self.level:
            ang = _screen_angles(myo.shape[1:], self.centre[s], self.row_mm, self.col_mm)
            out[s] = np.where(myo[s], self.segments_at(s, ang), 0)
        return out

    @property
    def slices(self) -> list[int]:
        return sorted(self.level)


def _base_first(labels_ed: np.ndarray, slices: list[int]) -> bool:
    """The apex is the end where the LV (cavity + wall) is smallest; ties keep slice 0 as the base."""
    area = np.array([np.count_nonzero((labels_ed[s] == MYO) | (labels_ed[s] == LV)) for s in slices], dtype=float)
    half = max(1, len(slices) // 2)
    return not area[-half:].mean() > area[:half].mean()


def aha_frame(labels_ed: np.ndarray, spacing_mm, *, handedness: int = 1) -> AhaFrame:
    """Locate the 16 AHA segments on an ED label map (S, R, C) with ACDC values.

    The levels are thirds of the slices from the first to the last one with an LV cavity; myocardial
    slices beyond them (the apical cap) get no level. Raises InputError when there is no myocardium,
    fewer than three slices hold it or span the cavity, or the RV never touches the myocardium (the
    septum cannot then be found from the anatomy).
    """
    labels_ed = np.asarray(labels_ed)
    if labels_ed.ndim != 3:
        raise InputError("bad-label-shape", f"expected an ED label map (slice, row, column), got shape {labels_ed.shape}",
                         hint="pass one frame of the segmentation")
    row_mm, col_mm = float(spacing_mm[-2]), float(spacing_mm[-1])
    myo = labels_ed == MYO
    slices = [s for s in range(labels_ed.shape[0]) if myo[s].any()]
    if not slices:
        raise InputError("no-myocardium", "the segmentation holds no LV myocardium (label 2) at end-diastole",
                         hint="check the segmentation QC; regional analysis needs the LV wall")
    if len(slices) < 3:
        raise InputError("too-few-slices", f"LV myocardium on only {len(slices)} slice(s); the AHA model needs basal, mid and apical slices",
                         hint="use a short-axis stack covering the LV from base to apex")
    base_first = _base_first(labels_ed, slices)
    # the apical cap has no cavity: split it into the thirds and it shifts every level boundary apically
    cavity = [s for s in slices if np.count_nonzero(labels_ed[s] == LV) >= _MIN_CAVITY_VOXELS]
    levelled = [s for s in slices if cavity and cavity[0] <= s <= cavity[-1]]
    if len(levelled) < 3:
        raise InputError("too-few-slices", f"an LV cavity on only {len(levelled)} slice(s); the AHA model needs basal, mid and apical slices",
                         hint="use a short-axis stack covering the LV from base to apex, with the LV cavity segmented")
    ordered = levelled if base_first else levelled[::-1]
    frame = AhaFrame(row_mm=row_mm, col_mm=col_mm, handedness=1 if handedness >= 0 else -1, base_first=base_first)
    for name, group in zip(("basal", "mid", "apical"), np.array_split(np.asarray(ordered), 3)):
        for s in group:
            frame.level[int(s)] = name  # type: ignore[assignment]
    slices = levelled
    reach = max(1, int(round(2.0 / min(row_mm, col_mm))))  # RV within ~2 mm of the wall counts as contact
    found: dict[int, float] = {}
    for s in slices:
        frame.centre[s] = _centre(labels_ed[s] == LV, myo[s])
        rv = labels_ed[s] == RV
        if not rv.any():
            continue
        contact = myo[s] & ndimage.binary_dilation(rv, iterations=reach)
        ang = _screen_angles(contact.shape, frame.centre[s], row_mm, col_mm)[contact]
        arc = _insertion_arc(ang)
        if arc is None:
            continue
        start, width = arc
        found[s] = (start + width / 2.0) % 360.0
        ends = (start % 360.0, (start + width) % 360.0)  # clockwise end first
        frame.insertion_deg[s] = ends if frame.handedness == 1 else ends[::-1]
    if not found:
        raise InputError("no-rv-contact", "the RV cavity (label 1) touches the LV myocardium on no slice, so the septum cannot be located",
                         hint="regional analysis needs an RV segmentation beside the LV")
    with_rv = np.asarray(sorted(found))
    for s in slices:
        if s in found:
            frame.septal_deg[s] = found[s]
        else:  # nearest slice with RV contact (ties: towards the base)
            dist = np.abs(with_rv - s)
            cands = with_rv[dist == dist.min()]
            frame.septal_deg[s] = found[int(cands.min() if base_first else cands.max())]
    return frame


def aha_segments(labels_ed: np.ndarray, spacing, *, handedness: int = 1) -> np.ndarray:
    """AHA 16-segment number (1-16) of every LV myocardium voxel of an ED label map (S, R, C); 0 elsewhere.

    The apical cap (myocardium beyond the end of the LV cavity) is outside the 16 segments: 0.

    ``spacing``: (slice, row, column) mm (only the in-plane part is used). ``handedness`` +1 for the
    standard short-axis view, -1 for a mirrored one.
    """
    labels_ed = np.asarray(labels_ed)
    return aha_frame(labels_ed, spacing, handedness=handedness).segment_map(labels_ed == MYO)


def _anterior_on_screen(study_meta: dict | None) -> float | None:
    """On-screen angle (deg, CCW from +column, rows down) of the patient's anterior direction, None when unknown.

    Trusted geometry: DICOM (LPS affine), or NIfTI whose sform/qform is set and oblique (an
    axis-aligned NIfTI affine is usually a placeholder). The projection must be substantial.
    """
    if not study_meta:
        return None
    try:
        aff = np.asarray(study_meta.get("affine"), dtype=float)
    except (TypeError, ValueError):
        return None
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        return None
    x, y = aff[:3, 0], aff[:3, 1]
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if min(nx, ny) <= 0:
        return None
    x, y = x / nx, y / ny
    inner = study_meta.get("meta") or {}
    space = inner.get("affine_space", "LPS" if study_meta.get("source") == "dicom" else "RAS")
    if study_meta.get("source") == "dicom":
        pass
    elif study_meta.get("source") == "nifti":
        coded = (inner.get("nifti_sform_code") or 0) > 0 or (inner.get("nifti_qform_code") or 0) > 0
        if not coded or (np.abs(x).max() > 0.999 and np.abs(y).max() > 0.999):
            return None
    else:
        return None
    anterior = np.array([0.0, -1.0, 0.0]) if space == "LPS" else np.array([0.0, 1.0, 0.0])
    right, down = float(x @ anterior), float(y @ anterior)  # columns run along x, rows along y
    if math.hypot(right, down) < 0.3:
        return None
    return math.degrees(math.atan2(-down, right)) % 360.0


def handedness_from_geometry(study_meta: dict | None, frame: AhaFrame) -> int | None:
    """+1 / -1 from the patient's anterior direction in trusted image geometry, None when it cannot tell.

    On every slice with RV contact, the insertion point nearer to the projected anterior direction
    is the anterior one; a clear majority decides the handedness.
    """
    phi = _anterior_on_screen(study_meta)
    if phi is None or not frame.insertion_deg:
        return None
    dist = lambda a: abs((a - phi + 180.0) % 360.0 - 180.0)  # noqa: E731
    votes = []
    for ant, inf in frame.insertion_deg.values():
        cw, ccw = (ant, inf) if frame.handedness == 1 else (inf, ant)  # clockwise end first
        if abs(dist(cw) - dist(ccw)) >= 20.0:
            votes.append(1 if dist(cw) < dist(ccw) else -1)
    if not votes or abs(sum(votes)) < 0.6 * len(votes):
        return None
    return 1 if sum(votes) > 0 else -1


def orientation_detail(source: str, note: str) -> str:
    """QC detail for the display handedness: an assumed one may have anterior and inferior swapped."""
    if source != "assumed":
        return note
    return (f"{note}; the image geometry (none, axis-aligned or uncoded affine) does not show which RV insertion is "
            "anterior, so anterior and inferior segments may be swapped: give orientation 'standard' or 'mirrored' "
            "when the display is known")


def resolve_orientation(store, study_id: str | None, orientation: Orientation, labels_ed: np.ndarray,
                        spacing) -> tuple[AhaFrame, str, str]:
    """The AHA frame with the display handedness chosen by ``orientation``; also (source, note)."""
    if orientation == "standard":
        return aha_frame(labels_ed, spacing, handedness=1), "given", STANDARD_VIEW.replace("assumed", "given")
    if orientation == "mirrored":
        return (aha_frame(labels_ed, spacing, handedness=-1), "given",
                "mirrored short-axis view given: the anterior RV insertion lies counter-clockwise on screen from the septum")
    frame = aha_frame(labels_ed, spacing, handedness=1)
    meta = None
    if study_id:
        try:
            meta = store.meta(study_id)
        except Exception:  # noqa: BLE001 - a missing source study only means no geometry to read
            meta = None
    hand = handedness_from_geometry(meta, frame)
    if hand is None:
        return frame, "assumed", STANDARD_VIEW
    if hand == -1:
        frame = aha_frame(labels_ed, spacing, handedness=-1)
    view = "standard (anterior clockwise from the septum)" if hand == 1 else "mirrored (anterior counter-clockwise from the septum)"
    return frame, "study-geometry", f"the image geometry puts the patient's anterior nearer one RV insertion: display is {view}"


# --------------------------------------------------------------------------------------------
# thickness perpendicular to the wall, placed by radial rays

_BORDER_SIGMA_PX = 1.0  # blur (pixels, each axis) of the LV mask whose 0.5 level is the epicardial border
_CROP_MARGIN_PX = 6  # pixels kept around the LV when a slice is cropped: room for the blurred border (4 sigma)


def _epicardial_border(myo: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """(N, 2) sub-pixel points (row, column; pixels) on the myocardium's border with the outside.

    ``lv`` is the LV (myocardium, cavity, holes filled). Its border is the 0.5 level of the mask
    blurred by a pixel: a smooth curve. On the raw pixel staircase the nearest border point would be
    an inward corner, reading the wall thin by up to half a pixel. Where the cavity itself meets the
    outside (a ring open at the outflow tract) the border is no epicardium and is left out.
    """
    level = ndimage.gaussian_filter(lv.astype(np.float64), _BORDER_SIGMA_PX, mode="constant")
    contours = measure.find_contours(level, 0.5)
    if not contours:
        return np.zeros((0, 2))
    pts = np.concatenate(contours)
    near_myo = ndimage.binary_dilation(myo, structure=np.ones((3, 3), dtype=bool))
    ij = np.clip(np.rint(pts).astype(np.int64), 0, np.array(myo.shape) - 1)
    return pts[near_myo[ij[:, 0], ij[:, 1]]]


def _crossing(d: np.ndarray, v: np.ndarray, k_before: np.ndarray, k_after: np.ndarray) -> np.ndarray:
    """Per ray, the distance where the sampled fraction ``v`` passes 0.5 between two samples (linear)."""
    rows = np.arange(v.shape[0])
    a, b = v[rows, k_before], v[rows, k_after]
    w = np.clip((0.5 - a) / np.where(b != a, b - a, 1.0), 0.0, 1.0)
    return d[k_before] + w * (d[k_after] - d[k_before])


def _ray_thickness(lab: np.ndarray, centre: tuple[float, float], row_mm: float, col_mm: float,
                   n_rays: int = 360) -> tuple[np.ndarray, np.ndarray]:
    """Screen angles (deg) and wall thickness (mm, NaN where a ray meets no wall) at rays from the LV centre.

    A ray only places the measurement (its angle gives the segment): where it enters its first
    myocardial run is the endocardial point, and the thickness there is that point's distance to the
    nearest point of the epicardial border, i.e. perpendicular to the wall. The radial chord equals
    it only where the ray meets the wall square (a circular LV about its centroid) and over-reads
    wherever the wall is oblique to the ray (an elliptical or D-shaped LV, an off-centre centroid,
    the RV insertions). A run that ends in the cavity (a trabeculation or papillary muscle labelled
    myocardium) does not reach the epicardium, and a ray starting in the myocardium (a cavity-less
    slice) has no endocardium: both keep their chord. Both borders are sub-pixel
    curves half-way between unlike pixel centres (bilinear 0.5 level along the ray, blurred 0.5
    level for the epicardium), so a rendered wall reads its nominal thickness in any direction, with
    any pixel aspect. In-plane: an over-estimate where the slice cuts the wall obliquely (apex).
    """
    theta = (np.arange(n_rays) + 0.5) * (360.0 / n_rays)
    lv = (lab == MYO) | (lab == LV)
    if not (lab == MYO).any():
        return theta, np.full(n_rays, np.nan)
    # crop to the LV: nothing outside it is wall, and the blur and hole filling then run on a small array
    in_r, in_c = np.nonzero(lv)
    r0, c0 = max(int(in_r.min()) - _CROP_MARGIN_PX, 0), max(int(in_c.min()) - _CROP_MARGIN_PX, 0)
    box = (slice(r0, int(in_r.max()) + _CROP_MARGIN_PX + 1), slice(c0, int(in_c.max()) + _CROP_MARGIN_PX + 1))
    myo, cavity = np.pad(lab[box] == MYO, 1), np.pad(lab[box] == LV, 1)  # the padding is outside: so is the image edge
    cy, cx = centre[0] - r0 + 1, centre[1] - c0 + 1
    rr, cc = np.nonzero(myo)
    step = 0.25 * min(row_mm, col_mm)
    reach = float(np.sqrt(((rr - cy) * row_mm) ** 2 + ((cc - cx) * col_mm) ** 2).max()) + 2 * max(row_mm, col_mm)
    d = np.arange(0.0, reach, step)
    sin, cos = np.sin(np.radians(theta)), np.cos(np.radians(theta))
    r = cy - d[None, :] * sin[:, None] / row_mm
    c = cx + d[None, :] * cos[:, None] / col_mm

    def fraction(mask: np.ndarray, at_r: np.ndarray, at_c: np.ndarray) -> np.ndarray:
        # bilinear: its 0.5 level lies half-way between unlike pixel centres
        return ndimage.map_coordinates(mask.astype(np.float32), [at_r.ravel(), at_c.ravel()], order=1, mode="constant",
                                       cval=0.0).reshape(at_r.shape)

    v = fraction(myo, r, c)
    hit = v >= 0.5
    has = hit.any(axis=1)
    first = np.argmax(hit, axis=1)
    after = ~hit & (np.arange(d.size)[None, :] > first[:, None])
    closed = after.any(axis=1)
    end = np.where(closed, np.argmax(after, axis=1), d.size - 1)
    d_in = np.where(first > 0, _crossing(d, v, np.maximum(first - 1, 0), first), 0.0)
    d_out = np.where(closed, _crossing(d, v, np.maximum(end - 1, 0), end), d[-1])
    thick = d_out - d_in
    # the chord stays where the run is no wall from endocardium to epicardium: it ends in the cavity
    # (within a pixel), or it starts at the centre (a cavity-less slice: no endocardium to start from)
    beyond = np.minimum(end[:, None] + np.arange(int(np.ceil(max(row_mm, col_mm) / step)) + 1)[None, :], d.size - 1)
    ray = np.arange(n_rays)[:, None]
    chord = (first == 0) | (closed & (fraction(cavity, r[ray, beyond], c[ray, beyond]) >= 0.5).any(axis=1))
    border = _epicardial_border(myo, ndimage.binary_fill_holes(myo | cavity)) * np.array([row_mm, col_mm])
    if border.size:
        endo = np.stack([cy * row_mm - d_in * sin, cx * col_mm + d_in * cos], axis=1)
        perpendicular, _ = cKDTree(border).query(endo)
        thick = np.where(chord, thick, perpendicular)
    return theta, np.where(has, thick, np.nan)


_MAX_WINDOW_RAYS = 11  # a running median over 11 of 360 rays (about 11 deg) for the maximum: one stray ray is not a wall


@dataclass(frozen=True)
class SegmentThickness:
    """One segment's wall on one frame: mean and maximal in-plane thickness (mm) and the rays behind them."""

    mean_mm: float
    max_mm: float
    n_rays: int


def _running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Circular running median over ``window`` neighbouring rays, NaN-aware (rays that meet no wall are skipped)."""
    half = window // 2
    idx = (np.arange(values.size)[:, None] + np.arange(-half, half + 1)[None, :]) % values.size
    stacked = values[idx]
    out = np.full(values.size, np.nan)
    ok = np.isfinite(stacked).sum(axis=1) > half  # most of the window on the wall
    out[ok] = np.nanmedian(stacked[ok], axis=1)
    return out


def segment_thickness(labels_frame: np.ndarray, frame: AhaFrame, slices: dict[int, bool]) -> dict[int, SegmentThickness]:
    """Mean and maximal thickness (mm) per segment on one frame (S, R, C), over the given slices.

    The maximum is taken over the ray profile smoothed by an ~11 deg running median, so a focal
    bulge a few rays wide counts and a single ray grazing a trabeculation or the RV insertion does not.
    """
    found: dict[int, list[float]] = {k: [] for k in SEGMENT_NAMES}
    peaks: dict[int, list[float]] = {k: [] for k in SEGMENT_NAMES}
    for s in slices:
        lab = labels_frame[s]
        if not (lab == MYO).any():
            continue
        centre = _centre(lab == LV, lab == MYO)
        theta, thick = _ray_thickness(lab, centre, frame.row_mm, frame.col_mm)
        seg = frame.segments_at(s, theta)
        smooth = _running_median(thick, _MAX_WINDOW_RAYS)
        ok = np.isfinite(thick)
        for k, v in zip(seg[ok], thick[ok]):
            found[int(k)].append(float(v))
        ok = np.isfinite(smooth)
        for k, v in zip(seg[ok], smooth[ok]):
            peaks[int(k)].append(float(v))
    nan = float("nan")
    return {k: SegmentThickness(float(np.mean(v)) if v else nan, max(peaks[k]) if peaks[k] else nan, len(v))
            for k, v in found.items()}


def _measured_slices(labels_ed: np.ndarray, frame: AhaFrame) -> dict[int, bool]:
    """Slices whose thickness is measured: those with an LV cavity at ED, or all of a level that has none."""
    out: dict[int, bool] = {}
    for name in ("basal", "mid", "apical"):
        group = [s for s in frame.slices if frame.level[s] == name]
        with_cavity = [s for s in group if (labels_ed[s] == LV).sum() >= _MIN_CAVITY_VOXELS]
        for s in with_cavity or group:
            out[s] = True
    return out


# --------------------------------------------------------------------------------------------
# the tool


class RegionalFunctionInput(BaseModel):
    segmentation_id: str = Field(pattern=r"^seg-[0-9a-f]{16,64}$", description="Id of a cine segmentation returned by `segment`.")
    orientation: Orientation = Field("auto", description=(
        "Display handedness of the short-axis images: 'standard' (as seen from the apex, RV on the left, anterior up), "
        "'mirrored', or 'auto' (read from oblique DICOM geometry, else standard)."))


class RegionalSegment(BaseModel):
    segment: int = Field(ge=1, le=16, description="AHA segment number.")
    name: str
    level: Level
    ed_wall_thickness_mm: Estimate | None = Field(None, description="Mean in-plane end-diastolic wall thickness, perpendicular to the wall.")
    ed_max_wall_thickness_mm: Estimate | None = Field(None, description=(
        "Maximal in-plane end-diastolic wall thickness in the segment (ray profile smoothed over ~11 deg): the "
        "hypertrophy criterion is a maximal thickness, so a focal bulge is flagged even when the mean is normal. "
        "Not flagged in apical segments, where the in-plane value over-estimates an obliquely cut wall."))
    es_wall_thickness_mm: Estimate | None = Field(None, description="Mean in-plane end-systolic wall thickness, perpendicular to the wall.")
    systolic_thickening_pct: Estimate | None = Field(None, description="(ES - ED) / ED thickness, %.")
    n_rays_ed: int = Field(description="Rays (angular positions) behind the ED mean.")


class SliceGeometry(BaseModel):
    slice: int
    level: Level
    septal_deg: float = Field(description="On-screen direction of the mid-septum from the LV centre (deg CCW from +column, rows down).")
    anterior_insertion_deg: float | None = Field(None, description="On-screen angle of the anterior RV insertion (None: no RV contact on this slice).")
    inferior_insertion_deg: float | None = None



class RegionalFunction(ToolOutput):
    segmentation_id: str
    aha_map_id: str = Field(description="Stored AHA segment map of the ED myocardium (array 'segments', slice x row x column).")
    ed_frame: int
    es_frame: int
    orientation_source: Literal["given", "study-geometry", "assumed"]
    orientation_note: str = Field(description="Which way is anterior, and why.")
    slice_order: Literal["base-first", "apex-first"] = Field(description="Found from the anatomy (the LV tapers towards the apex).")
    slices: list[SliceGeometry]
    segments: list[RegionalSegment]
    max_ed_wall_thickness_mm: Estimate | None = Field(None, description=(
        "Maximal end-diastolic wall thickness over the basal and mid segments (1-12), flagged at 15 mm; apical "
        "in-plane values over-estimate the wall where the slice cuts it obliquely and are not judged."))
    max_ed_wall_thickness_segment: int | None = Field(None, ge=1, le=12, description="AHA segment where the maximum lies.")
    method: str
    figures: list[BullseyeFigure]
    qc: list[QcCheck]
    qc_verdict: Literal["pass", "warn", "fail"]


def _example(ctx: ToolContext) -> dict:
    return {"segmentation_id": example_segmentation(ctx)}


def example_segmentation(ctx: ToolContext) -> str:
    """A segmentation of the sample phantom study, built from the phantom's own truth labels."""
    from cardiomics.synthetic.phantom import PhantomSpec, make_phantom

    from .. import call_tool
    from ._load import _example as load_example

    study = call_tool("load_study", load_example(ctx), ctx)
    truth = json.loads((ctx.store.root / "sample" / "truth.json").read_text())
    labels = make_phantom(PhantomSpec(**truth["spec"])).labels
    return ctx.store.put("seg", {"labels": labels}, {
        "study_id": study.study_id, "spacing_mm": list(study.spacing_mm),
        "model": {"id": "phantom-truth", "version": "0", "weights_sha256": "0" * 64}})


def _ed_es(labels: np.ndarray) -> tuple[int, int]:
    lv = (labels == LV).sum(axis=(1, 2, 3))
    return int(np.argmax(lv)), int(np.argmin(lv))


@tool(role="processing", example=_example)
def regional_function(inp: RegionalFunctionInput, ctx: ToolContext) -> RegionalFunction:
    """AHA 16-segment end-diastolic and end-systolic wall thickness and systolic thickening, with a bullseye.

    Use after `segment` on a short-axis cine (several frames, LV and RV segmented). Segments are
    placed from the anatomy: basal / mid / apical thirds of the slices with an LV cavity at ED (the
    cavity-less apical cap is in no segment), and the septum between the RV insertion points. ED wall
    thickness, each segment's mean and its maximum, is flagged against published cut-offs, the
    cut-off itself abnormal (thinning at or below 5.5 mm, hypertrophy at or above 15 mm: the
    hypertrophy criterion is a maximal thickness, so the maximum can flag a focal bulge whose
    segment mean is normal; apical maxima are shown but not judged, the oblique cut inflating them). Intervals: 95 % from test-time augmentation (t
    quantile). Returns the stored segment map id for `lge_burden` and figures.
    """
    meta = ctx.store.meta(inp.segmentation_id)
    arrays = ctx.store.arrays(inp.segmentation_id)
    if "labels" not in arrays or "spacing_mm" not in meta:
        raise InputError("not-a-segmentation", f"{inp.segmentation_id} holds no label maps", hint="pass an id returned by `segment`")
    ctx.used_input("segmentation", ctx.store.digest(inp.segmentation_id))
    if isinstance(meta.get("model"), dict):
        ctx.used_model(ModelRef(**meta["model"]))
    labels = arrays["labels"]
    if labels.ndim != 4:
        raise InputError("bad-label-shape", f"{inp.segmentation_id}: labels have shape {labels.shape}, expected (time, slice, row, column)",
                         hint="pass a cine segmentation from `segment`")
    if labels.shape[0] < 2:
        raise InputError("single-frame", f"{inp.segmentation_id} has one frame; thickening needs end-diastole and end-systole",
                         hint="segment the cine series, not a single-frame image")
    spacing = meta["spacing_mm"]
    ed, es = _ed_es(labels)
    frame, source, note = resolve_orientation(ctx.store, meta.get("study_id"), inp.orientation, labels[ed], spacing)
    measured = _measured_slices(labels[ed], frame)

    def thickness(lab4: np.ndarray) -> tuple[dict, dict]:
        return segment_thickness(lab4[ed], frame, measured), segment_thickness(lab4[es], frame, measured)

    ed_t, es_t = thickness(labels)
    members = [thickness(m) for m in arrays.get("tta", [])]
    ref = thickness_reference()

    def interval(k: int, point: float, kind: str) -> Interval | None:
        vals = []
        for m in members:
            a, b = m[0][k].mean_mm, m[1][k].mean_mm
            value = {"ed": a, "es": b, "max": m[0][k].max_mm}.get(kind)
            vals.append(value if value is not None else 100.0 * (b - a) / a if a > 0 else np.nan)
        # thickness is not negative, so thickening (ES - ED) / ED is at least -100 %; it has no upper limit
        return tta_interval(point, vals, lower_bound=-100.0 if kind == "pct" else 0.0)

    segments = []
    for k, name in SEGMENT_NAMES.items():
        level: Level = "basal" if k <= 6 else "mid" if k <= 12 else "apical"
        a, n, peak = ed_t[k].mean_mm, ed_t[k].n_rays, ed_t[k].max_mm
        b = es_t[k].mean_mm
        ok = n > 0 and np.isfinite(a) and np.isfinite(b) and a > 0
        thick_pct = 100.0 * (b - a) / a if ok else float("nan")
        segments.append(RegionalSegment(
            segment=k, name=name, level=level, n_rays_ed=n,
            ed_wall_thickness_mm=Estimate.of(a, "mm", reference=ref, interval=interval(k, a, "ed")) if ok else None,
            # apical in-plane maxima over-estimate where the slice cuts the tapering wall obliquely: shown, not judged
            ed_max_wall_thickness_mm=(Estimate.of(peak, "mm", reference=ref if level != "apical" else None,
                                                  interval=interval(k, peak, "max"))
                                      if ok and np.isfinite(peak) else None),
            es_wall_thickness_mm=Estimate.of(b, "mm", interval=interval(k, b, "es")) if ok else None,
            systolic_thickening_pct=Estimate.of(thick_pct, "%", interval=interval(k, thick_pct, "pct")) if ok else None,
        ))
    with_max = [x for x in segments if x.ed_max_wall_thickness_mm is not None and x.level != "apical"]
    thickest = max(with_max, key=lambda x: x.ed_max_wall_thickness_mm.value, default=None)
    seg_map = frame.segment_map(labels[ed] == MYO)
    aha_id = ctx.store.put("aha", {"segments": seg_map}, {
        "segmentation_id": inp.segmentation_id, "ed_frame": ed, "handedness": frame.handedness,
        "orientation_source": source, "septal_deg": {str(s): round(v, 3) for s, v in frame.septal_deg.items()},
        "levels": {str(s): v for s, v in frame.level.items()}})
    slices = [SliceGeometry(slice=s, level=frame.level[s], septal_deg=round(frame.septal_deg[s], 1),
                            anterior_insertion_deg=round(frame.insertion_deg[s][0], 1) if s in frame.insertion_deg else None,
                            inferior_insertion_deg=round(frame.insertion_deg[s][1], 1) if s in frame.insertion_deg else None)
              for s in frame.slices]
    ed_vals = {x.segment: (x.ed_wall_thickness_mm.value if x.ed_wall_thickness_mm else None) for x in segments}
    th_vals = {x.segment: (x.systolic_thickening_pct.value if x.systolic_thickening_pct else None) for x in segments}
    figures = [
        bullseye_figure("bullseye-ed-thickness", "End-diastolic wall thickness (AHA 16)", ed_vals, "mm", aha_id,
                        cmap="viridis", vmin=0.0, vmax=max(16.0, max((v for v in ed_vals.values() if v is not None), default=0.0))),
        bullseye_figure("bullseye-thickening", "Systolic wall thickening (AHA 16)", th_vals, "%", aha_id,
                        cmap="RdYlGn", vmin=min(0.0, min((v for v in th_vals.values() if v is not None), default=0.0)),
                        vmax=max(60.0, max((v for v in th_vals.values() if v is not None), default=0.0)), decimals=0),
    ]
    n_missing = sum(1 for x in segments if x.ed_wall_thickness_mm is None)
    rv_slices = len(frame.insertion_deg)
    qc = [
        QcCheck(check="ed-es-distinct", passed=ed != es, detail=f"ED frame {ed}, ES frame {es}"),
        QcCheck(check="all-segments-measured", passed=n_missing == 0, detail=f"{16 - n_missing} of 16 segments measured"),
        QcCheck(check="rv-insertion-found", passed=rv_slices >= 2,
                   detail=f"RV insertion points found on {rv_slices} of {len(frame.slices)} slices in the AHA levels; others use the nearest"),
        QcCheck(check="orientation", passed=source != "assumed", detail=orientation_detail(source, note)),
    ]
    failed = {q.check for q in qc if not q.passed}
    verdict = "pass" if not failed else ("fail" if "ed-es-distinct" in failed else "warn")
    log.info("regional function", segments_measured=16 - n_missing, orientation=source, ed=ed, es=es)
    return RegionalFunction(
        segmentation_id=inp.segmentation_id, aha_map_id=aha_id, ed_frame=ed, es_frame=es,
        orientation_source=source, orientation_note=note, slice_order="base-first" if frame.base_first else "apex-first",
        slices=slices, segments=segments,
        max_ed_wall_thickness_mm=thickest.ed_max_wall_thickness_mm if thickest else None,
        max_ed_wall_thickness_segment=thickest.segment if thickest else None,
        method=("in-plane wall thickness perpendicular to the wall at 360 radial rays from the LV blood-pool centroid per "
                "slice (distance from the ray's endocardial crossing to the nearest point of the epicardial border, both "
                "sub-pixel), averaged per segment over the slices of its level; the segment maximum is the largest value of "
                "the ray profile after an 11-ray (~11 deg) running median; thickening from the segment means at ED and ES; "
                "apical values over-estimate where the slice cuts the wall obliquely"),
        figures=figures, qc=qc, qc_verdict=verdict,
    )
