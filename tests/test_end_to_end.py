"""End to end on a tiny synthetic benchmark: extract -> train -> evaluate -> score, via the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mulde.cli import main
from mulde.datasets.synthetic import generate_synthetic
from mulde.datasets.video import open_video

pytestmark = pytest.mark.slow


N_FRAMES = 150
OBJECTS = ["--features", "objects", "--proposals", "motion", "--feature-types", "velocity",
           "--opt", "motion_min_area=20", "--opt", "velocity_extras=[magnitude, geometry]", "--deep", "off"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """8 normal training videos; 3 test videos: too fast, wrong direction, oversized object."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, seed=0, n_train=8, n_test=3, n_frames=N_FRAMES)
    return root


def _run(args: list[str]) -> None:
    assert main(args + ["-q"]) == 0, f"vad {' '.join(args)} failed"


# The offline flow-grid frame feature is weaker on this data (whole-frame statistics of a few
# small walkers; ~0.83 micro with MULDE) than per-object velocity (~0.95), hence two bars.
@pytest.mark.parametrize("features, min_auc", [(OBJECTS, 0.9), (OBJECTS + ["train:--track-window=2"], 0.9),
                                               (["--features", "frames", "--backbone", "flowgrid"], 0.7)],
                         ids=["objects-motion", "objects-tracklets", "frames-flowgrid"])
def test_extract_train_evaluate_score(synthetic, tmp_path, capsys, features, min_auc):
    train_only = [a.removeprefix("train:") for a in features if a.startswith("train:")]
    data = ["--dataset", "folder", "--root", str(synthetic), "--cache", str(tmp_path / "cache")]
    data += [a for a in features if not a.startswith("train:")]
    _run(["extract", *data])
    _run(["extract", *data])
    assert "0 videos extracted" in capsys.readouterr().out  # the rerun does no work

    run = tmp_path / "run"
    _run(["train", *data, *train_only, "--preset", "test", "--out", str(run)])
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["detector"]["hidden"] == [128, 128] and recorded["detector"]["preset"] == "test"
    if train_only:  # tracklets: the velocity model saw 3 more columns (track speed)
        assert recorded["scoring"]["track_window"] == 2
        from mulde.pipeline.run import load_run

        # 8 orientation bins + magnitude + 3 geometry columns, 3 track-speed columns, then the
        # folder file's 4 derived track columns
        assert recorded["scoring"]["derived"] == ["track"]
        assert load_run(run, device="cpu").detectors["velocity"].n_features_in_ == 19

    _run(["evaluate", "--model", str(run)])
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert min_auc < metrics["micro_auc"] <= 1.0, metrics["micro_auc"]
    assert 0.0 <= metrics["macro_auc"] <= 1.0
    assert metrics["dataset"] == "folder" and metrics["detector"] == "mulde"
    scores = pd.read_csv(run / "eval" / "scores.csv")
    assert list(scores.columns[:4]) == ["video", "frame", "score", "label"]
    assert len(scores) == metrics["n_frames"] == 3 * N_FRAMES
    assert np.isfinite(scores["score"]).all()
    assert (run / "eval" / "scores.png").stat().st_size > 1000
    assert (run / "eval" / "config.yaml").is_file()

    video = sorted((synthetic / "test").glob("*.avi"))[0]
    out = tmp_path / "one.csv"
    _run(["score", str(video), "--model", str(run), "--out", str(out), "--plot", str(tmp_path / "one.png"),
          "--overlay", str(tmp_path / "one.mp4")])
    one = pd.read_csv(out)
    assert len(one) == N_FRAMES and {"frame", "time_s", "score"} <= set(one.columns)
    evaluated = scores[scores["video"] == video.stem]["score"].to_numpy()
    np.testing.assert_allclose(one["score"].to_numpy(), evaluated, rtol=1e-5, atol=1e-6)
    with open_video(tmp_path / "one.mp4") as overlay:
        assert overlay.n_frames == N_FRAMES
    assert (tmp_path / "one.png").is_file()


def test_model_trained_on_other_features_is_refused(synthetic, tmp_path, capsys):
    data = ["--dataset", "folder", "--root", str(synthetic), "--cache", str(tmp_path / "cache"),
            "--features", "frames", "--backbone", "flowgrid"]
    _run(["train", *data, "--preset", "test", "--steps", "20", "--out", str(tmp_path / "run")])
    other = tmp_path / "other.yaml"
    other.write_text("n_bins: 4\n")  # a flow grid with other bins than the run was trained on
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--config", str(other), "-q"]) == 2
    err = capsys.readouterr().err
    assert "differ from the ones the run was trained on" in err and "n_bins: 8 -> 4" in err


def test_score_real_videos_including_the_truncated_one(synthetic, shared_data, tmp_path):
    """A model trained on the synthetic scenes scores real footage end to end (frame counts exact)."""
    data = ["--dataset", "folder", "--root", str(synthetic), "--cache", str(tmp_path / "cache"),
            "--features", "frames", "--backbone", "flowgrid"]
    _run(["train", *data, "--preset", "test", "--steps", "50", "--out", str(tmp_path / "run")])
    expected = {"opencv_vtest_480x360_h264.avi": 795, "crowd_topview_1280x720_h264.avi": 341,
                "car_traffic_640x360.mp4": 917}
    for name, n_frames in expected.items():
        out = tmp_path / f"{name}.csv"
        _run(["score", str(shared_data / "videos" / name), "--model", str(tmp_path / "run"), "--out", str(out)])
        frame = pd.read_csv(out)
        assert len(frame) == n_frames and np.isfinite(frame["score"]).all()
        assert frame["frame"].tolist() == list(range(n_frames))


def test_evaluate_an_unlabelled_test_split_writes_scores_without_auc(synthetic, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic, root)
    (root / "test" / "labels.csv").unlink()
    data = ["--dataset", "folder", "--root", str(root), "--cache", str(tmp_path / "cache"),
            "--features", "frames", "--backbone", "flowgrid"]
    _run(["train", *data, "--preset", "test", "--steps", "20", "--out", str(tmp_path / "run")])
    capsys.readouterr()
    _run(["evaluate", "--model", str(tmp_path / "run")])
    assert "no labels; scores only" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["micro_auc"] is None and len(metrics["unlabelled_videos"]) == 3
    scores = pd.read_csv(tmp_path / "run" / "eval" / "scores.csv")
    assert "label" not in scores.columns and len(scores) == 3 * N_FRAMES and np.isfinite(scores["score"]).all()
    assert (tmp_path / "run" / "eval" / "scores.png").stat().st_size > 1000
