"""Hiera clip features: one row per frame, dims per model, clips from the rolling buffer,
weights resolution (local file, offline error), bad options. Uses a tiny random Hiera."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from mulde.datasets.video import ArrayVideo
from mulde.errors import InputError, VideoError, WeightsError
from mulde.extractors import hiera as hx
from mulde.extractors import weights as wt
from mulde.extractors.clips import clip_centres, clip_indices
from mulde.extractors.registry import create_extractor

TINY = "hiera_tiny_test"
# Options that make the paper's models tiny (for weight-resolution tests of real names).
TINY_KWARGS = {"embed_dim": 8, "num_heads": 1, "stages": (1, 1, 1, 1), "input_size": (16, 32, 32)}


def video(n: int = 21, h: int = 40, w: int = 48, seed: int = 0) -> ArrayVideo:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 2 * t, axis=1) for t in range(n)])  # moving texture
    return ArrayVideo(frames)


class ShortReader:
    """Claims ``claimed`` frames in its header but decodes only the frames it holds."""

    def __init__(self, frames: np.ndarray, claimed: int, fail: bool = False) -> None:
        self.frames, self.n_frames, self.fail, self.path = frames, claimed, fail, "short.avi"

    def iter_chunks(self, chunk_size=64, start=0, stop=None):
        for s in range(0, len(self.frames), chunk_size):
            if self.fail and s > 0:
                raise VideoError(f"short.avi: decoder error at frame {s}")
            yield s, self.frames[s : s + chunk_size]


def tiny(**options) -> hx.HieraExtractor:
    opts = {"model": TINY, "random_init": True, "device": "cpu", "num_workers": 0, **options}
    return hx.HieraExtractor(**opts)


def test_dims_of_the_paper_models_from_their_configs():
    dims = {name: hx.model_dim(name) for name in hx.WEIGHTS}
    assert dims == {"hiera_base_16x224": 768, "hiera_base_plus_16x224": 896,
                    "hiera_large_16x224": 1152, "hiera_huge_16x224": 2048}
    assert hx.DEFAULT_MODEL == "hiera_large_16x224"
    assert hx.model_dim(TINY) == 64
    with pytest.raises(InputError, match="unknown Hiera model"):
        hx.model_dim("hiera_giant")


def test_our_configs_match_the_hiera_package_models(monkeypatch):
    """Our architecture table must give what hiera.<model>() builds, otherwise the published
    checkpoints would not load. The package's Hiera class is swapped for a recorder, so no
    big model is built."""
    package = hx._import_hiera()
    module = __import__("hiera.hiera", fromlist=["Hiera"])
    # Hiera.__init__ is wrapped (hiera.hfhub.has_config); its defaults live on the original.
    init = next(c.cell_contents for c in package.Hiera.__init__.__closure__
                if callable(c.cell_contents))
    defaults = {k: p.default for k, p in inspect.signature(init).parameters.items()
                if p.default is not inspect.Parameter.empty}
    seen: dict = {}
    monkeypatch.setattr(module, "Hiera", lambda **kwargs: seen.update(kwargs) or kwargs)
    for name in hx.WEIGHTS:
        seen.clear()
        getattr(package, name)()
        built = {**defaults, **seen}
        ours = hx.model_kwargs_for(name)
        assert {k: tuple(built[k]) if isinstance(built[k], list) else built[k] for k in ours} == (
            ours), name
    # The hub checkpoints' URLs come from the same package functions.
    assert hx.checkpoint_url("hiera_huge_16x224", "mae_k400").endswith("mae_hiera_huge_16x224.pth")


def test_one_feature_per_frame_with_documented_meta():
    reader = video(21)
    table = tiny(batch_size=4).extract(reader, progress=False)["hiera"]
    assert len(table) == reader.n_frames == 21
    assert table.frame_idx.tolist() == list(range(21))
    assert table.values.shape == (21, 64) and table.values.dtype == np.float32
    assert np.isfinite(table.values).all()
    assert table.meta["n_frames"] == 21 and table.meta["feature_type"] == "hiera"
    assert table.meta["dim"] == 64 and table.meta["model"] == TINY
    # The texture moves, so clips differ.
    assert np.abs(table.values[0] - table.values[10]).max() > 1e-4


def test_rows_are_the_embeddings_of_the_padded_clips():
    """The rolling buffer (small chunks, threads) must gather exactly clip_indices' frames."""
    reader = video(23)
    ext = tiny(chunk_size=5, batch_size=3, num_workers=2)
    table = ext.extract(reader, progress=False)["hiera"]
    frames = hx.preprocess_frames(reader.frames, ext.size)
    idx = clip_indices(np.array([0, 11, 22]), 23)
    expected = ext.embed_clips(frames[idx])
    np.testing.assert_allclose(table.values[[0, 11, 22]], expected, rtol=1e-4, atol=1e-5)
    # Edge clips really are padded: frame 0's clip repeats frame 0 nine times.
    assert idx[0].tolist().count(0) == 9


