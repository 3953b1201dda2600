"""Unit tests of the pipeline pieces: config layers, feature tables, cache keys, frame scoring, AUCs."""

from __future__ import annotations

import numpy as np
import pytest

from mulde.config import config_hash, load_yaml, resolve_config, write_config
from mulde.errors import InputError
from mulde.extractors.base import FeatureTable
from mulde.pipeline.cache import FeatureCache, extractor_key
from mulde.pipeline.evaluate import auc_metrics
from mulde.pipeline.score import TypeStats, combine, frame_max, smooth, type_stats


def test_config_layers_later_wins(tmp_path):
    user = tmp_path / "c.yaml"
    user.write_text("beta: 0.5\nsmoothing-sigma: 9\nhidden: [64, 64]\n")
    cfg = resolve_config({"dataset": "ped2", "beta": 0.0, "root": "x", "preset": "paper"}, user)
    assert cfg.detector_options["beta"] == 0.0  # the flag beats the file
    assert cfg.scoring.smoothing_sigma == 9  # the file beats the dataset default (3)
    assert cfg.detector_options["hidden"] == (64, 64)  # the file beats the preset
    assert cfg.extractor.features == "objects" and cfg.detector_options["lr"] == pytest.approx(5e-4)  # ped2 file
    assert cfg.extractor_options["yolo_imgsz"] == 1280
    assert resolve_config({"dataset": "ped2", "lr": 3e-4, "preset": "cpu"}).detector_options["lr"] == pytest.approx(3e-4)
    cpu = resolve_config({"dataset": "ped2", "preset": "cpu"})
    assert cpu.detector_options["hidden"] == (512, 512) and cpu.detector_options["steps"] == 2000


def test_config_errors(tmp_path):
    with pytest.raises(InputError, match="preset"):
        resolve_config({"preset": "fast"})
    with pytest.raises(InputError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_yaml(bad)


def test_write_config_and_hash(tmp_path):
    path = write_config({"a": 1, "p": tmp_path}, tmp_path / "out")
    assert load_yaml(path) == {"a": 1, "p": str(tmp_path)}
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})


def _table(n_frames=5):
    return FeatureTable(frame_idx=[0, 0, 2, 4], values=np.arange(8, dtype=np.float32).reshape(4, 2),
                        boxes=np.ones((4, 4)), object_id=[0, 1, 0, 0],
                        meta={"n_frames": n_frames, "feature_type": "velocity"})


def test_feature_table_roundtrip_and_corrupt(tmp_path):
    t = _table()
    path = t.save(tmp_path / "v.velocity.npz")
    back = FeatureTable.load(path)
    np.testing.assert_array_equal(back.values, t.values)
    np.testing.assert_array_equal(back.boxes, t.boxes)
    assert back.meta == t.meta and back.n_frames == 5
    assert not list(tmp_path.glob("*.tmp"))
    path.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="corrupt.*--overwrite"):
        FeatureTable.load(path)
    with pytest.raises(InputError, match="3 frame indices but 2"):
        FeatureTable(frame_idx=[0, 1, 2], values=np.zeros((2, 3)))


def test_cache_paths_and_keys(tmp_path):
    cache = FeatureCache(tmp_path)
    assert extractor_key("objects", {"a": 1}) != extractor_key("objects", {"a": 2})
    assert extractor_key("objects", {"a": 1}) == extractor_key("objects", {"a": 1})
    key = extractor_key("objects", {"a": 1})
    assert not cache.has("ped2", key, "train", "01", ("velocity",))
    cache.save("ped2", key, "train", "01", {"velocity": _table()})
    assert cache.has("ped2", key, "train", "01", ("velocity",))
    assert not cache.has("ped2", key, "train", "01", ("velocity", "pose"))
    assert cache.load("ped2", key, "train", "01", ("velocity",))["velocity"].values.shape == (4, 2)


def test_frame_max_fills_empty_frames():
    t = _table()
    out = frame_max(t, np.array([1.0, 3.0, 2.0, -1.0]), 5, fill=-7.0)
    np.testing.assert_array_equal(out, [3.0, -7.0, 2.0, -7.0, -1.0])


