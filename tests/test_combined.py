"""Object features plus frame-level flow-grid features in one run (``extractor.frame_features``),
and the rules that combine feature types (``scoring.combine``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mulde.cli import main
from mulde.errors import InputError
from mulde.extractors.base import FeatureTable
from mulde.pipeline.evaluate import auc_metrics
from mulde.pipeline.run import load_run
from mulde.pipeline.score import (
    TypeStats,
    combine,
    conformal_surprise,
    frame_max,
    held_out_spread,
    prepare_tables,
    smooth,
    surprise,
    type_stats,
)

N_FRAMES = 60
COMBINED = ["--features", "objects", "--proposals", "motion", "--opt", "motion_min_area=20", "--deep", "off",
            "--frame-features", "flowgrid", "--feature-types", "velocity", "flowgrid"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


# ----------------------------------------------------------------------------- combine rules


def _stats(mean: float, std: float, center: float | None = None, scale: float | None = None) -> TypeStats:
    return TypeStats(mean=mean, std=std, fill=mean - 3 * std, n_rows=100, held_center=center, held_scale=scale)


def test_holdout_rules_keep_an_overfitted_flat_type_from_drowning_the_other():
    # "obj" separates frame 3 (the anomaly); "frm" carries no signal, and its model fitted the
    # training frames so tightly that unseen normal frames spread over many training std.
    obj = np.array([0.0, 0.2, -0.1, 6.0, 0.1])
    frm = np.array([8.0, 16.0, 4.0, 9.0, 12.0])
    stats = {"obj": _stats(0.0, 1.0, center=0.0, scale=1.5), "frm": _stats(0.0, 1.0, center=9.0, scale=5.0)}
    per_type = {"obj": obj, "frm": frm}
    for rule in ("sum", "max"):
        assert np.argmax(combine(per_type, stats, rule)) == 1, rule  # the flat type's noise wins
    for rule in ("holdout_sum", "holdout_max"):
        assert np.argmax(combine(per_type, stats, rule)) == 3, rule
    # holdout z: (training z - held-out median) / (held-out p99 - median)
    np.testing.assert_allclose(combine({"frm": frm}, stats, "holdout_sum"), (frm - 9.0) / 5.0)


def test_holdout_rule_on_a_run_without_held_out_statistics_is_one_clear_error():
    with pytest.raises(InputError, match="held-out normal frames"):
        combine({"a": np.zeros(3)}, {"a": _stats(0.0, 1.0)}, "holdout_sum")
    with pytest.raises(InputError, match="unknown combine rule"):
        combine({"a": np.zeros(3)}, {"a": _stats(0.0, 1.0)}, "median")


def test_held_out_spread_is_median_and_tail_of_training_z():
    rng = np.random.default_rng(0)
    frames = [rng.normal(5.0, 2.0, 4000), rng.normal(5.0, 2.0, 4000)]
    spread = held_out_spread(frames, _stats(1.0, 2.0))  # z = (s - 1) / 2 ~ N(2, 1)
    assert spread["held_center"] == pytest.approx(2.0, abs=0.05)
    assert spread["held_scale"] == pytest.approx(2.326, abs=0.1)  # N(0, 1)'s 99th percentile
    np.testing.assert_allclose(spread["held_quantiles"][50], 2.0, atol=0.05)
    assert spread["held_quantiles"][90] == pytest.approx(2.0 + 1.2816, abs=0.05)
    assert spread["held_tail"] == pytest.approx(0.4733, abs=0.03)  # N(0, 1)'s mean excess over its q90
    flat = held_out_spread([np.full(50, 3.0)], _stats(1.0, 2.0))
    assert (flat["held_center"], flat["held_scale"], flat["held_tail"]) == (1.0, 1.0, 1.0)


def test_surprise_is_minus_log10_of_the_held_out_tail_fraction_and_keeps_rising_past_it():
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 1.0, 20000)
    spread = held_out_spread([z], _stats(0.0, 1.0))
    q90, tail = spread["held_quantiles"][90], spread["held_tail"]
    at = np.array([-5.0, 0.0, q90, q90 + tail * np.log(10.0), 50.0])
    s = surprise(at, spread["held_quantiles"], tail)
    np.testing.assert_allclose(s[:4], [0.0, np.log10(2.0), 1.0, 2.0], atol=0.01)
    assert s[4] > 40  # beyond every held-out frame it still orders frames
    grid = np.linspace(-4, 10, 500)
    assert np.all(np.diff(surprise(grid, spread["held_quantiles"], tail)) >= 0)


def test_holdout_tail_keeps_a_heavy_tailed_type_from_drowning_the_other():
    # "frm" carries no signal and its unseen normal frames are heavy-tailed (log-normal z): one
    # normal test frame (1) sits at its held-out 99.9th percentile. "obj" marks the anomaly (3)
    # at 3 of its held-out spreads (7 std). Linear units let frm's rare-but-normal extreme win.
    rng = np.random.default_rng(2)
    held_obj, held_frm = rng.normal(0.0, 1.0, 5000), rng.lognormal(0.0, 2.0, 5000)
    stats = {}
    for name, held in (("obj", held_obj), ("frm", held_frm)):
        st = _stats(0.0, 1.0)
        for k, v in held_out_spread([held], st).items():
            setattr(st, k, v)
        stats[name] = st
    obj = np.array([0.0, 0.3, -0.2, 3.0 * stats["obj"].held_scale, 0.5])
    frm = np.array([1.0, float(np.quantile(held_frm, 0.999)), 0.5, 1.2, 2.0])
    per_type = {"obj": obj, "frm": frm}
    assert np.argmax(combine(per_type, stats, "holdout_sum")) == 1
    assert np.argmax(combine(per_type, stats, "holdout_tail")) == 3
    # one type alone keeps its linear held-out units (no ties among its normal frames)
    np.testing.assert_allclose(combine({"frm": frm}, stats, "holdout_tail"), combine({"frm": frm}, stats, "holdout_sum"))


def test_conformal_surprise_is_minus_log10_of_the_conformal_p_value_and_grows_slowly_past_the_max():
    frames = [np.arange(1.0, 1001.0)]  # 1000 distinct training frame scores 1..1000
    st = type_stats(frames, np.arange(1.0, 1001.0))
    z = (np.array([0.0, 500.0, 991.0, 1000.0]) - st.mean) / st.std
    # (1 + frames scoring higher) / (n + 1): 1001/1001, 501/1001, 10/1001, 1/1001
    np.testing.assert_allclose(conformal_surprise(z, st), -np.log10([1.0, 501 / 1001, 10 / 1001, 1 / 1001]),
                               atol=0.01)
    spread = 1000.0 - np.quantile(np.arange(1.0, 1001.0), 0.99)
    far = (np.array([1000.0 + spread, 1000.0 + 99 * spread, 1e9]) - st.mean) / st.std
    np.testing.assert_allclose(conformal_surprise(far, st)[:2], np.log10(1001) + np.log10([2.0, 100.0]), atol=1e-6)
    assert conformal_surprise(far, st)[2] < 12  # a billion adds about 6, never a billion
    grid = np.linspace(-5, 5, 1000)
    assert np.all(np.diff(conformal_surprise(grid, st)) >= 0)
    ties = type_stats([np.r_[np.zeros(900), np.arange(1.0, 101.0)]], np.zeros(3))  # 900 empty frames at 0
    zero = (0.0 - ties.mean) / ties.std
    assert conformal_surprise(np.array([zero]), ties)[0] == pytest.approx(-np.log10(101 / 1001), abs=1e-9)


def test_conformal_keeps_a_type_with_huge_normal_spikes_from_outvoting_the_others():
    # "spiky" carries no signal but puts one normal test frame (1) at 50 std, far beyond its
    # training max; "a" and "b" both mark the anomaly (3) beyond their training 99.9th percentile.
    rng = np.random.default_rng(3)
    train = {"a": rng.normal(0.0, 1.0, 2000), "b": rng.normal(0.0, 1.0, 2000), "spiky": rng.normal(0.0, 1.0, 2000)}
    stats = {t: type_stats([v], v) for t, v in train.items()}
    per_type = {"a": np.array([0.1, 0.0, -0.3, 3.3, 0.2]), "b": np.array([-0.2, 0.1, 0.4, 3.3, 0.0]),
                "spiky": np.array([0.0, 50.0, 0.1, 0.3, -0.1])}
    assert np.argmax(combine(per_type, stats, "sum")) == 1
    assert np.argmax(combine(per_type, stats, "conformal")) == 3
    with pytest.raises(InputError, match="training-frame curve"):
        combine({"a": np.zeros(3)}, {"a": _stats(0.0, 1.0)}, "conformal")


def test_combine_levels_max_keeps_a_blind_frame_type_from_adding_noise_to_the_objects():
    # Frames 0-5 are normal, 6-7 anomalous: the objects (velocity + pose, complementary) see both
    # anomalies; the flow grid is blind to them (a stop: its stillest, most "normal" frames) and
    # spreads its usual noise over the normal frames.
    rng = np.random.default_rng(0)
    train = {t: rng.normal(0.0, 1.0, 4000) for t in ("velocity", "pose", "flowgrid")}
    stats = {t: type_stats([v], v) for t, v in train.items()}
    per_type = {"velocity": np.array([0.5, 0.1, 1.2, 0.8, 0.3, 1.0, 2.5, 2.6]),
                "pose": np.array([0.2, 1.3, 0.4, 0.9, 1.1, 0.6, 2.4, 2.3]),
                "flowgrid": np.array([2.0, 1.1, 3.2, 0.7, 2.2, 1.9, -3.0, -3.0])}
    labels = np.r_[np.zeros(6), np.ones(2)]
    auc = {lv: auc_metrics({"v": combine(per_type, stats, "conformal", lv)}, {"v": labels})["micro_auc"]
           for lv in ("sum", "max")}
    assert auc["max"] == 1.0 and auc["sum"] < 0.9, auc
    s = {t: conformal_surprise((v - stats[t].mean) / stats[t].std, stats[t]) for t, v in per_type.items()}
    np.testing.assert_allclose(combine(per_type, stats, "conformal", "max"),
                               np.maximum(s["velocity"] + s["pose"], s["flowgrid"]))
    np.testing.assert_allclose(combine(per_type, stats, "conformal", "sum"), s["velocity"] + s["pose"] + s["flowgrid"])
    objects = {t: per_type[t] for t in ("velocity", "pose")}  # one level only: the levels rule changes nothing
    np.testing.assert_array_equal(combine(objects, stats, "conformal", "max"), combine(objects, stats, "conformal", "sum"))
    frames = {"flowgrid": per_type["flowgrid"], "activity": per_type["pose"]}
    stats["activity"] = stats["pose"]
    np.testing.assert_array_equal(combine(frames, stats, "conformal", "max"), combine(frames, stats, "conformal", "sum"))
    with pytest.raises(InputError, match="combine_levels"):
        combine(per_type, stats, "conformal", "mean")


def test_runs_trained_before_combine_levels_keep_one_sum(tmp_path):
    from mulde.pipeline.run import Run, run_config

    def levels(config: dict) -> str:
        run = Run(folder=tmp_path, config=config, extractor="objects", extractor_key="k", feature_types=("velocity",),
                  stats={}, detectors={}, info={})
        return run_config(run).scoring.combine_levels

    assert levels({"scoring": {"combine": "conformal"}}) == "sum"
    assert levels({"scoring": {"combine": "conformal", "combine_levels": "max"}}) == "max"


@pytest.mark.parametrize("folds", [2, 5])
def test_out_of_fold_frames_come_from_models_that_did_not_see_the_video(folds):
    # five videos far apart: a nearest-neighbour model scores its own training rows 0 and a video
    # it did not see at the (standardised) distance to another video's rows
    from mulde.config import resolve_config
    from mulde.detector.registry import make_detector
    from mulde.pipeline.train import _out_of_fold_frames

    rng = np.random.default_rng(0)
    tables = [FeatureTable(frame_idx=np.arange(20 + v), values=10.0 * v + rng.uniform(0, 0.5, (20 + v, 3)),
                           meta={"n_frames": 20 + v, "feature_type": "flowgrid"}) for v in range(5)]
    cfg = resolve_config({"detector": "knn", "device": "cpu"})
    frames = _out_of_fold_frames(cfg, tables, "flowgrid", folds, progress=False)
    assert [len(f) for f in frames] == [20, 21, 22, 23, 24]
    assert min(f.min() for f in frames) > 0.5
    seen = make_detector("knn").fit(np.concatenate([t.values for t in tables]))
    assert max(seen.score_samples(t.values).max() for t in tables) < 0.1
    again = _out_of_fold_frames(cfg, tables, "flowgrid", folds, progress=False)
    for a, b in zip(frames, again):
        np.testing.assert_array_equal(a, b)


def test_a_boxless_frame_table_scores_per_frame_and_passes_track_and_derived_steps_untouched():
    frame = FeatureTable(frame_idx=np.arange(5), values=np.arange(10, dtype=np.float32).reshape(5, 2),
                         meta={"n_frames": 5, "feature_type": "flowgrid"})
    np.testing.assert_array_equal(frame_max(frame, np.arange(5.0), 5, fill=-1.0), np.arange(5.0))
    boxes = np.array([[0, 0, 10, 20], [1, 0, 11, 20], [2, 0, 12, 20]], np.float32)
    velocity = FeatureTable(frame_idx=np.arange(3), values=np.ones((3, 4), np.float32), boxes=boxes,
                            object_id=np.zeros(3), meta={"n_frames": 5})
    out = prepare_tables({"velocity": velocity, "flowgrid": frame}, track_window=2, derived=("track", "position"))
    assert out["flowgrid"] is frame
    assert out["velocity"].dim > velocity.dim  # the object rows did get their columns


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize("args, words", [
    (["--frame-features", "flowgird"], ["extractor.frame_features", "flowgird"]),
    (["--opt", "scoring.combine=median"], ["scoring.combine", "median"]),
    (["--features", "frames", "--frame-features", "flowgrid"], ["frame_features", "features: frames"]),
])
def test_bad_combination_options_are_one_line(tmp_path, capsys, args, words):
    (tmp_path / "train").mkdir()
    code = main(["train", "--dataset", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "run"), *args,
                 "-q"])
    assert code == 2
    line = _error_line(capsys)
    assert all(w in line for w in words), line
    assert not (tmp_path / "run").exists()


def test_frame_types_left_out_of_feature_types_is_one_line(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    from mulde.config import resolve_config
    from mulde.pipeline.train import feature_types_for

    cfg = resolve_config({"frame_features": ["flowgrid"], "feature_types": ["velocity"]})
    with pytest.raises(InputError, match="leaves them out"):
        feature_types_for(cfg, ("velocity", "pose"), ("flowgrid",))
    assert feature_types_for(resolve_config({"frame_features": ["flowgrid"]}), ("velocity",), ("flowgrid",)) == \
        ("velocity", "flowgrid")


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """A tiny synthetic dataset, extracted and trained once with velocity + flowgrid."""
    from mulde.datasets.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("combined")
    data = root / "data"
    generate_synthetic(data, seed=0, n_train=3, n_test=2, n_frames=N_FRAMES)
    common = ["--dataset", "folder", "--root", str(data), "--cache", str(root / "cache"), *COMBINED]
    assert main(["extract", *common, "-q"]) == 0
    run = root / "run"
    assert main(["train", *common, "--preset", "test", "--steps", "40", "--combine", "holdout_sum",
                 "--out", str(run), "-q"]) == 0
    return root, data, common, run


@pytest.mark.slow
def test_each_extractor_is_cached_under_its_own_key(combined, capsys):
    root, _, common, run = combined
    info = json.loads((run / "run.json").read_text())
    keys = [info["extractor_key"]] + [fe["key"] for fe in info["frame_extractors"]]
    assert keys[0].startswith("objects-") and keys[1].startswith("flowgrid-") and len(set(keys)) == 2
    (dataset,) = (root / "cache" / "features").iterdir()
    assert sorted(p.name for p in dataset.iterdir()) == sorted(keys)
    for key, ftype in zip(keys, ("velocity", "flowgrid")):
        files = sorted(p.name for p in (dataset / key / "train").glob("*.npz"))
        assert len(files) == 3 and all(f.endswith(f".{ftype}.npz") for f in files), files
    assert main(["extract", *common, "-q"]) == 0
    assert capsys.readouterr().out.count("0 videos extracted") == 4  # both extractors, both splits: no work


@pytest.mark.slow
def test_combined_run_trains_evaluates_and_scores(combined, tmp_path):
    _, data, _, run = combined
    info = json.loads((run / "run.json").read_text())
    assert info["feature_types"] == ["velocity", "flowgrid"]
    for t in ("velocity", "flowgrid"):
        assert (run / f"{t}.safetensors").is_file()
        assert info["stats"][t]["held_scale"] > 0 and np.isfinite(info["stats"][t]["held_center"])
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["extractor"]["frame_features"] == ["flowgrid"] and record["scoring"]["combine"] == "holdout_sum"
    assert record["extractor"]["n_bins"] == 8 and record["extractor"]["proposals"] == "motion"  # both rebuilt

    assert main(["evaluate", "--model", str(run), "-q"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics["per_type"]) == {"velocity", "flowgrid"} and metrics["combine"] == "holdout_sum"
    assert 0.0 <= metrics["micro_auc"] <= 1.0
    scores = pd.read_csv(run / "eval" / "scores.csv")
    assert len(scores) == 2 * N_FRAMES and {"score_velocity", "score_flowgrid"} <= set(scores.columns)
    assert np.isfinite(scores["score"]).all()

    video = sorted((data / "test").glob("*.avi"))[0]
    out = tmp_path / "one.csv"
    assert main(["score", str(video), "--model", str(run), "--out", str(out), "-q"]) == 0
    one = pd.read_csv(out)
    evaluated = scores[scores["video"] == video.stem]
    np.testing.assert_allclose(one["score"], evaluated["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one["score_flowgrid"], evaluated["score_flowgrid"], rtol=1e-5, atol=1e-6)

    # another rule on the same run: the same per-type scores, combined differently
    assert main(["evaluate", "--model", str(run), "--out", str(tmp_path / "max"), "--opt",
                 "scoring.combine=max", "-q"]) == 0
    other = pd.read_csv(tmp_path / "max" / "scores.csv")
    np.testing.assert_allclose(other["score_flowgrid"], scores["score_flowgrid"])
    assert not np.allclose(other["score"], scores["score"])
    # conformal: every run records its training-frame curve, so the rule needs no retrain
    for t in ("velocity", "flowgrid"):
        curve = info["stats"][t]
        assert np.all(np.diff(curve["train_z"]) > 0) and np.all(np.diff(curve["train_surprise"]) > 0)
    assert main(["evaluate", "--model", str(run), "--out", str(tmp_path / "conf"), "--opt",
                 "scoring.combine=conformal", "-q"]) == 0
    conf = pd.read_csv(tmp_path / "conf" / "scores.csv")
    assert np.isfinite(conf["score"]).all() and (conf["score"] >= 0).all()  # sums of -log10 p, p <= 1
    conf_metrics = json.loads((tmp_path / "conf" / "metrics.json").read_text())
    assert conf_metrics["combine"] == "conformal"
    # each type's AUC column is that type alone under the run's rule, smoothed like the total
    stats = load_run(run).stats
    sigma = conf_metrics["smoothing_sigma"]
    for t in ("velocity", "flowgrid"):
        per_video = {v: smooth(combine({t: g[f"score_{t}"].to_numpy()}, stats, "conformal"), sigma)
                     for v, g in conf.groupby("video", sort=False)}
        labels = {v: g["label"].to_numpy() for v, g in conf.groupby("video", sort=False)}
        expected = auc_metrics(per_video, labels)["micro_auc"]
        assert conf_metrics["per_type"][t]["micro_auc"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.slow
def test_changed_frame_features_are_refused(combined, tmp_path, capsys):
    _, data, _, run = combined
    assert main(["evaluate", "--model", str(run), "--out", str(tmp_path / "e"), "--opt", "n_bins=4", "-q"]) == 2
    assert "n_bins: 8 -> 4" in _error_line(capsys)
    video = sorted((data / "test").glob("*.avi"))[0]
    out = tmp_path / "c.csv"
    assert main(["score", str(video), "--model", str(run), "--causal", "--out", str(out),
                 "--opt", "extractor.frame_features=[]", "-q"]) == 2
    line = _error_line(capsys)
    assert "flowgrid" in line and "retrain" in line and not out.exists()


@pytest.mark.slow
def test_causal_scoring_computes_the_frame_level_type_beside_the_objects(combined, tmp_path):
    # vad score --causal / vad watch: the flow grid is stepped beside the objects, its clip
    # window trailing the frame, so from frame 15 on its causal score is the offline score of
    # the frame 7 earlier (the centred window of frame c is the trailing window of c + 7).
    # Both score on the CPU: with TF32 on a GPU, one row and a batch differ by up to a few %.
    _, data, _, run = combined
    video = sorted((data / "test").glob("*.avi"))[0]
    out = tmp_path / "causal.csv"
    cpu = ["--device", "cpu", "-q"]
    assert main(["score", str(video), "--model", str(run), "--causal", "--out", str(out), *cpu]) == 0
    causal = pd.read_csv(out)
    assert causal["frame"].tolist() == list(range(N_FRAMES))
    assert {"score_velocity", "score_flowgrid"} <= set(causal.columns) and np.isfinite(causal["score"]).all()
    assert main(["score", str(video), "--model", str(run), "--out", str(tmp_path / "offline.csv"), *cpu]) == 0
    offline = pd.read_csv(tmp_path / "offline.csv")
    np.testing.assert_allclose(causal["score_flowgrid"].to_numpy()[15:], offline["score_flowgrid"].to_numpy()[8:-7],
                               rtol=1e-3, atol=1e-5)
    assert np.ptp(causal["score_flowgrid"].to_numpy()[15:]) > 0  # a real series, not a constant fill
    fill = json.loads((run / "run.json").read_text())["stats"]["velocity"]["fill"]
    assert (~np.isclose(causal["score_velocity"], fill)).mean() > 0.5  # objects scored on the same frames


@pytest.mark.slow
def test_without_refit_the_held_out_statistics_are_the_run_models_own(combined):
    # alerts.refit=false keeps the probe (fitted without the held-out videos) as the run's
    # model: scoring the held-out videos with the saved models gives the recorded statistics.
    from mulde.config import resolve_config
    from mulde.detector.registry import load_detector
    from mulde.pipeline.extract import build_extractors, cache_for, load_tables, open_dataset
    from mulde.pipeline.score import TypeStats, prepare_tables
    from mulde.pipeline.threshold import split_calibration

    root, _, common, _ = combined
    run = root / "run-norefit"
    assert main(["train", *common, "--preset", "test", "--steps", "40", "--combine", "holdout_tail",
                 "--opt", "alerts.refit=false", "--out", str(run), "-q"]) == 0
    info = json.loads((run / "run.json").read_text())
    assert info["train_videos"] == 2 and info["calibration"]["held_out"] is True
    cfg = resolve_config(yaml.safe_load((run / "config.yaml").read_text()))
    ds = open_dataset(cfg)
    sc = cfg.scoring
    tables = [prepare_tables(tabs, sc.track_window, sc.derived, sc.derived_window)  # as training saw them
              for _, tabs in load_tables(ds, "train", build_extractors(cfg, ds), cache_for(cfg), progress=False)]
    held = [tables[k] for k in split_calibration(len(tables), 0.2, cfg.runtime.seed)]
    for t in ("velocity", "flowgrid"):
        det, st = load_detector(run / f"{t}.safetensors"), TypeStats(**info["stats"][t])
        frames = [frame_max(h[t], det.score_samples(h[t].values) if len(h[t]) else np.zeros(0), h[t].n_frames,
                            st.fill) for h in held]
        again = held_out_spread(frames, st)
        assert again["held_center"] == pytest.approx(st.held_center, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(again["held_quantiles"], st.held_quantiles, rtol=1e-5, atol=1e-6)
    assert main(["evaluate", "--model", str(run), "-q"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["combine"] == "holdout_tail" and 0.0 <= metrics["micro_auc"] <= 1.0


@pytest.mark.slow
def test_only_the_frame_level_type_is_cross_fitted(combined, cross_fitted):
    # The fixture's run has cross-fitting off (the default); with 4 folds (3: the run has 3
    # videos, the probe 2) the flowgrid statistics come from videos a model did not see and the
    # velocity statistics stay those of its training rows.
    root, _, common, run = combined
    fitted = root / "run-crossfit"
    log, on = cross_fitted([*common, "--preset", "test", "--steps", "40", "--combine", "holdout_sum"], fitted, 4)
    assert "flowgrid: statistics from 3 models" in log and "velocity: statistics" not in log
    off = json.loads((run / "run.json").read_text())["stats"]
    assert on["velocity"] == off["velocity"]
    assert on["flowgrid"]["train_z"] != off["flowgrid"]["train_z"]
    assert on["flowgrid"]["n_rows"] == off["flowgrid"]["n_rows"] == 3 * N_FRAMES
    assert main(["evaluate", "--model", str(fitted), "-q"]) == 0
    assert np.isfinite(pd.read_csv(fitted / "eval" / "scores.csv")["score"]).all()
