"""A synthetic cine short-axis bSSFP phantom (and a matching LGE image) with exact digital truth.

Why: absolute volumes and masses cannot be validated on the shared ACDC copy (its spacing was
lost), and tests must run anywhere. The phantom renders a beating LV and RV on a known grid, so
every truth value is a voxel count times the voxel volume of the very labels that were rendered.

Conventions
-----------
- Arrays are (time, slice, row, column); ``spacing_mm`` is (slice, row, column).
- Slice 0 is the base, higher slices go towards the apex (the last slice usually lies past it).
- Labels use the ACDC order: 0 background, 1 RV cavity, 2 LV myocardium, 3 LV cavity (papillary
  muscles inside the LV cavity are labelled cavity, as in ACDC).
- In-plane directions are given as on-screen angles, counter-clockwise from the +column axis with
  rows running down. ``rotation_deg`` points from the LV centre towards the RV (the septum).
- AHA 16 segments: slices holding LV myocardium at ED are split into basal / mid / apical thirds.
  With beta the on-screen angle of a pixel measured counter-clockwise from the septal direction,
  inferior lies at +90 deg and anterior at -90 deg (the usual display: RV on the left, anterior
  up). Basal 1 anterior [240,300), 2 anteroseptal [300,360), 3 inferoseptal [0,60), 4 inferior
  [60,120), 5 inferolateral [120,180), 6 anterolateral [180,240); mid 7-12 the same; apical
  13 anterior [225,315), 14 septal [315,45), 15 inferior [45,135), 16 lateral [135,225).

Geometry: the LV cavity is a truncated prolate ellipsoid along the slice axis whose radius and
length follow a smooth cardiac cycle (ED at frame 0, ES at ``es_fraction`` of the cycle). The
myocardial cross-section area of every slice is kept constant, so the wall thickens as the cavity
shrinks and myocardial volume is conserved. The RV cavity is an ellipse wrapped around the septal
side minus the LV, so it forms a crescent; its free wall moves towards the septum in systole.
Not modelled: regional wall-motion abnormality, base descent, through-plane motion, trabeculae.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import ndimage, optimize

from cardiomics.errors import InputError

BACKGROUND, RV_CAVITY, LV_MYOCARDIUM, LV_CAVITY = 0, 1, 2, 3
MYOCARDIAL_DENSITY_G_PER_ML = 1.05

# bSSFP signal levels relative to blood (before intensity_scale); LGE levels for the IR image.
_BLOOD = 1000.0
_CINE = {"fat": 0.85, "muscle": 0.24, "liver": 0.33, "lung": 0.035, "spine": 0.22, "soft": 0.20, "aorta": 0.9}
_LGE = {"blood": 0.42, "myo": 0.03, "scar": 0.95, "fat": 0.60, "muscle": 0.10, "liver": 0.16, "lung": 0.02,
        "spine": 0.12, "soft": 0.08, "aorta": 0.40}


class PhantomSpec(BaseModel):
    """Anatomy, function and acquisition of one synthetic cine SAX study (targets, not truth)."""

    model_config = ConfigDict(extra="forbid")

    n_frames: int = Field(25, ge=2, le=100, description="Cardiac phases over one cycle.")
    n_slices: int = Field(10, ge=3, le=40, description="Short-axis slices, base (0) to apex.")
    rows: int = Field(192, ge=48, le=512)
    cols: int = Field(192, ge=48, le=512)
    pixel_mm: float = Field(1.5, gt=0.3, le=4.0, description="In-plane pixel size (square pixels).")
    slice_mm: float = Field(8.0, ge=2.0, le=20.0, description="Distance between slice centres.")
    lv_edv_ml: float = Field(150.0, gt=10.0, le=600.0, description="Target LV end-diastolic volume.")
    lv_ef: float = Field(0.60, ge=0.05, le=0.85, description="Target LV ejection fraction (fraction).")
    rv_edv_ml: float = Field(160.0, gt=10.0, le=600.0)
    rv_ef: float = Field(0.55, ge=0.05, le=0.85)
    myo_thickness_mm: float = Field(9.0, ge=3.0, le=25.0, description="LV wall thickness at ED.")
    es_fraction: float = Field(0.35, ge=0.15, le=0.6, description="End-systole as a fraction of the cycle.")
    noise_sd: float = Field(0.03, ge=0.0, le=0.5, description="Rician noise SD relative to the blood signal.")
    centre_offset_mm: tuple[float, float] = Field((0.0, 0.0), description="LV centre offset from the image centre (row, column), mm.")
    rotation_deg: float = Field(160.0, description="On-screen direction from the LV centre to the RV, deg CCW from +column.")
    apex_shift_mm: tuple[float, float] = Field((3.0, 4.0), description="In-plane drift of the LV axis from base to apex (row, column), mm.")
    ellipticity: float = Field(1.05, ge=0.8, le=1.25, description="Ratio of the LV's in-plane semi-axes.")
    intensity_scale: float = Field(1.0, gt=0.05, le=5.0)
    blood_myo_ratio: float = Field(4.0, ge=1.5, le=8.0, description="bSSFP blood / myocardium contrast.")
    bias_strength: float = Field(0.25, ge=0.0, le=0.6, description="Amplitude of the smooth coil bias field.")
    epi_fat_mm: float = Field(2.0, ge=0.0, le=6.0, description="Epicardial fat thickness around the heart.")
    seed: int = Field(0, ge=0)
    scar_segments: list[int] = Field(default_factory=list, description="AHA segments (1-16) holding LGE scar.")
    scar_transmurality: float = Field(0.5, ge=0.0, le=1.0, description="Scar depth as a fraction of the wall, from the endocardium.")

    @field_validator("scar_segments")
    @classmethod
    def _segments(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 1 <= int(s) <= 16]
        if bad:
            raise ValueError(f"AHA segments must be 1-16, got {bad}")
        return sorted({int(s) for s in v})

    @property
    def es_frame(self) -> int:
        """Nominal end-systolic frame."""
        return int(round(self.es_fraction * self.n_frames)) % self.n_frames

    @classmethod
    def random(cls, seed: int, **overrides: Any) -> PhantomSpec:
        """Plausible, varied anatomy for training data: normal, dilated, hypertrophic, infarcted, RV-dilated."""
        rng = np.random.default_rng(seed)
        kind = rng.choice(["normal", "dcm", "hcm", "minf", "rv"])
        u = rng.uniform
        if kind == "normal":
            edv, ef, th = u(100, 190), u(0.55, 0.70), u(7, 11)
        elif kind == "dcm":
            edv, ef, th = u(200, 300), u(0.15, 0.40), u(6, 9)
        elif kind == "hcm":
            edv, ef, th = u(90, 150), u(0.60, 0.70), u(12, 16)
        elif kind == "minf":
            edv, ef, th = u(140, 260), u(0.25, 0.45), u(6, 10)
        else:
            edv, ef, th = u(100, 180), u(0.50, 0.68), u(7, 10)
        rv_edv = edv * (u(1.4, 2.0) if kind == "rv" else u(0.9, 1.2))
        rv_ef = u(0.20, 0.40) if kind == "rv" else float(np.clip(ef + u(-0.12, 0.05), 0.2, 0.7))
        pixel = u(1.2, 2.0)
        scar: list[int] = []
        if kind == "minf":
            territories = [[1, 2, 7, 8, 13, 14], [3, 4, 9, 10, 15], [5, 6, 11, 12, 16]]
            terr = territories[int(rng.integers(len(territories)))]
            scar = sorted(rng.choice(terr, size=int(rng.integers(2, len(terr) + 1)), replace=False).tolist())
        values: dict[str, Any] = dict(
            n_frames=int(rng.integers(20, 31)), n_slices=int(rng.integers(9, 13)), pixel_mm=pixel,
            slice_mm=u(7.5, 10.0), lv_edv_ml=edv, lv_ef=ef, rv_edv_ml=rv_edv, rv_ef=rv_ef, myo_thickness_mm=th,
            es_fraction=u(0.30, 0.42), noise_sd=u(0.01, 0.08),
            centre_offset_mm=(u(-15, 15), u(-15, 15)), rotation_deg=u(130, 210),
            apex_shift_mm=(u(-6, 6), u(-6, 6)), ellipticity=u(0.92, 1.12), intensity_scale=float(np.exp(u(-0.7, 0.7))),
            blood_myo_ratio=u(2.8, 5.5), bias_strength=u(0.0, 0.4), epi_fat_mm=u(0.0, 3.5), seed=int(seed),
            scar_segments=scar, scar_transmurality=u(0.3, 1.0) if scar else 0.5,
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class Phantom:
    """A rendered cine stack and its digital ground truth."""

    images: np.ndarray  # float32 (T, S, R, C)
    labels: np.ndarray  # uint8 (T, S, R, C), ACDC values
    spacing_mm: tuple[float, float, float]  # (slice, row, column)
    truth: dict[str, Any]
    spec: PhantomSpec
    aha_segments: np.ndarray = field(repr=False, default=None)  # uint8 (S, R, C): AHA segment of each ED myocardium voxel

    @property
    def voxel_ml(self) -> float:
        s, r, c = self.spacing_mm
        return s * r * c / 1000.0


@dataclass
class LgePhantom:
    """A single-frame inversion-recovery LGE image on the ED geometry, with its scar."""

    image: np.ndarray  # float32 (S, R, C)
    labels: np.ndarray  # uint8 (S, R, C)
    scar_mask: np.ndarray  # bool (S, R, C), a subset of the myocardium
    aha_segments: np.ndarray  # uint8 (S, R, C)
    spacing_mm: tuple[float, float, float]
    truth: dict[str, Any]
    spec: PhantomSpec


# --------------------------------------------------------------------------------------------
# geometry


def _cycle(n_frames: int, es_frame: int) -> np.ndarray:
    """Contraction state c(t): 0 at ED (frame 0), 1 at ES; rapid filling, diastasis, atrial kick."""
    t = np.arange(n_frames, dtype=np.float64)
    c = np.zeros(n_frames)
    sys = t <= es_frame
    c[sys] = 0.5 * (1.0 - np.cos(np.pi * t[sys] / max(es_frame, 1)))
    span = n_frames - es_frame
    u = (t[~sys] - es_frame) / span

    def smooth(x: np.ndarray, a: float, b: float) -> np.ndarray:
        y = np.clip((x - a) / (b - a), 0.0, 1.0)
        return y * y * (3.0 - 2.0 * y)

    c[~sys] = 1.0 - 0.75 * smooth(u, 0.0, 0.45) - 0.25 * smooth(u, 0.70, 1.0)
    return c


def _profile(z: np.ndarray, zc: float, a: float) -> np.ndarray:
    """Squared radius profile of an ellipsoid (centre zc, half-length a) at heights z, clipped at 0."""
    return np.clip(1.0 - ((z - zc) / a) ** 2, 0.0, None)


@dataclass
class _Geometry:
    z: np.ndarray  # slice centres along the long axis, mm (S,)
    c: np.ndarray  # contraction state per frame (T,)
    b_cav: np.ndarray  # LV cavity semi-axis along the septal direction, (T, S)
    b_epi: np.ndarray  # LV epicardium semi-axis, (T, S)
    myo_area: np.ndarray  # LV myocardial area per slice, mm^2 (S,)
    rv_depth: np.ndarray  # RV depth profile per slice (S,), unit
    rv_k: np.ndarray  # RV scale per frame (T,), mm
    r_ref: np.ndarray  # ED epicardial semi-axis per slice (S,)
    eps: float
    pap: np.ndarray  # papillary radius per (T, S), 0 where absent
    lv_len: float


def _lv_geometry(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    S, T = spec.n_slices, spec.n_frames
    cover = S * spec.slice_mm
    z = (np.arange(S) + 0.5) * spec.slice_mm
    eps = spec.ellipticity
    th = spec.myo_thickness_mm
    th_apex = 0.8 * th
    L_ed = 0.78 * cover * (spec.lv_edv_ml / 150.0) ** (1.0 / 3.0)
    L_ed = float(np.clip(L_ed, 0.45 * cover, cover - th_apex - 0.3 * spec.slice_mm))
    if L_ed < 2.0 * spec.slice_mm:
        raise InputError("phantom-too-short", f"{S} slices x {spec.slice_mm} mm cannot hold an LV with a {th} mm wall",
                         hint="use more slices or a larger slice spacing")
    c = _cycle(T, spec.es_frame)
    shortening = 0.15 * float(np.clip(spec.lv_ef / 0.6, 0.3, 1.2))
    kappa = 0.25
    volumes = spec.lv_edv_ml * (1.0 - spec.lv_ef * c)  # ml
    b_cav = np.zeros((T, S))
    for t in range(T):
        L = L_ed * (1.0 - shortening * c[t])
        zc, a = kappa * L, (1.0 - kappa) * L
        f = _profile(z, zc, a)
        b = math.sqrt(volumes[t] * 1000.0 / (math.pi * eps * f.sum() * spec.slice_mm))
        b_cav[t] = b * np.sqrt(f)
    # ED epicardium: the same ellipsoid grown by the wall; the per-slice area is then kept constant.
    zc0, a0 = kappa * L_ed, (1.0 - kappa) * L_ed
    b0 = b_cav[0].max() / math.sqrt(max(_profile(z, zc0, a0).max(), 1e-9))
    epi_ed = (b0 + th) * np.sqrt(_profile(z, zc0, a0 + th_apex))
    myo_area = math.pi * eps * np.clip(epi_ed**2 - b_cav[0] ** 2, 0.0, None)
    b_epi = np.sqrt(b_cav**2 + myo_area[None, :] / (math.pi * eps))
    return z, c, b_cav, b_epi, myo_area, L_ed


class _Grid:
    """In-plane coordinates of a crop around the heart, in the heart frame (xi towards the RV, eta 90 deg CCW on screen)."""

    def __init__(self, spec: PhantomSpec, radius_mm: float, stride: int = 1) -> None:
        px = spec.pixel_mm
        S = spec.n_slices
        frac = (np.arange(S) + 0.5) / S
        cy = (spec.rows - 1) / 2.0 + (spec.centre_offset_mm[0] + spec.apex_shift_mm[0] * (frac - 0.5)) / px  # (S,) pixel
        cx = (spec.cols - 1) / 2.0 + (spec.centre_offset_mm[1] + spec.apex_shift_mm[1] * (frac - 0.5)) / px
        rad = radius_mm / px + 2
        r0 = int(max(0, math.floor(cy.min() - rad)))
        r1 = int(min(spec.rows, math.ceil(cy.max() + rad) + 1))
        c0 = int(max(0, math.floor(cx.min() - rad)))
        c1 = int(min(spec.cols, math.ceil(cx.max() + rad) + 1))
        if r1 - r0 < 8 or c1 - c0 < 8:
            raise InputError("phantom-outside-image", "the heart lies outside the image grid",
                             hint="reduce centre_offset_mm or enlarge rows/cols")
        self.box = (r0, r1, c0, c1)
        rr = np.arange(r0, r1, stride, dtype=np.float32)
        cc = np.arange(c0, c1, stride, dtype=np.float32)
        y = (rr[None, :, None] - cy[:, None, None].astype(np.float32)) * px  # (S, r, 1) mm, rows down
        x = (cc[None, None, :] - cx[:, None, None].astype(np.float32)) * px  # (S, 1, c)
        th = math.radians(spec.rotation_deg)
        ux, uy = math.cos(th), -math.sin(th)  # on-screen angle -> (x right, y down)
        vx, vy = math.cos(th + math.pi / 2), -math.sin(th + math.pi / 2)
        self.xi = (x * ux + y * uy).astype(np.float32)
        self.eta = (x * vx + y * vy).astype(np.float32)
        self.stride = stride
        self.px = px * stride


def _ellipse(xi: np.ndarray, eta: np.ndarray, a1: np.ndarray, a2: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Hard mask (pixel centre inside) and partial-volume fraction of ellipses with per-slice semi-axes (S,).

    The signed distance is approximated by (rho - 1) * sqrt(a1 * a2), good for the near-circular
    shapes drawn here; the hard mask is exactly rho < 1, i.e. fraction > 0.5.
    """
    a1 = np.maximum(np.asarray(a1, dtype=np.float32), 1e-3)
    a2 = np.maximum(np.asarray(a2, dtype=np.float32), 1e-3)
    rho = _rho(xi, eta, a1, a2)
    rad = (np.sqrt(a1 * a2) / px).astype(np.float32)[:, None, None]
    inside = rho < 1.0
    rho -= 1.0
    rho *= -rad
    rho += 0.5
    return inside, np.clip(rho, 0.0, 1.0, out=rho)