def test_clip_step_copies_the_nearest_clip():
    reader = video(21)
    full = tiny().extract(reader, progress=False)["hiera"].values
    table = tiny(clip_step=5).extract(reader, progress=False)["hiera"]
    values = table.values
    assert values.shape == (21, 64)
    for frame, centre in [(0, 0), (2, 0), (3, 5), (7, 5), (8, 10), (20, 20)]:
        np.testing.assert_allclose(values[frame], full[centre], rtol=1e-4, atol=1e-5)
    assert table.meta["clip_step"] == 5


def test_frame_stride_and_no_padding():
    reader = video(40)
    table = tiny(frame_stride=2, pad=False).extract(reader, progress=False)["hiera"]
    assert len(table) == 40
    # Without padding the first 16 frames share the first valid clip (centre 16 at stride 2).
    assert clip_centres(40, 1, 16, 2, pad=False)[0] == 16
    np.testing.assert_allclose(table.values[0], table.values[16])
    assert np.abs(table.values[16] - table.values[17]).max() > 1e-4


def test_short_video_without_padding_is_a_clear_error():
    with pytest.raises(InputError, match=r"video has 10 frames but one clip spans 16 frames"):
        tiny(pad=False).extract(video(10), progress=False)


def test_truncated_video_gives_one_row_per_decoded_frame():
    frames = video(20).frames
    table = tiny(chunk_size=8).extract(ShortReader(frames, claimed=30), progress=False)["hiera"]
    assert len(table) == 20 and table.meta["n_frames"] == 20
    assert table.meta["n_frames_header"] == 30
    ref = tiny().extract(ArrayVideo(frames), progress=False)["hiera"].values
    np.testing.assert_allclose(table.values, ref, rtol=1e-4, atol=1e-5)


def test_decoder_errors_surface_from_the_prefetch_thread():
    frames = video(20).frames
    with pytest.raises(VideoError, match="decoder error"):
        tiny(chunk_size=8, num_workers=2).extract(ShortReader(frames, 20, fail=True), progress=False)


def test_preprocessing_crops_the_centre_or_keeps_the_full_frame():
    frame = np.repeat(np.arange(200, dtype=np.uint8)[None, :, None], 100, axis=0)
    frame = np.repeat(frame, 3, axis=2)[None]  # value = x coordinate, 200x100
    crop = hx.preprocess_frames(frame, 32, "crop")
    full = hx.preprocess_frames(frame, 32, "full")
    assert crop.shape == full.shape == (1, 32, 32, 3)
    assert 45 <= crop.min() and crop.max() <= 155  # only the central 100 columns
    assert full.min() < 10 and full.max() > 190