def test_type_stats_and_combine():
    st = type_stats([np.array([1.0, 3.0, np.inf])], np.array([1.0, 3.0, 0.5]))
    assert st.fill == 0.5 and st.mean == pytest.approx(1.5)
    stats = {"a": TypeStats(0.0, 1.0, 0.0, 1), "b": TypeStats(10.0, 2.0, 0.0, 1)}
    one = combine({"a": np.array([-1.0, 2.0])}, stats, "sum")
    np.testing.assert_allclose(one, [-1.0, 2.0])  # a single type is not clipped
    two = combine({"a": np.array([-1.0, 2.0]), "b": np.array([14.0, 6.0])}, stats, "sum")
    np.testing.assert_allclose(two, [0.0 + 2.0, 2.0 + 0.0])


def test_smooth_preserves_constant_and_spreads_peak():
    np.testing.assert_allclose(smooth(np.full(20, 3.0), 3), 3.0)
    x = np.zeros(41)
    x[20] = 1
    y = smooth(x, 3)
    assert y.argmax() == 20 and y[20] < 1 and y[17] > 0 and y.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(smooth(x, 0), x)


def test_auc_metrics_macro_convention():
    labels = {"a": np.array([0, 0, 1, 1]), "b": np.array([1, 1, 1]), "c": np.array([0, 1, 0])}
    scores = {"a": np.array([0.1, 0.2, 0.9, 0.8]), "b": np.array([0.5, 0.5, 0.5]), "c": np.array([0.3, 0.1, 0.2])}
    m = auc_metrics(scores, labels)
    assert m["per_video_auc"] == {"a": 1.0, "c": 0.0}
    assert m["macro_auc"] == 0.5 and m["macro_excluded"] == ["b"] and m["macro_videos"] == 2
    assert 0 < m["micro_auc"] < 1 and m["n_frames"] == 10
    with pytest.raises(InputError, match="single class"):
        auc_metrics({"b": scores["b"]}, {"b": labels["b"]})


class _CountingExtractor:
    """A stand-in extractor: one row per frame; optionally interrupts on the k-th video."""

    name = "counting"
    feature_types = ("a", "b")

    def __init__(self, interrupt_at: int | None = None):
        self.calls, self.interrupt_at = 0, interrupt_at

    def config(self):
        return {"v": 1}

    def extract(self, reader, progress=True):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        n = len(reader)
        return {t: FeatureTable(np.arange(n), np.zeros((n, 2)), meta={"n_frames": n}) for t in self.feature_types}


def test_interrupted_extraction_resumes(tmp_path):
    from mulde.datasets.registry import get_dataset
    from mulde.datasets.synthetic import generate_synthetic
    from mulde.pipeline.extract import extract_split

    generate_synthetic(tmp_path / "data", seed=1, n_train=3, n_test=1, n_frames=60)
    ds = get_dataset("folder", tmp_path / "data")
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        extract_split(ds, "train", _CountingExtractor(interrupt_at=2), cache, progress=False)
    assert not list((tmp_path / "cache").rglob("*.tmp")), "an interrupted run left a half-written file"
    again = _CountingExtractor()
    summary = extract_split(ds, "train", again, cache, progress=False)
    assert (summary.computed, summary.skipped, again.calls) == (2, 1, 2)
    assert extract_split(ds, "train", _CountingExtractor(), cache, progress=False).computed == 0
    assert extract_split(ds, "train", _CountingExtractor(), cache, overwrite=True, progress=False).computed == 3


def test_label_length_mismatch_is_refused(tmp_path):
    from mulde.datasets.base import VideoItem
    from mulde.errors import DatasetError
    from mulde.pipeline.extract import _check_labels

    item = VideoItem("v", "test", tmp_path / "v.avi", labels=np.zeros(10, np.uint8))
    with pytest.raises(DatasetError, match="9 decodable frames but 10 labels"):
        _check_labels(item, {"a": FeatureTable(np.arange(9), np.zeros((9, 1)), meta={"n_frames": 9})})
