"""The ``activity`` frame type derived from flow-grid rows (``scoring.derived: [activity]``)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mulde.cli import main
from mulde.errors import InputError
from mulde.extractors.base import FeatureTable
from mulde.extractors.flowgrid import FlowGridConfig, feature_names
from mulde.pipeline.derived import ACTIVITY_COLUMNS, ACTIVITY_FLOOR, activity_columns, apply_derived

LAYOUT = {"grid": [2, 2], "n_bins": 8, "mag_edges": [0.25, 0.5, 1.0, 2.0, 4.0], "log1p": True}


def _grid_rows(n: int) -> np.ndarray:
    return np.zeros((n, 4 * (8 + 5)), np.float32)


def test_activity_columns_measure_how_much_moves_and_how_fast():
    rows = _grid_rows(2)  # frame 0: nothing moves
    cell = rows[1].reshape(4, 13)  # frame 1: half of cell 2 moves right at 1.5 px/frame
    cell[2, 0] = math.log1p(0.5 * 1.5)  # orientation bin 0: mean speed over the cell's pixels
    cell[2, 8 + 2] = 0.5  # magnitude bin [1, 2): half of the pixels
    cols = activity_columns(rows, LAYOUT)
    assert cols.shape == (2, len(ACTIVITY_COLUMNS)) and cols.dtype == np.float32
    floor = math.log(ACTIVITY_FLOOR)
    np.testing.assert_allclose(cols[0], [floor, floor, floor, 0.0], rtol=1e-6)
    np.testing.assert_allclose(cols[1], [math.log(ACTIVITY_FLOOR + 0.125), math.log(ACTIVITY_FLOOR + 0.125),
                                         math.log(ACTIVITY_FLOOR + 0.75 / 4), 0.25], rtol=1e-5)
    slow = _grid_rows(1)
    slow.reshape(4, 13)[0, 8] = 1.0  # every pixel of one cell at 0.25-0.5 px/frame: moving, not fast
    m, f = activity_columns(slow, LAYOUT)[0, :2]
    assert m == pytest.approx(math.log(ACTIVITY_FLOOR + 0.25), rel=1e-5) and f == pytest.approx(floor, rel=1e-6)


def test_activity_layout_matches_the_flow_grid_feature_names():
    cfg = FlowGridConfig()
    names = feature_names(cfg)
    rows = np.zeros((1, len(names)), np.float32)
    rows[0, names.index("r3c3_mag4")] = 1.0  # the last cell, all of it above 4 px/frame
    moving, fast, _, spread = activity_columns(rows, {"grid": list(cfg.grid), "n_bins": cfg.n_bins,
                                                      "mag_edges": list(cfg.mag_edges), "log1p": cfg.log1p})[0]
    assert moving == pytest.approx(fast) and math.exp(moving) - ACTIVITY_FLOOR == pytest.approx(1 / 16, rel=1e-5)
    assert spread == pytest.approx(1 / 16)


def test_apply_derived_adds_an_activity_table_beside_the_flow_grid_only():
    flowgrid = FeatureTable(frame_idx=np.arange(5), values=_grid_rows(5), meta={"n_frames": 5, **LAYOUT})
    boxes = np.array([[0, 0, 10, 20], [1, 0, 11, 20]], np.float32)
    velocity = FeatureTable(frame_idx=np.arange(2), values=np.ones((2, 3), np.float32), boxes=boxes,
                            object_id=np.zeros(2), meta={"n_frames": 5})
    out = apply_derived({"velocity": velocity, "flowgrid": flowgrid}, ["activity"], 12)
    assert out["velocity"] is velocity and out["flowgrid"] is flowgrid  # activity alone adds no columns
    act = out["activity"]
    np.testing.assert_array_equal(act.frame_idx, flowgrid.frame_idx)
    assert act.dim == 4 and act.meta["columns"] == ACTIVITY_COLUMNS and act.boxes is None
    both = apply_derived({"velocity": velocity, "flowgrid": flowgrid}, ["track", "activity"], 12)
    assert both["velocity"].dim == 3 + 4 and "activity" in both
    assert "activity" not in apply_derived({"velocity": velocity}, ["activity"], 12)
    old = FeatureTable(frame_idx=np.arange(5), values=_grid_rows(5), meta={"n_frames": 5})
    with pytest.raises(InputError, match="re-extract the flowgrid"):
        apply_derived({"flowgrid": old}, ["activity"], 12)


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory):
    """A frame-centric run with the activity type, on a tiny synthetic dataset."""
    from mulde.datasets.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("activity")
    data = root / "data"
    generate_synthetic(data, seed=0, n_train=3, n_test=1, n_frames=60)
    common = ["--dataset", "folder", "--root", str(data), "--cache", str(root / "cache"), "--features", "frames"]
    run = root / "run"
    assert main(["train", *common, "--derived", "activity", "--preset", "test", "--steps", "30",
                 "--out", str(run), "-q"]) == 0
    return root, data, common, run


def test_a_run_with_activity_trains_evaluates_and_scores_it(frames_run):
    _, data, _, run = frames_run
    info = json.loads((run / "run.json").read_text())
    assert info["feature_types"] == ["flowgrid", "activity"]
    assert (run / "activity.safetensors").is_file() and info["stats"]["activity"]["std"] > 0
    assert main(["evaluate", "--model", str(run), "-q"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics["per_type"]) == {"flowgrid", "activity"}
    assert 0.0 <= metrics["per_type"]["activity"]["micro_auc"] <= 1.0


def test_a_frame_centric_run_cross_fits_both_frame_level_types(frames_run, cross_fitted):
    # flow grid and activity are both one row per frame: with crossfit_folds their statistics
    # come from models that did not see the video, as beside objects
    root, _, common, run = frames_run
    log, on = cross_fitted([*common, "--derived", "activity", "--preset", "test", "--steps", "30"],
                           root / "run-crossfit", 3)
    off = json.loads((run / "run.json").read_text())["stats"]
    for t in ("flowgrid", "activity"):
        assert f"{t}: statistics from 3 models" in log
        assert on[t]["n_rows"] == off[t]["n_rows"] and on[t]["train_z"] != off[t]["train_z"]


def test_live_scoring_scores_activity_and_sees_a_frozen_feed(frames_run):
    """The stepper's flow-grid rows carry the grid layout, so ``vad watch`` derives activity rows
    too; a feed that freezes (one frame repeated) is less usual to them than the moving scene."""
    from mulde.datasets.video import open_video
    from mulde.extractors.stepwise import make_stepper
    from mulde.pipeline.derived import activity_table
    from mulde.pipeline.online import OnlineScorer
    from mulde.pipeline.run import load_run

    _, data, _, run = frames_run
    video = sorted((data / "test").glob("*.avi"))[0]
    with open_video(video) as reader:
        frames = reader.get(range(reader.n_frames))
    feed = list(frames[:20]) + [frames[19]] * 20
    scorer = OnlineScorer(load_run(run))
    stream = scorer.new_stream()
    results = [scorer.step(stream, i, frame) for i, frame in enumerate(feed)]
    assert all(set(r.per_type) == {"flowgrid", "activity"} for r in results)
    rows = make_stepper(scorer.extractor).step(0, frames[0])["flowgrid"]
    assert activity_table(rows).dim == len(ACTIVITY_COLUMNS)
    moving = [r.per_type["activity"] for r in results[16:20]]
    frozen = [r.per_type["activity"] for r in results[-4:]]  # the 16-frame window holds no motion
    assert np.isfinite(moving + frozen).all() and min(frozen) > max(moving), (moving, frozen)


def test_activity_without_a_flow_grid_is_one_error_line(frames_run, tmp_path, capsys):
    root, data, _, _ = frames_run
    code = main(["train", "--dataset", "folder", "--root", str(data), "--cache", str(root / "cache"),
                 "--features", "objects", "--proposals", "motion", "--deep", "off", "--derived", "activity",
                 "--out", str(tmp_path / "run"), "-q"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "flowgrid" in err[-1], err
    assert not (tmp_path / "run").exists()
