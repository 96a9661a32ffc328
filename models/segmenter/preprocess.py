"""Pre-processing and augmentation for the short-axis segmenter.

Pipeline (the same at training and inference):

1. Intensity: per image (each 2D slice on its own), percentile normalisation: the 1st and 99th
   percentiles map to 0 and 1, then clip to [0, 1]. Works for any input range (uint8, float, DICOM
   stored values) and does not depend on how a caller groups slices into a stack.
2. Resampling: each image is resampled (bilinear, anti-aliased) to a fixed in-plane working spacing of
   ``WORK_SPACING_MM`` (1.5 mm). Labels go through one-hot bilinear + argmax.
3. Heart-centred crop: a ``CROP`` x ``CROP`` (128 x 128 = 192 mm) window around one centre per study
   stack. At training the centre is the centroid of the expert labels of the volume; at inference it
   is found automatically by a coarse full-field-of-view pass of the same network (see
   ``cardiomics.models.segmenter.Segmenter.find_centre``).

ACDC spacing: the shared ACDC copy lost its voxel spacing. ``acdc_nominal_spacing`` estimates the
in-plane spacing from the grid size, assuming a typical 375 mm field of view (256 px -> 1.46 mm,
224 px -> 1.67 mm, 512 px -> 0.73 mm), clipped to [0.65, 1.9] mm. ACDC spacings are 0.7-1.9 mm, so
the estimate is wrong by up to about +-20 %; the training scale augmentation (x0.75-1.33) covers that.
Dice and ejection fraction do not depend on spacing; HD95 in mm on ACDC is nominal (see evaluate.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

WORK_SPACING_MM = 1.5
CROP = 128  # inference crop at the working spacing (192 mm)
TRAIN_PATCH = 96  # training patches (144 mm): the network is fully convolutional
SOURCE = (
    224  # training slices are stored as SOURCE x SOURCE crops around the heart (336 mm)
)
ACDC_NOMINAL_FOV_MM = 375.0
ACDC_SLICE_SPACING_MM = (
    10.0  # nominal through-plane spacing used for ACDC HD95 (ACDC: 5-10 mm)
)


def acdc_nominal_spacing(shape: tuple[int, ...]) -> tuple[float, float]:
    """Nominal in-plane spacing (row, col) in mm for an ACDC image of ``shape`` (..., rows, cols)."""
    rows, cols = shape[-2], shape[-1]
    sp = float(np.clip(ACDC_NOMINAL_FOV_MM / max(rows, cols), 0.65, 1.9))
    return (sp, sp)


def normalise(images: torch.Tensor, lo: float = 1.0, hi: float = 99.0) -> torch.Tensor:
    """Per-image percentile normalisation of (N, R, C) or (N, 1, R, C) float images to [0, 1]."""
    flat = images.reshape(images.shape[0], -1).float()
    sample = flat[
        :, :: max(1, flat.shape[1] // 8192)
    ]  # a regular subsample is plenty for two percentiles
    q = torch.quantile(sample, torch.tensor([lo / 100, hi / 100]), dim=1)
    p_lo, p_hi = q[0], q[1]
    scale = (p_hi - p_lo).clamp_min(1e-6)
    shape = (-1,) + (1,) * (images.dim() - 1)
    out = (images.float() - p_lo.view(shape)) / scale.view(shape)
    return out.clamp_(0.0, 1.0)


def work_shape(
    shape_rc: tuple[int, int], spacing_mm: tuple[float, float]
) -> tuple[int, int]:
    """Grid size at the working spacing for an input grid ``shape_rc`` with ``spacing_mm``."""
    return (
        max(16, round(shape_rc[0] * spacing_mm[0] / WORK_SPACING_MM)),
        max(16, round(shape_rc[1] * spacing_mm[1] / WORK_SPACING_MM)),
    )


def to_work(images: torch.Tensor, spacing_mm: tuple[float, float]) -> torch.Tensor:
    """Resample (N, 1, R, C) images to the working spacing (bilinear, anti-aliased when shrinking)."""
    size = work_shape(tuple(images.shape[-2:]), spacing_mm)
    if size == tuple(images.shape[-2:]):
        return images
    shrink = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(
        images, size=size, mode="bilinear", align_corners=False, antialias=shrink
    )


def labels_to_work(
    labels: torch.Tensor, spacing_mm: tuple[float, float], n_classes: int = 4
) -> torch.Tensor:
    """Resample (N, R, C) integer labels to the working spacing (one-hot bilinear + argmax)."""
    size = work_shape(tuple(labels.shape[-2:]), spacing_mm)
    if size == tuple(labels.shape[-2:]):
        return labels.long()
    onehot = F.one_hot(labels.long(), n_classes).permute(0, 3, 1, 2).float()
    return F.interpolate(
        onehot, size=size, mode="bilinear", align_corners=False
    ).argmax(1)


def crop_around(
    x: torch.Tensor, centre: tuple[float, float], size: int
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Crop (..., H, W) to ``size`` x ``size`` around ``centre`` (row, col), zero-padding outside.

    Returns the crop and the (row, col) of its top-left corner in ``x`` coordinates (may be negative).
    """
    h, w = x.shape[-2:]
    r0 = round(centre[0]) - size // 2
    c0 = round(centre[1]) - size // 2
    pad = (max(0, -c0), max(0, c0 + size - w), max(0, -r0), max(0, r0 + size - h))
    if any(pad):
        x = F.pad(x, pad)
    rr, cc = r0 + pad[2], c0 + pad[0]
    return x[..., rr : rr + size, cc : cc + size], (r0, c0)


