"""The shipped short-axis segmenter: card, weights integrity, inference contract, accuracy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from cardiomics.errors import InputError, ModelError
from cardiomics.hashing import sha256_file
from cardiomics.models.card import ModelCard, load_card, verify_card
from cardiomics.models.segmenter import CARD_PATH, Segmenter, load_segmenter

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CARDIOMICS_DATA", REPO.parent / "shared" / "data"))
MODEL_DIR = CARD_PATH.parent


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * np.logical_and(a, b).sum() / s


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return load_segmenter()


@pytest.fixture(scope="module")
def phantom():
    mod = pytest.importorskip("cardiomics.synthetic.phantom")
    return mod.make_phantom(mod.PhantomSpec())


# ------------------------------------------------------------------------------------------ card


def test_card_validates_against_schema():
    card = load_card(CARD_PATH)
    assert isinstance(card, ModelCard)
    raw = json.loads(CARD_PATH.read_text())
    assert ModelCard.model_validate(raw) == card
    assert card.labels == {
        "0": "background",
        "1": "rv_cavity",
        "2": "lv_myocardium",
        "3": "lv_cavity",
    }
    assert card.parameters > 0
    split = card.training_data.split
    assert split.validation and split.train
    assert not set(split.train) & set(split.validation), (
        "a patient on both sides of the split"
    )
    assert "Bernard" in " ".join(card.licence.citations) and "2514" in " ".join(
        card.licence.citations
    )
    assert "research" in card.licence.weights.lower()
    # published ACDC validation metrics for every structure x phase
    for s in ("lv", "myo", "rv"):
        for ph in ("ed", "es"):
            assert (
                0.0 <= card.metric("dice", structure=s, phase=ph, dataset="ACDC") <= 1.0
            )
            assert (
                card.metric("hd95", structure=s, phase=ph, dataset="ACDC") is not None
            )
    assert card.metric("lvef_error", statistic="mae", dataset="ACDC") is not None
    groups = {r.group for m in card.metrics for r in m.records if r.group}
    assert groups == {"DCM", "HCM", "MINF", "NOR", "RV"}
    with pytest.raises(ModelError):
        card.metric("no_such_metric")


def test_weights_sha256_matches_card():
    card = load_card(CARD_PATH)
    weights = MODEL_DIR / card.weights_file
    assert sha256_file(weights) == card.weights_sha256
    assert weights.stat().st_size < 8_000_000, "weights should stay a few MB"
    verify_card(MODEL_DIR)


def test_verify_card_rejects_tampered_weights(tmp_path):
    shutil.copy(CARD_PATH, tmp_path / "card.json")
    data = bytearray((MODEL_DIR / "weights.pt").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(ModelError) as exc:
        verify_card(tmp_path)
    assert exc.value.code == "weights_mismatch"
    (tmp_path / "weights.pt").unlink()
    with pytest.raises(ModelError):
        verify_card(tmp_path)
    (tmp_path / "card.json").write_text("{}")
    with pytest.raises(ModelError):
        load_card(tmp_path)


# ------------------------------------------------------------------------------------ inference


def test_load_segmenter_is_cached(seg):
    assert load_segmenter() is seg
    assert seg.ref == {
        "id": seg.card.id,
        "version": seg.card.version,
        "weights_sha256": seg.card.weights_sha256,
    }


def test_predict_contract_on_phantom_frame(seg, phantom):
    frame = phantom.images[0]
    spacing = phantom.spacing_mm[1:]
    labels, tta = seg.predict(frame, spacing)
    assert tta is None
    assert labels.shape == frame.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    assert {1, 2, 3} <= set(np.unique(labels))
    labels2, tta = seg.predict(frame[3:6], spacing, n_tta=2)
    assert labels2.shape == (3, *frame.shape[1:])
    assert tta.shape == (2, 3, *frame.shape[1:]) and tta.dtype == np.uint8
    # intensity range does not matter
    scaled, _ = seg.predict(frame * 37.0 + 5.0, spacing)
    assert _dice(scaled == 3, labels == 3) > 0.97
    with pytest.raises(InputError):
        seg.predict(np.zeros((4, 4)), spacing)
    with pytest.raises(InputError):
        seg.predict(frame, (0.0, 1.5))


def test_dice_on_phantom_high(seg, phantom):
    es = int(phantom.truth["es_frame"])
    s = phantom.images.shape[1]
    stack = np.concatenate([phantom.images[0], phantom.images[es]])
    ref = np.concatenate([phantom.labels[0], phantom.labels[es]])
    pred, _ = seg.predict(stack, phantom.spacing_mm[1:], n_slices=s)
    assert _dice(pred == 3, ref == 3) >= 0.9
    assert _dice(pred == 2, ref == 2) >= 0.75
    assert _dice(pred == 1, ref == 1) >= 0.75
    # the centre given explicitly gives the same answer as the automatic one
    centre = seg.find_centre(stack, phantom.spacing_mm[1:], n_slices=s)
    pred2, _ = seg.predict(stack, phantom.spacing_mm[1:], centre=centre, n_slices=s)
    assert _dice(pred2 == 3, pred == 3) > 0.95


# ------------------------------------------------------------------------------------ real data


@pytest.mark.slow
def test_acdc_validation_lv_dice():
    if not (DATA_DIR / "acdc" / "cases.csv").is_file():
        pytest.skip(f"ACDC data not found at {DATA_DIR} (set CARDIOMICS_DATA)")
    from cardiomics.models.segmenter.evaluate import evaluate

    card = load_card(CARD_PATH)
    val = card.training_data.split.validation
    assert not set(val) & set(card.training_data.split.train)
    res = evaluate(DATA_DIR, patients=val[::3])  # 5 of the 15 validation patients
    assert res["overall"]["dice_lv_ed"]["mean"] >= 0.9
    assert res["overall"]["dice_lv_es"]["mean"] >= 0.8


def _toy_volume() -> np.ndarray:
    """Two slices: LV disc with a hole, myocardial ring, RV crescent, a stray LV island and a far RV speck."""
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 22)
    sl = np.zeros((40, 40), np.uint8)
    sl[(r >= 7) & (r < 10)] = 2
    sl[r < 7] = 3
    sl[19:21, 21:23] = 0  # hole in the cavity
    sl[(np.hypot(yy - 20, xx - 8) < 6) & (sl == 0)] = 1
    sl[1:3, 37:39] = 3  # 4-pixel LV island: below 20 mm^2 at 1.5 mm
    vol = np.stack([sl, sl])
    vol[1, 30:32, 2:4] = 1  # small far RV speck, only in slice 1
    return vol


@pytest.mark.parametrize("offset", [(0, 0), (5, 60), (80, 3), (-1, -1)])
def test_postprocess_same_result_wherever_the_heart_lies(offset):
    from cardiomics.models.segmenter.postprocess import postprocess_volume

    vol = _toy_volume()
    ref = postprocess_volume(vol)
    # the cleaned toy volume: hole filled, island and speck removed, structures kept
    assert ref[0, 19, 21] == 3 and ref[0, 1, 37] == 0 and ref[1, 30, 2] == 0
    assert (ref == 1).sum() > 50 and (ref == 2).sum() > 100
    big = np.zeros((2, 128, 120), np.uint8)
    r0, c0 = (offset[0] if offset[0] >= 0 else 128 - 40), (offset[1] if offset[1] >= 0 else 120 - 40)
    big[:, r0 : r0 + 40, c0 : c0 + 40] = vol
    out = postprocess_volume(big)
    assert np.array_equal(out[:, r0 : r0 + 40, c0 : c0 + 40], ref)
    outside = np.ones(big.shape, bool)
    outside[:, r0 : r0 + 40, c0 : c0 + 40] = False
    assert not out[outside].any()


def test_neighbour_channels_stay_inside_each_volume():
    import torch

    from cardiomics.models.segmenter import preprocess as pp

    x = torch.arange(1.0, 7.0).view(6, 1, 1, 1)  # two volumes of three slices
    got = pp.with_neighbours(x, 3)[:, :, 0, 0].tolist()
    assert got == [[0, 1, 2], [1, 2, 3], [2, 3, 0], [0, 4, 5], [4, 5, 6], [5, 6, 0]]
    assert pp.with_neighbours(x, 3, torch.tensor([3]))[:, :, 0, 0].tolist() == [[0, 4, 5]]


def test_widened_2d_net_starts_as_the_2d_net():
    import torch

    from cardiomics.models.segmenter.net import UNet2D
    from cardiomics.models.segmenter.train import _inflate_input

    torch.manual_seed(0)
    net2d = UNet2D(base=4, depth=2).eval()
    net3 = UNet2D(base=4, depth=2, in_channels=3).eval()
    net3.load_state_dict(_inflate_input(net2d.state_dict(), 1, 3))
    x = torch.rand(2, 1, 32, 32)
    ctx = torch.cat([torch.rand(2, 1, 32, 32), x, torch.rand(2, 1, 32, 32)], 1)
    assert torch.allclose(net2d(x), net3(ctx), atol=1e-5)
