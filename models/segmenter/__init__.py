"""Short-axis cine CMR segmentation (LV cavity, LV myocardium, RV cavity) with a validated model card.

Public API::

    from cardiomics.models.segmenter import load_segmenter
    seg = load_segmenter()                       # cached per process; verifies the weights' SHA-256
    labels, tta = seg.predict(images, (1.6, 1.6), n_tta=0, n_slices=S)

``images`` is (N, R, C) with any intensity range; callers pass every slice of every frame of one study
at once (N = T * S, frame-major). The crop centre is found ONCE per call from the whole stack (a coarse
full-field-of-view pass on up to 4 evenly spaced images), so one call should hold one study position;
pass ``centre=(row, col)`` (input pixel coordinates) to reuse a known centre, e.g. for further calls on
the same study. ``n_slices`` tells the post-processing where volumes start (3D connected components
per frame); without it the stack is cleaned as one volume.

Labels come back on the input grid, ACDC values: 0 background, 1 RV cavity, 2 LV myocardium,
3 LV cavity. With ``n_tta > 0`` the second element holds ``n_tta`` label stacks under deterministic
test-time augmentations (flip, rotation, scale, gamma), for an interval on volumes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from cardiomics.errors import InputError, ModelError
from cardiomics.models.card import ModelCard, load_card, verify_card

from . import preprocess as pp
from .net import UNet2D
from .postprocess import postprocess_stack

__all__ = ["CARD_PATH", "WEIGHTS_PATH", "Segmenter", "load_segmenter"]

MODEL_DIR = Path(__file__).resolve().parent
CARD_PATH = MODEL_DIR / "card.json"
WEIGHTS_PATH = MODEL_DIR / "weights.pt"
LABELS = {0: "background", 1: "rv_cavity", 2: "lv_myocardium", 3: "lv_cavity"}

log = structlog.get_logger("cardiomics.models.segmenter")

_BG_FILL = torch.tensor([1.0, 0.0, 0.0, 0.0])
_CHUNK = 32
_COARSE_MAX_IMAGES = 4
_COARSE_MAX_SIZE = 320


def _argmax(probs: torch.Tensor) -> torch.Tensor:
    """argmax over the class axis of (N, K, H, W); channels-last first (much faster on CPU)."""
    return probs.permute(0, 2, 3, 1).contiguous().argmax(-1)


def load_weights(path: str | Path) -> UNet2D:
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    net = UNet2D(**blob["config"])
    net.load_state_dict(
        {
            k: v.float() if v.is_floating_point() else v
            for k, v in blob["state_dict"].items()
        }
    )
    net.eval()
    _fold_batchnorm(net)
    # channels-last (NHWC) weights: oneDNN's CPU convolutions run ~1.5x faster than in NCHW
    return net.to(memory_format=torch.channels_last)


@torch.no_grad()
def _fold_batchnorm(net: torch.nn.Module) -> None:
    """Fold eval-mode BatchNorm into the preceding bias-free conv (same outputs, faster inference)."""
    for block in net.modules():
        if not isinstance(block, torch.nn.Sequential):
            continue
        mods = list(block)
        for i in range(len(mods) - 1):
            conv, bn = mods[i], mods[i + 1]
            if (
                isinstance(conv, torch.nn.Conv2d)
                and isinstance(bn, torch.nn.BatchNorm2d)
                and conv.bias is None
            ):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = torch.nn.Parameter(bn.bias - bn.running_mean * scale)
                block[i + 1] = torch.nn.Identity()


class Segmenter:
    """A loaded segmentation network plus its card. Thread-compatible for inference (no state changes)."""

    def __init__(self, net: UNet2D, card: ModelCard | None = None) -> None:
        self.net = net.eval()
        self.card = card
        # 2.5D networks (3 input channels) see each slice with its neighbours in the stack
        self.context = net.config["in_channels"] == 3

    @staticmethod
    def _work(x: torch.Tensor, sp: tuple[float, float]) -> torch.Tensor:
        """Normalised images on the working grid, (N, 1, H, W)."""
        return pp.to_work(pp.normalise(x)[:, None], sp)

    def _input(self, t: torch.Tensor, n_slices: int | None, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Network input from (N, 1, H, W) images: with the neighbouring slices as channels for a 2.5D net.
        Built after cropping, so the 3-channel copy is only ever crop-sized (or a few coarse images)."""
        if self.context:
            return pp.with_neighbours(t, n_slices, idx)
        return t if idx is None else t[idx]

    @property
    def ref(self) -> dict[str, str]:
        if self.card is None:
            return {"id": "segmenter-uncarded", "version": "dev", "weights_sha256": ""}
        return self.card.ref

    # ------------------------------------------------------------------------------------- internals
    @torch.no_grad()
    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities of (B, 1, H, W) images, H and W padded up to the network multiple."""
        m = self.net.multiple
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        out = []
        for i in range(0, x.shape[0], _CHUNK):
            chunk = x[i : i + _CHUNK].contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(self.net(chunk), 1).contiguous())
        return torch.cat(out)[..., :h, :w]

    def _centre_work(
        self, work: torch.Tensor, n_slices: int | None = None
    ) -> tuple[float, float] | None:
        """Heart centre (row, col) on the working grid from a coarse full-FOV pass.

        Runs on up to 4 images: mid-ventricular slices (20-80 % of the stack) of the first volume when
        ``n_slices`` is known, else spread over the middle 20-80 % of the whole stack.
        """
        n, _, h, w = work.shape
        span = n_slices if n_slices and n % n_slices == 0 else n
        idx = np.unique(
            np.linspace(
                0.2 * (span - 1), 0.8 * (span - 1), min(span, _COARSE_MAX_IMAGES)
            )
            .round()
            .astype(int)
        )
        x = self._input(work, n_slices, torch.from_numpy(idx))
        r_off = c_off = 0
        if h > _COARSE_MAX_SIZE or w > _COARSE_MAX_SIZE:
            x, (r_off, c_off) = pp.crop_around(x, (h / 2, w / 2), _COARSE_MAX_SIZE)
        lab = _argmax(self._probs(x)).numpy()
        heart = np.isin(lab, (2, 3)).sum(0)
        if heart.max() == 0:
            return None
        comp, ncomp = ndi.label(heart > 0)
        sizes = ndi.sum(heart, comp, index=np.arange(1, ncomp + 1))
        lv_comp = comp == (int(np.argmax(sizes)) + 1)
        rows, cols = np.nonzero(lv_comp)
        cr, cc = (
            float(np.average(rows, weights=heart[rows, cols])),
            float(np.average(cols, weights=heart[rows, cols])),
        )
        fg = (lab > 0).sum(0).astype(float)
        yy, xx = np.mgrid[: fg.shape[0], : fg.shape[1]]
        fg[(yy - cr) ** 2 + (xx - cc) ** 2 > 60**2] = 0  # within 90 mm of the LV
        if fg.sum() > 0:
            cr, cc = (
                float((yy * fg).sum() / fg.sum()),
                float((xx * fg).sum() / fg.sum()),
            )
        return (cr + r_off, cc + c_off)

    def _predict_work(self, crop: torch.Tensor, tta: dict | None) -> torch.Tensor:
        if tta is None:
            return self._probs(crop)
        fwd, bwd = pp.tta_theta(tta)
        b = crop.shape[0]
        grid = F.affine_grid(
            fwd.expand(b, 2, 3), tuple(crop.shape), align_corners=False
        )
        aug = F.grid_sample(
            crop, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        aug = aug.clamp(0, None).pow(tta["gamma"])
        probs = self._probs(aug)
        grid_b = F.affine_grid(
            bwd.expand(b, 2, 3), tuple(probs.shape), align_corners=False
        )
        back = F.grid_sample(
            probs, grid_b, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        back[:, 0] += 1.0 - back.sum(1)  # outside the augmented view: background
        return back

    def _to_input(
        self,
        probs: torch.Tensor,
        origin: tuple[int, int],
        work_hw: tuple[int, int],
        in_hw: tuple[int, int],
    ) -> np.ndarray:
        out = np.empty((probs.shape[0], *in_hw), dtype=np.uint8)
        for i in range(0, probs.shape[0], _CHUNK):
            canvas = pp.paste(probs[i : i + _CHUNK], origin, work_hw, _BG_FILL)
            if work_hw != in_hw:
                canvas = F.interpolate(
                    canvas, size=in_hw, mode="bilinear", align_corners=False
                )
            out[i : i + _CHUNK] = _argmax(canvas).numpy().astype(np.uint8)
        return out

    def _tta(self, labels, crop, origin, work_hw, in_hw, sp, n_tta, n_slices, postprocess, tta_volumes):
        """TTA label stacks; only the images of the chosen volumes go through the network again."""
        s = n_slices if n_slices and labels.shape[0] % n_slices == 0 else labels.shape[0]
        if tta_volumes is None:
            idx = np.arange(labels.shape[0])
        else:
            vols = sorted({int(v) for v in tta_volumes(labels.reshape(-1, s, *labels.shape[1:]))})
            idx = np.concatenate([np.arange(v * s, (v + 1) * s) for v in vols]) if vols else np.zeros(0, int)
        out = np.repeat(labels[None], n_tta, axis=0)
        if idx.size == 0:
            return out
        sel = crop[torch.from_numpy(idx)]
        for k, t in enumerate(pp.tta_transforms(n_tta)):
            lab_k = self._to_input(self._predict_work(sel, t), origin, work_hw, in_hw)
            out[k, idx] = postprocess_stack(lab_k, n_slices, sp) if postprocess else lab_k
        return out

    # ------------------------------------------------------------------------------------- public API
    def find_centre(
        self,
        images: np.ndarray,
        pixel_spacing_mm: tuple[float, float],
        n_slices: int | None = None,
    ) -> tuple[float, float]:
        """Heart centre (row, col) in input pixel coordinates for an (N, R, C) stack (coarse pass only)."""
        x, sp = self._check(images, pixel_spacing_mm)
        work = self._work(x, sp)
        c = self._centre_work(work, n_slices)
        if c is None:
            return ((x.shape[-2] - 1) / 2, (x.shape[-1] - 1) / 2)
        return self._work_to_input(c, tuple(work.shape[-2:]), tuple(x.shape[-2:]))

    @staticmethod
    def _work_to_input(c, work_hw, in_hw) -> tuple[float, float]:
        return (
            (c[0] + 0.5) * in_hw[0] / work_hw[0] - 0.5,
            (c[1] + 0.5) * in_hw[1] / work_hw[1] - 0.5,
        )

    @staticmethod
    def _input_to_work(c, work_hw, in_hw) -> tuple[float, float]:
        return (
            (c[0] + 0.5) * work_hw[0] / in_hw[0] - 0.5,
            (c[1] + 0.5) * work_hw[1] / in_hw[1] - 0.5,
        )

    @staticmethod
    def _check(
        images: np.ndarray, pixel_spacing_mm
    ) -> tuple[torch.Tensor, tuple[float, float]]:
        arr = np.asarray(images)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[0] == 0 or min(arr.shape[1:]) < 8:
            raise InputError(
                "bad_shape",
                f"Segmenter.predict takes (N, rows, cols) images, got shape {arr.shape}.",
                hint="Flatten frames and slices into N = T * S.",
            )
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise InputError("bad_values", "Images must be finite numbers.")
        try:
            sp = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
        except (TypeError, IndexError, ValueError) as exc:
            raise InputError(
                "bad_spacing",
                f"pixel_spacing_mm must be (row, col) in mm, got {pixel_spacing_mm!r}.",
            ) from exc
        if not (0.1 <= sp[0] <= 10 and 0.1 <= sp[1] <= 10):
            raise InputError(
                "bad_spacing",
                f"Implausible in-plane spacing {sp} mm (expected 0.1-10 mm).",
            )
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), sp

    def predict(
        self,
        images: np.ndarray,
        pixel_spacing_mm: tuple[float, float],
        n_tta: int = 0,
        *,
        centre: tuple[float, float] | None = None,
        n_slices: int | None = None,
        postprocess: bool = True,
        tta_volumes: Callable[[np.ndarray], Sequence[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Segment an (N, R, C) stack; returns (labels uint8 (N, R, C), TTA labels (n_tta, N, R, C) or None).

        ``centre``: heart centre (row, col) in input pixels; found from the stack when None.
        ``n_slices``: slices per volume for the 3D post-processing (N must be a multiple); None = one volume.
        ``tta_volumes``: given the labels as (volumes, n_slices, R, C), the volumes to augment (e.g. end-diastole
        and end-systole of a cine); the other volumes' TTA labels are the plain labels. None: augment all.
        """
        t0 = time.perf_counter()
        x, sp = self._check(images, pixel_spacing_mm)
        in_hw = tuple(x.shape[-2:])
        work = self._work(x, sp)
        work_hw = tuple(work.shape[-2:])
        if centre is None:
            c = self._centre_work(work, n_slices)
            if c is None:
                log.warning(
                    "segmenter.centre_not_found",
                    hint="no heart found in coarse pass; using image centre",
                )
                c = ((work_hw[0] - 1) / 2, (work_hw[1] - 1) / 2)
        else:
            c = self._input_to_work(centre, work_hw, in_hw)
        crop, origin = pp.crop_around(work, c, pp.CROP)
        crop = self._input(crop, n_slices)
        probs = self._predict_work(crop, None)
        if centre is None:
            # re-centre once if the fine pass puts the heart far from the crop centre
            fg = (_argmax(probs) > 0).sum(0).float()
            if fg.sum() > 0:
                yy, xx = torch.meshgrid(
                    torch.arange(pp.CROP), torch.arange(pp.CROP), indexing="ij"
                )
                dr = float((yy * fg).sum() / fg.sum()) - (pp.CROP // 2)
                dc = float((xx * fg).sum() / fg.sum()) - (pp.CROP // 2)
                if dr * dr + dc * dc > 16**2:
                    c = (c[0] + dr, c[1] + dc)
                    crop, origin = pp.crop_around(work, c, pp.CROP)
                    crop = self._input(crop, n_slices)
                    probs = self._predict_work(crop, None)
        labels = self._to_input(probs, origin, work_hw, in_hw)
        if postprocess:
            labels = postprocess_stack(labels, n_slices, sp)
        tta_out = None
        if n_tta and n_tta > 0:
            tta_out = self._tta(labels, crop, origin, work_hw, in_hw, sp, int(n_tta), n_slices, postprocess,
                                tta_volumes)
        log.debug(
            "segmenter.predict",
            n=int(x.shape[0]),
            n_tta=int(n_tta or 0),
            seconds=round(time.perf_counter() - t0, 3),
        )
        return labels, tta_out


@functools.lru_cache(maxsize=1)
def load_segmenter() -> Segmenter:
    """The shipped segmenter (weights verified against card.json), cached per process."""
    if not CARD_PATH.is_file() or not WEIGHTS_PATH.is_file():
        raise ModelError(
            "segmenter_missing",
            f"Segmenter weights or card missing in {MODEL_DIR}.",
            hint="Train with cardiomics.models.segmenter.train.train(...) or reinstall the package.",
        )
    verify_card(MODEL_DIR)
    card = load_card(CARD_PATH)
    return Segmenter(load_weights(WEIGHTS_PATH), card)