def paste(
    crop: torch.Tensor,
    origin: tuple[int, int],
    shape: tuple[int, int],
    fill: torch.Tensor,
) -> torch.Tensor:
    """Place a (N, K, S, S) crop at ``origin`` in a (N, K, *shape) canvas filled with ``fill`` (K,)."""
    n, k, s, _ = crop.shape
    canvas = fill.view(1, k, 1, 1).expand(n, k, *shape).clone()
    r0, c0 = origin
    rs, cs = max(0, r0), max(0, c0)
    re, ce = min(shape[0], r0 + s), min(shape[1], c0 + s)
    if re > rs and ce > cs:
        canvas[:, :, rs:re, cs:ce] = crop[:, :, rs - r0 : re - r0, cs - c0 : ce - c0]
    return canvas


def neighbour_index(n: int, n_slices: int | None) -> torch.Tensor:
    """(n, 2) indices of each image's previous and next slice within its volume (-1 beyond the stack ends).

    The stack holds ``n / n_slices`` consecutive volumes (one volume when ``n_slices`` is None or does not
    divide ``n``).
    """
    s = n_slices if n_slices and n % n_slices == 0 else n
    i = torch.arange(n)
    pos = i % s
    prev = torch.where(pos > 0, i - 1, torch.full_like(i, -1))
    nxt = torch.where(pos < s - 1, i + 1, torch.full_like(i, -1))
    return torch.stack([prev, nxt], 1)


def with_neighbours(x: torch.Tensor, n_slices: int | None, idx: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 1, H, W) slices -> (N, 3, H, W): previous slice, the slice, next slice (zeros beyond the ends).

    ``idx``: only these images (the neighbours still come from the whole stack).
    """
    nb = neighbour_index(x.shape[0], n_slices)
    if idx is None:
        idx = torch.arange(x.shape[0])
    padded = torch.cat([x, torch.zeros_like(x[:1])])  # index -1 reads the zero image
    return torch.cat([padded[nb[idx, 0]], x[idx], padded[nb[idx, 1]]], 1)


def label_centroid(labels: np.ndarray) -> tuple[float, float] | None:
    """(row, col) centroid of all foreground labels of a (S, R, C) or (R, C) stack."""
    fg = np.asarray(labels) > 0
    if not fg.any():
        return None
    counts = fg.reshape(-1, *fg.shape[-2:]).sum(0)
    rows, cols = np.nonzero(counts)
    w = counts[rows, cols]
    return (float(np.average(rows, weights=w)), float(np.average(cols, weights=w)))


# --------------------------------------------------------------------------------------- augmentation


def _affine(
    n: int,
    gen: torch.Generator,
    *,
    rot_deg: float,
    wide_p: float,
    scale: tuple[float, float],
    flip_p: float,
    shift_px: torch.Tensor,
    src: int,
    out: int,
) -> torch.Tensor:
    """Per-sample affine theta (N, 2, 3) mapping output-normalised to source-normalised coordinates."""
    wide = (
        torch.rand(n, generator=gen) < wide_p
    )  # mostly near-standard SAX orientation, sometimes any
    ang = (torch.rand(n, generator=gen) * 2 - 1) * torch.where(
        wide, math.pi, math.radians(rot_deg)
    )
    log_s = torch.empty(n).uniform_(
        math.log(scale[0]), math.log(scale[1]), generator=gen
    )
    s = torch.exp(log_s) * (out / src)  # >1 zooms out (more anatomy in the patch)
    flip = torch.where(torch.rand(n, generator=gen) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, 0, 2] = shift_px[:, 1] * 2 / src  # x (cols)
    theta[:, 1, 2] = shift_px[:, 0] * 2 / src  # y (rows)
    return theta


def augment_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    gen: torch.Generator,
    *,
    out: int = TRAIN_PATCH,
    far_p: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spatial + intensity augmentation of a batch of heart-centred source crops.

    images (B, C, SRC, SRC) float in [0, 1] (C = 1, or 3 with the neighbouring slices: every channel gets the
    same transform), labels (B, SRC, SRC) long, heart centroid at the centre.
    Returns (B, C, out, out) images and (B, out, out) labels. Spatial: rotation +-45 deg (p 0.75) or
    +-180 deg (p 0.25), scale x0.75-1.33 (covers the unknown ACDC spacing and heart size), left-right
    flip (p 0.3), translation
    +-20 px around the heart (p 0.8) or +-70 px (p 0.2, so the network sees non-cardiac anatomy for the
    coarse full-FOV pass). Intensity: multiplicative smooth bias field, gamma 0.6-1.6, contrast and
    brightness, blur or sharpen-free low-pass, Gaussian noise.
    """
    b, _, src, _ = images.shape
    near = (torch.rand(b, 2, generator=gen) * 2 - 1) * 20
    far = (torch.rand(b, 2, generator=gen) * 2 - 1) * 70
    shift = torch.where((torch.rand(b, 1, generator=gen) < far_p), far, near)
    theta = _affine(
        b,
        gen,
        rot_deg=45.0,
        wide_p=0.25,
        scale=(0.75, 1.33),
        flip_p=0.3,
        shift_px=shift,
        src=src,
        out=out,
    )
    grid = F.affine_grid(theta, (b, 1, out, out), align_corners=False)
    img = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    lab = F.grid_sample(
        labels[:, None].float(),
        grid,
        mode="nearest",
        padding_mode="zeros",
        align_corners=False,
    )
    lab = lab[:, 0].long()
    return intensity_augment(img, gen), lab


