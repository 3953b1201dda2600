"""The synthetic benchmark: decodable, labelled as its manifest says, and deterministic."""

from __future__ import annotations

import csv
import json

import decord
import numpy as np
import pytest

from mulde.datasets import get_dataset, open_video
from mulde.datasets.synthetic import ANOMALY_KINDS, generate_synthetic, synthetic_labels
from mulde.errors import DatasetError, InputError


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "bench", seed=0, n_train=2,
                              n_test=4, n_frames=120)


def test_layout_counts_and_decoding(bench):
    train = sorted((bench / "train").glob("*.avi"))
    test = sorted((bench / "test").glob("*.avi"))
    assert [p.name for p in train] == ["train_00.avi", "train_01.avi"]
    assert len(test) == 4
    for path in train + test:
        assert len(decord.VideoReader(str(path))) == 120  # decord reads back the exact count
        with open_video(path) as r:
            assert (r.n_frames, r.width, r.height, r.fps) == (120, 160, 120, 25.0)


def test_labels_match_manifest_and_cover_each_kind(bench):
    manifest = json.loads((bench / "synthetic.json").read_text())
    ds = get_dataset("synthetic", bench)
    kinds = set()
    with (bench / "test" / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for item in ds.videos("test"):
        entry = manifest["videos"][item.video_id]
        want = synthetic_labels(manifest, item.video_id)
        assert np.array_equal(item.labels, want)
        assert 0 < want.sum() < len(want)
        assert want[0] == 0  # the video starts with a normal stretch
        assert entry["anomalous_frames"] == int(want.sum())
        assert sum(int(r["end_frame"]) - int(r["start_frame"]) + 1
                   for r in rows if r["video"] == item.video_id) == int(want.sum())
        kinds |= {a["kind"] for a in entry["anomalies"]}
    assert kinds == set(ANOMALY_KINDS)
    assert all(v.labels is None for v in ds.videos("train"))


def test_manifest_describes_each_anomaly(bench):
    manifest = json.loads((bench / "synthetic.json").read_text())
    found = {a["kind"]: a for e in manifest["videos"].values() for a in e["anomalies"]}
    assert found["fast"]["speed_px_per_frame"] >= 5.0  # normal walkers stay below 2.5
    assert found["wrong_direction"]["direction"] in ("up", "down")
    assert found["loitering"]["stop_frames"] > 0
    assert found["large_object"]["end_frame"] > found["large_object"]["start_frame"]


def test_deterministic_by_seed(tmp_path):
    a = generate_synthetic(tmp_path / "a", seed=3, n_train=1, n_test=1, n_frames=80)
    b = generate_synthetic(tmp_path / "b", seed=3, n_train=1, n_test=1, n_frames=80)
    c = generate_synthetic(tmp_path / "c", seed=4, n_train=1, n_test=1, n_frames=80)
    frames = {k: open_video(d / "test" / "test_00.avi").get(range(80)) for k, d in
              (("a", a), ("b", b), ("c", c))}
    assert np.array_equal(frames["a"], frames["b"])
    assert not np.array_equal(frames["a"], frames["c"])
    assert (a / "test" / "labels.csv").read_text() == (b / "test" / "labels.csv").read_text()


def test_bad_arguments_and_non_empty_root(tmp_path):
    with pytest.raises(InputError, match="n_frames"):
        generate_synthetic(tmp_path / "x", n_frames=10)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "other.txt").write_text("not a benchmark")
    with pytest.raises(DatasetError, match="not empty"):
        get_dataset("synthetic", tmp_path / "y")