def _rho(xi: np.ndarray, eta: np.ndarray, a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """Normalised elliptic radius: < 1 inside."""
    p = xi * (1.0 / a1).astype(np.float32)[:, None, None]
    q = eta * (1.0 / a2).astype(np.float32)[:, None, None]
    p *= p
    q *= q
    p += q
    return np.sqrt(p, out=p)


def _rv_shape(g: _Geometry, t: int, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RV ellipse per slice at frame t: centre along xi, semi-axes (xi, eta). Absent slices get zero axes."""
    near = -0.25 * g.r_ref
    far = g.b_epi[t] + k * g.rv_depth
    p = np.where(g.rv_depth > 0, (far - near) / 2.0, 0.0)
    centre = (far + near) / 2.0
    q = np.where(g.rv_depth > 0, 0.85 * g.r_ref + 1.3 * k * g.rv_depth, 0.0)
    return centre, p, q


def _rv_area(grid: _Grid, g: _Geometry, t: int, k: float, lv: np.ndarray) -> float:
    """RV cavity area summed over slices (mm^2) at frame t for excursion k; ``lv`` is the LV epicardial mask."""
    centre, p, q = _rv_shape(g, t, k)
    inside = _rho(grid.xi - centre[:, None, None].astype(np.float32), grid.eta, np.maximum(p, 1e-3), np.maximum(q, 1e-3)) < 1.0
    inside &= ~lv
    return float(np.count_nonzero(inside)) * grid.px * grid.px


def _geometry(spec: PhantomSpec) -> tuple[_Geometry, _Grid]:
    z, c, b_cav, b_epi, myo_area, L_ed = _lv_geometry(spec)
    eps = spec.ellipticity
    r_ref = b_epi[0]
    lv_epi_len = L_ed + 0.8 * spec.myo_thickness_mm
    rv_len = 0.85 * lv_epi_len
    rv_depth = np.sqrt(_profile(z, -0.15 * rv_len, 1.15 * rv_len)) * (z < rv_len)
    pap = np.zeros_like(b_cav)
    mid = (z > 0.25 * L_ed) & (z < 0.75 * L_ed)
    pap[:, mid] = 0.14 * b_cav[0, mid][None, :] * (1.0 + 0.3 * c[:, None])
    pap[b_cav < 10.0] = 0.0
    geo = _Geometry(z=z, c=c, b_cav=b_cav, b_epi=b_epi, myo_area=myo_area, rv_depth=rv_depth, rv_k=np.zeros(len(c)),
                    r_ref=r_ref, eps=eps, pap=pap, lv_len=L_ed)
    # RV: find the free-wall excursion k(t) that gives the target volume curve (coarse grid, then rendered exactly).
    k_max = 120.0
    radius = float(max(b_epi.max() * max(eps, 1.0), 0.85 * r_ref.max() + 1.3 * k_max)) + 10
    coarse = _Grid(spec, min(radius, 0.75 * max(spec.rows, spec.cols) * spec.pixel_mm), stride=2)
    target = spec.rv_edv_ml * (1.0 - spec.rv_ef * c) * 1000.0 / spec.slice_mm  # mm^2 summed over slices
    for t in range(len(c)):
        lv = _rho(coarse.xi, coarse.eta, np.maximum(b_epi[t], 1e-3), np.maximum(eps * b_epi[t], 1e-3)) < 1.0
        f = lambda k, t=t, lv=lv: _rv_area(coarse, geo, t, k, lv) - target[t]  # noqa: E731
        if f(k_max) < 0:
            raise InputError("phantom-too-large", f"an RV of {spec.rv_edv_ml:.0f} ml does not fit this grid",
                             hint="lower rv_edv_ml, or use more/larger pixels or slices")
        geo.rv_k[t] = optimize.brentq(f, 0.0, k_max, xtol=0.05) if f(0.0) < 0 else 0.0
    fat = spec.epi_fat_mm + 4.0
    centre, p, q = _rv_shape(geo, int(np.argmax(geo.rv_k)), float(geo.rv_k.max()))
    extent = float(max(b_epi.max() * max(eps, 1.0), (np.abs(centre) + np.maximum(p, q)).max())) + fat + 6.0
    return geo, _Grid(spec, extent)


# --------------------------------------------------------------------------------------------
# rendering


def _background(spec: PhantomSpec, levels: dict[str, float], geo: _Geometry) -> np.ndarray:
    """Static chest anatomy (S, R, C) in units of the blood signal: body wall, lungs, liver, spine, aorta."""
    S, R, C, px = spec.n_slices, spec.rows, spec.cols, spec.pixel_mm
    y = ((np.arange(R, dtype=np.float32) - (R - 1) / 2.0) * px)[:, None]
    x = ((np.arange(C, dtype=np.float32) - (C - 1) / 2.0) * px)[None, :]
    hy = spec.centre_offset_mm[0] - 10.0  # body centre sits a little posterior/inferior of the heart on screen
    hx = spec.centre_offset_mm[1] + 15.0

    def ell(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 < 1.0

    img2d = np.zeros((R, C), dtype=np.float32)
    body = ell(hx, hy, 170, 125)
    img2d[body] = levels["fat"]
    img2d[ell(hx, hy, 160, 115)] = levels["muscle"]
    img2d[ell(hx, hy, 148, 103)] = levels["soft"]
    th = math.radians(spec.rotation_deg)
    ux = math.cos(th)
    for side in (-1.0, 1.0):
        img2d[ell(hx + side * 80.0, hy - 5.0, 62, 85)] = levels["lung"]
    img2d[ell(hx, hy + 88.0, 20, 16)] = levels["spine"]
    vol = np.repeat(img2d[None], S, axis=0)
    cover = S * spec.slice_mm
    for s in range(S):
        frac = (geo.z[s] - 0.45 * cover) / (0.55 * cover)
        if frac > 0:
            lx, ly = 95.0 * min(frac, 1.0) + 20, 60.0 * min(frac, 1.0) + 15
            vol[s][ell(hx - 40.0 * ux, hy + 75.0, lx, ly) & body] = levels["liver"]
        # descending aorta: behind the heart, opposite the RV
        ax = spec.centre_offset_mm[1] - (geo.r_ref.max() + 30.0) * ux + 25.0
        ay = spec.centre_offset_mm[0] + 55.0
        vol[s][ell(ax, ay, 11, 11)] = levels["aorta"]
    return ndimage.gaussian_filter(vol, sigma=(0, 0.8, 0.8))


def _bias(spec: PhantomSpec, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative coil sensitivity (S, R, C), mean 1, within 1 +/- bias_strength."""
    S, R, C = spec.n_slices, spec.rows, spec.cols
    y = np.linspace(-1, 1, R, dtype=np.float32)[None, :, None]
    x = np.linspace(-1, 1, C, dtype=np.float32)[None, None, :]
    zz = np.linspace(-1, 1, S, dtype=np.float32)[:, None, None]
    coef = rng.uniform(-1, 1, size=7).astype(np.float32)
    f = coef[0] * x + coef[1] * y + coef[2] * x * y + coef[3] * (x * x - 0.33) + coef[4] * (y * y - 0.33) + 0.3 * coef[5] * zz
    f = f + 0.5 * coef[6] * x * zz
    f = f / max(float(np.abs(f).max()), 1e-6)
    return (1.0 + spec.bias_strength * f).astype(np.float32)


_MIN_CAVITY_VOXELS = 3  # as regional_function: fewer LV cavity voxels on a slice is no cavity


def _aha_map(spec: PhantomSpec, grid: _Grid, myo: np.ndarray, cavity: np.ndarray) -> np.ndarray:
    """AHA 16-segment number of each myocardium voxel of a (S, r, c) crop (0 elsewhere).

    The levels are thirds of the slices from the first to the last with an LV cavity, as the 16-segment
    model and ``regional_function`` define them: the myocardial cap beyond the cavity is in no segment."""
    beta = np.degrees(np.arctan2(grid.eta, grid.xi)) % 360.0
    seg = np.zeros(myo.shape, dtype=np.uint8)
    with_cavity = [s for s in range(myo.shape[0]) if np.count_nonzero(cavity[s]) >= _MIN_CAVITY_VOXELS]
    slices = [s for s in range(myo.shape[0]) if myo[s].any() and with_cavity and with_cavity[0] <= s <= with_cavity[-1]]
    if len(slices) < 3:
        return seg
    basal, mid, apical = np.array_split(np.asarray(slices), 3)
    six = (np.floor(((beta + 120.0) % 360.0) / 60.0)).astype(np.int64)  # 0: [240,300) anterior ... 5: [180,240)
    six_map = np.array([1, 2, 3, 4, 5, 6], dtype=np.uint8)
    four = (np.floor(((beta + 135.0) % 360.0) / 90.0)).astype(np.int64)  # 0: [225,315) anterior ... 3: [135,225)
    four_map = np.array([13, 14, 15, 16], dtype=np.uint8)
    for group, offset in ((basal, 0), (mid, 6)):
        for s in group:
            seg[s] = np.where(myo[s], six_map[six[s]] + offset, 0)
    for s in apical:
        seg[s] = np.where(myo[s], four_map[four[s]], 0)
    return seg


def _render(spec: PhantomSpec, geo: _Geometry, grid: _Grid, t: int, levels: dict[str, float], scar: np.ndarray | None = None):
    """Labels and image (crop, in blood units) of frame t. ``scar``: a bool crop mask drawn with levels['scar']."""
    xi, eta, px = grid.xi, grid.eta, grid.px
    eps = geo.eps
    centre, p, q = _rv_shape(geo, t, float(geo.rv_k[t]))
    has_rv = (p > 0)
    rv_xi = xi - centre[:, None, None].astype(np.float32)
    wall = 3.0
    rv_in, rv_f = _ellipse(rv_xi, eta, p, q, px)
    _, rvw_f = _ellipse(rv_xi, eta, np.where(has_rv, p + wall, 0), np.where(has_rv, q + wall, 0), px)
    has_lv = geo.b_epi[t] > 0
    epi_in, epi_f = _ellipse(xi, eta, geo.b_epi[t], eps * geo.b_epi[t], px)
    cav_in, cav_f = _ellipse(xi, eta, geo.b_cav[t], eps * geo.b_cav[t], px)
    fat = spec.epi_fat_mm
    _, fat_lv = _ellipse(xi, eta, np.where(has_lv, geo.b_epi[t] + fat, 0), np.where(has_lv, eps * geo.b_epi[t] + fat, 0), px)
    _, fat_rv = _ellipse(rv_xi, eta, np.where(has_rv, p + wall + fat, 0), np.where(has_rv, q + wall + fat, 0), px)

    labels = np.zeros(xi.shape[:1] + (xi.shape[1], xi.shape[2]), dtype=np.uint8)
    labels[rv_in] = RV_CAVITY
    labels[epi_in] = LV_MYOCARDIUM
    labels[cav_in] = LV_CAVITY

    myo_level = levels["myo"]
    layers: list[tuple[np.ndarray, float | np.ndarray]] = []
    if fat > 0:  # patchy: thicker along the RV free wall and the grooves than over the LV lateral wall
        beta = np.arctan2(eta, xi)
        patchy = 0.25 + 0.45 * (1.0 + np.cos(2.0 * beta + 0.7)) * 0.5 + 0.3 * (np.cos(beta) > 0)
        layers.append((np.maximum(fat_lv, fat_rv) * patchy.astype(np.float32), levels["fat"]))
    layers.append((rvw_f, myo_level))
    layers.append((rv_f, levels["blood"]))
    if scar is not None:
        myo_value: float | np.ndarray = np.where(scar, np.float32(levels["scar"]), np.float32(myo_level))
    else:
        myo_value = myo_level
    layers.append((epi_f, myo_value))
    layers.append((cav_f, levels["blood"]))
    if geo.pap[t].any():
        for ang, dist in ((110.0, 0.62), (220.0, 0.62)):
            a = math.radians(ang)
            cx = (dist * geo.b_cav[t] * math.cos(a)).astype(np.float32)[:, None, None]
            cy = (dist * eps * geo.b_cav[t] * math.sin(a)).astype(np.float32)[:, None, None]
            _, pf = _ellipse(xi - cx, eta - cy, geo.pap[t], geo.pap[t], px)
            layers.append((pf * (cav_f > 0.99), myo_level))
    return labels, layers, (epi_in & ~cav_in)


def _compose(base: np.ndarray, layers) -> np.ndarray:
    out = base.copy()
    for w, v in layers:
        out += w * (v - out)
    return out


def _rician(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return img
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n1 *= sigma
    n1 += img
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 *= sigma
    np.square(n1, out=n1)
    np.square(n2, out=n2)
    n1 += n2
    return np.sqrt(n1, out=n1)


def make_phantom(spec: PhantomSpec | None = None) -> Phantom:
    """Render the cine phantom: images, labels and digital truth (exact for the rendered labels)."""
    spec = spec or PhantomSpec()
    rng = np.random.default_rng(spec.seed)
    geo, grid = _geometry(spec)
    T, S, R, C = spec.n_frames, spec.n_slices, spec.rows, spec.cols
    levels = dict(_CINE, blood=1.0, myo=1.0 / spec.blood_myo_ratio)
    bias = _bias(spec, rng)
    back = _background(spec, levels, geo)
    r0, r1, c0, c1 = grid.box
    images = np.empty((T, S, R, C), dtype=np.float32)
    labels = np.zeros((T, S, R, C), dtype=np.uint8)
    base_crop = back[:, r0:r1, c0:c1]
    for t in range(T):
        lab, layers, _ = _render(spec, geo, grid, t, levels)
        images[t] = back
        images[t, :, r0:r1, c0:c1] = _compose(base_crop, layers)
        labels[t, :, r0:r1, c0:c1] = lab
    scale = np.float32(_BLOOD * spec.intensity_scale)
    images *= bias[None] * scale
    images = _rician(images, float(spec.noise_sd * scale), rng)
    spacing = (float(spec.slice_mm), float(spec.pixel_mm), float(spec.pixel_mm))
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    counts = np.stack([np.count_nonzero(labels == k, axis=(1, 2, 3)) for k in (RV_CAVITY, LV_MYOCARDIUM, LV_CAVITY)], axis=1)
    rv_curve, myo_curve, lv_curve = (counts[:, i] * voxel_ml for i in range(3))
    ed, es = int(np.argmax(lv_curve)), int(np.argmin(lv_curve))
    rv_ed, rv_es = int(np.argmax(rv_curve)), int(np.argmin(rv_curve))  # each ventricle's own extremes, as cardiac_function
    truth: dict[str, Any] = {
        "lv_edv_ml": float(lv_curve[ed]), "lv_esv_ml": float(lv_curve[es]),
        "lv_sv_ml": float(lv_curve[ed] - lv_curve[es]),
        "lv_ef_pct": float(100.0 * (lv_curve[ed] - lv_curve[es]) / lv_curve[ed]),
        "lv_mass_g": float(myo_curve[ed] * MYOCARDIAL_DENSITY_G_PER_ML),
        "rv_edv_ml": float(rv_curve[rv_ed]), "rv_esv_ml": float(rv_curve[rv_es]),
        "rv_ef_pct": float(100.0 * (rv_curve[rv_ed] - rv_curve[rv_es]) / rv_curve[rv_ed]) if rv_curve[rv_ed] > 0 else 0.0,
        "ed_frame": ed, "es_frame": es, "rv_ed_frame": rv_ed, "rv_es_frame": rv_es,
        "lv_volume_curve_ml": [float(v) for v in lv_curve],
        "rv_volume_curve_ml": [float(v) for v in rv_curve],
        "lv_myo_volume_curve_ml": [float(v) for v in myo_curve],
        "voxel_ml": float(voxel_ml),
    }
    aha = np.zeros((S, R, C), dtype=np.uint8)
    crop_ed = labels[ed, :, r0:r1, c0:c1]
    aha[:, r0:r1, c0:c1] = _aha_map(spec, grid, crop_ed == LV_MYOCARDIUM, crop_ed == LV_CAVITY)
    return Phantom(images=images, labels=labels, spacing_mm=spacing, truth=truth, spec=spec, aha_segments=aha)


def make_lge(spec: PhantomSpec | None = None) -> LgePhantom:
    """An inversion-recovery LGE image on the ED geometry: nulled myocardium, scar bright in ``spec.scar_segments``."""
    spec = spec or PhantomSpec()
    rng = np.random.default_rng(spec.seed + 7919)
    geo, grid = _geometry(spec)
    S, R, C = spec.n_slices, spec.rows, spec.cols
    r0, r1, c0, c1 = grid.box
    levels = dict(_LGE)
    # geometry of frame 0 (ED) without the scar, to place it
    lab0, _, myo = _render(spec, geo, grid, 0, levels)
    seg_crop = _aha_map(spec, grid, myo, lab0 == LV_CAVITY)
    # normalised wall depth from the endocardium (0) to the epicardium (1); the ellipses are similar
    s_rad = np.sqrt(grid.xi**2 + (grid.eta / geo.eps) ** 2)
    endo = geo.b_cav[0].astype(np.float32)[:, None, None]
    epi = geo.b_epi[0].astype(np.float32)[:, None, None]
    depth = (s_rad - endo) / np.maximum(epi - endo, 1e-3)
    scar_crop = myo & np.isin(seg_crop, spec.scar_segments) & (depth <= spec.scar_transmurality)
    if spec.scar_transmurality <= 0:
        scar_crop[:] = False
    lab, layers, _ = _render(spec, geo, grid, 0, levels, scar=scar_crop)
    back = _background(spec, levels, geo)
    image = back.copy()
    image[:, r0:r1, c0:c1] = _compose(back[:, r0:r1, c0:c1], layers)
    scale = np.float32(_BLOOD * spec.intensity_scale)
    image *= _bias(spec, rng) * scale
    image = _rician(image, float(spec.noise_sd * scale), rng)
    labels = np.zeros((S, R, C), dtype=np.uint8)
    labels[:, r0:r1, c0:c1] = lab
    scar = np.zeros((S, R, C), dtype=bool)
    scar[:, r0:r1, c0:c1] = scar_crop
    aha = np.zeros((S, R, C), dtype=np.uint8)
    aha[:, r0:r1, c0:c1] = seg_crop
    spacing = (float(spec.slice_mm), float(spec.pixel_mm), float(spec.pixel_mm))
    voxel_ml = spacing[0] * spacing[1] * spacing[2] / 1000.0
    n_myo = int(np.count_nonzero(labels == LV_MYOCARDIUM))
    n_scar = int(np.count_nonzero(scar))
    per_segment = {}
    for k in range(1, 17):
        in_seg = aha == k
        n = int(np.count_nonzero(in_seg))
        per_segment[str(k)] = float(100.0 * np.count_nonzero(scar & in_seg) / n) if n else 0.0
    truth = {
        "scar_burden_pct": float(100.0 * n_scar / n_myo) if n_myo else 0.0,
        "scar_ml": float(n_scar * voxel_ml), "lv_myo_ml": float(n_myo * voxel_ml),
        "scar_segments": list(spec.scar_segments), "scar_transmurality": float(spec.scar_transmurality),
        "segment_scar_pct": per_segment,
    }
    return LgePhantom(image=image.astype(np.float32), labels=labels, scar_mask=scar, aha_segments=aha,
                      spacing_mm=spacing, truth=truth, spec=spec)