def intensity_augment(img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b, _, h, w = img.shape
    # smooth multiplicative bias field: exp of a random low-order polynomial
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"
    )
    basis = torch.stack([xx, yy, xx * yy, xx**2, yy**2])  # (5, h, w)
    coef = (torch.rand(b, 5, generator=gen) * 2 - 1) * 0.3
    on = (torch.rand(b, 1, generator=gen) < 0.6).float()
    img = img * torch.exp(torch.einsum("bk,khw->bhw", coef * on, basis))[:, None]
    # gamma
    gamma = torch.exp(
        torch.empty(b).uniform_(math.log(0.6), math.log(1.6), generator=gen)
    ).view(b, 1, 1, 1)
    img = img.clamp(0, None).pow(gamma)
    # contrast / brightness
    c = torch.empty(b, 1, 1, 1).uniform_(0.75, 1.25, generator=gen)
    br = torch.empty(b, 1, 1, 1).uniform_(-0.1, 0.1, generator=gen)
    img = img * c + br
    # occasional blur (partial-volume / low resolution look)
    blur = torch.rand(b, generator=gen) < 0.2
    if blur.any():
        k = torch.tensor([0.25, 0.5, 0.25])
        ch = img.shape[1]
        k2 = (k[:, None] * k[None, :]).view(1, 1, 3, 3).expand(ch, 1, 3, 3)
        img[blur] = F.conv2d(F.pad(img[blur], (1, 1, 1, 1), mode="replicate"), k2, groups=ch)
    # Gaussian noise
    sigma = torch.rand(b, 1, 1, 1, generator=gen) * 0.06
    img = img + sigma * torch.randn(img.shape, generator=gen)
    return img.clamp(-0.2, 1.5)


def tta_transforms(n_tta: int, seed: int = 0) -> list[dict]:
    """Deterministic test-time transforms: flip, rotation +-15 deg, scale x0.9-1.1, gamma 0.8-1.25."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_tta):
        out.append(
            {
                "flip": bool(k % 2 == 1),
                "rot_deg": float(rng.uniform(-15, 15)),
                "scale": float(np.exp(rng.uniform(np.log(0.9), np.log(1.1)))),
                "gamma": float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
            }
        )
    return out


def tta_theta(t: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (input->augmented sampling) and inverse 2x3 affine matrices for one TTA transform."""
    a = math.radians(t["rot_deg"])
    f = -1.0 if t["flip"] else 1.0
    s = t["scale"]
    m = torch.tensor(
        [
            [math.cos(a) * s * f, -math.sin(a) * s],
            [math.sin(a) * s * f, math.cos(a) * s],
        ]
    )
    inv = torch.linalg.inv(m)
    fwd = torch.cat([m, torch.zeros(2, 1)], 1)
    bwd = torch.cat([inv, torch.zeros(2, 1)], 1)
    return fwd, bwd
