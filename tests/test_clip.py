"""CLIP deep features: crops, random-init embeddings, and the weights contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mulde.errors import InputError, WeightsError
from mulde.extractors import clip as clip_mod
from mulde.extractors import weights as wt
from mulde.extractors.clip import ClipEncoder, crop_boxes, load_clip


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path):
    """Offline, and pretend the Hugging Face cache is empty whatever this machine holds."""
    monkeypatch.setenv("MULDE_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(wt, "hf_cached_file", lambda repo: None)


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    torch.manual_seed(0)
    return ClipEncoder(random_init=True, device="cpu", batch_size=2)


def test_crops_are_resized_boxes():
    frame = np.zeros((60, 80, 3), np.uint8)
    frame[10:30, 20:40] = (255, 0, 0)
    crops = crop_boxes(frame, np.array([[20, 10, 40, 30], [70, 50, 95, 70]], np.float32))
    assert crops.shape == (2, 224, 224, 3) and crops.dtype == np.uint8
    assert (crops[0, 5:-5, 5:-5] == (255, 0, 0)).all()  # exactly the red square
    assert (crops[1] == 0).all()  # box clipped to the frame


def test_random_init_embeddings(encoder):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 40, 80], [50, 20, 150, 60], [10, 10, 30, 30]], np.float32)
    emb = encoder(frame, boxes)
    assert emb.shape == (3, 512) and emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)
    assert not np.allclose(emb[0], emb[1])  # different crops, different embeddings
    np.testing.assert_allclose(encoder(frame, boxes[:1]), emb[:1], atol=1e-5)  # batch-independent
    assert encoder(frame, np.zeros((0, 4))).shape == (0, 512)
    with pytest.raises(InputError, match="crops"):
        encoder.embed_crops(np.zeros((1, 32, 32, 3), np.uint8))


def test_offline_missing_weights_is_one_clear_line(tmp_path):
    with pytest.raises(WeightsError) as err:
        load_clip(cache=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "clip_vit_b16" in msg and "--clip-weights" in msg
    assert not clip_mod.weights_available(cache=tmp_path)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(WeightsError, match="nothere.safetensors"):
        load_clip(weights=tmp_path / "nothere.safetensors")


def test_loads_local_weights_file(tmp_path):
    torch.manual_seed(1)
    saved = wt.save_state_dict(clip_mod._build(), wt.cache_path("clip_vit_b16", tmp_path))
    assert saved == tmp_path / "weights" / "clip_vit_b16.safetensors"
    assert clip_mod.weights_available(cache=tmp_path)
    assert wt.fetch("clip_vit_b16", cache=tmp_path) == saved  # already there: no hub
    torch.manual_seed(2)
    model = load_clip(cache=tmp_path)
    from safetensors.torch import load_file

    ref = load_file(str(saved))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ref[k])


def test_corrupt_weights_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="bad.safetensors"):
        load_clip(weights=bad)