def test_offline_missing_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MULDE_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as err:
        hx.load_hiera("hiera_large_16x224", cache=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert "vad weights download hiera_large_16x224" in msg and "--weights" in msg
    assert wt.cache_path("hiera_large_16x224", tmp_path) == (
        tmp_path / "weights" / "hiera_large_16x224.pth")
    with pytest.raises(WeightsError, match="vad weights download"):
        wt.download(["hiera_base_16x224"], cache=tmp_path)


def test_missing_weights_file_and_unpublished_model(tmp_path):
    with pytest.raises(WeightsError, match=r"nope\.pth does not exist"):
        hx.HieraExtractor(model=TINY, weights=str(tmp_path / "nope.pth"), device="cpu").load()
    with pytest.raises(WeightsError, match="no published weights"):
        hx.load_hiera(TINY, cache=tmp_path)


@pytest.mark.parametrize("hub_format", [False, True])
def test_local_weights_file_is_loaded(tmp_path, hub_format):
    torch.manual_seed(123)
    net = hx.build_hiera(TINY)
    state = net.state_dict()
    path = tmp_path / "tiny.pth"
    torch.save({"model_state": state} if hub_format else state, path)
    reader = video(17)
    ext = hx.HieraExtractor(model=TINY, weights=str(path), device="cpu", num_workers=0)
    got = ext.extract(reader, progress=False)["hiera"].values
    clips = hx.preprocess_frames(reader.frames, 32)[clip_indices(np.array([5]), 17)]
    x = (torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255 - 0.45) / 0.225
    with torch.no_grad():
        expected = net(x).numpy()
    np.testing.assert_allclose(got[5:6], expected, rtol=1e-4, atol=1e-5)
    rand = tiny().extract(reader, progress=False)["hiera"].values
    assert np.abs(rand - got).max() > 1e-3  # really the file's weights, not the random init
    assert ext.config()["weights"] == wt.sha256_file(path)  # named by content, not path


def test_local_file_in_the_cache_comes_before_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("MULDE_OFFLINE", "1")
    torch.manual_seed(7)
    state = hx.build_hiera(TINY).state_dict()
    # A head from the K400 checkpoint is dropped (replaced by identity).
    state = {**state, "head.projection.weight": torch.zeros(400, 64),
             "head.projection.bias": torch.zeros(400)}
    torch.save({"model_state": state}, wt.cache_path("hiera_base_16x224", tmp_path))
    net = hx.load_hiera("hiera_base_16x224", cache=tmp_path, model_kwargs=TINY_KWARGS)
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_mae_only_checkpoint_loads_without_decoder(tmp_path):
    state = hx.build_hiera(TINY).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("norm.")}
    state["decoder_embed.weight"] = torch.zeros(4, 4)
    state["mask_token"] = torch.zeros(1, 1, 4)
    torch.save({"model_state": state}, tmp_path / "mae.pth")
    net = hx.load_hiera(TINY, weights=tmp_path / "mae.pth")
    assert torch.equal(net.norm.bias, torch.zeros(64))


def test_bad_or_mismatched_weights_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        hx.load_hiera(TINY, weights=bad)
    other = hx.build_hiera(TINY, {"embed_dim": 16}).state_dict()
    torch.save(other, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not fit hiera_tiny_test"):
        hx.load_hiera(TINY, weights=tmp_path / "other.pth")


def test_bad_options_are_input_errors():
    with pytest.raises(InputError, match="unknown hiera option 'clip_length'"):
        hx.HieraExtractor(clip_length=8)
    with pytest.raises(InputError, match="clips of 16 frames"):
        hx.HieraExtractor(model=TINY, clip_len=8)
    with pytest.raises(InputError, match="unknown device"):
        hx.HieraExtractor(model=TINY, device="tpu0")
    with pytest.raises(InputError, match="unknown checkpoint"):
        hx.checkpoint_url("hiera_large_16x224", "in1k")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            hx.HieraExtractor(model=TINY, device="cuda")


def test_registry_and_config_key():
    ext = create_extractor("hiera", model=TINY, random_init=True, device="cpu")
    assert ext.name == "hiera" and ext.feature_types == ("hiera",)
    assert hx.HieraExtractor.config_class is hx.HieraConfig  # how the pipeline finds options
    cfg = ext.config()
    assert cfg["model"] == TINY and cfg["clip_len"] == 16 and cfg["precision"] == "fp32"
    assert "batch_size" not in cfg and "device" not in cfg  # runtime knobs are not in the key
    assert hx.HieraExtractor().cfg.model == "hiera_large_16x224"  # building options loads nothing
    assert hx.checkpoint_url("hiera_large_16x224").endswith("/hiera_large_16x224.pth")


def test_real_ucsd_video_streams_through_the_prefetch_threads(shared_data):
    from mulde.datasets.video import open_video

    folder = shared_data / "ucsd_ped2" / "testing" / "frames" / "01"
    with open_video(folder) as reader:
        table = tiny(num_workers=2, batch_size=16).extract(reader, progress=False)["hiera"]
        assert len(table) == reader.n_frames > 100
    assert table.values.shape == (reader.n_frames, 64) and np.isfinite(table.values).all()
