"""The typed run configuration: layers, checks, one-line errors, and the run folder's record."""

from __future__ import annotations

import json
import logging
import os
import stat

import numpy as np
import pandas as pd
import pytest
import yaml

from mulde.cli import main
from mulde.config import resolve_config
from mulde.datasets.synthetic import generate_synthetic
from mulde.errors import InputError

# Cheap object-centric features of the synthetic benchmark (motion blobs, no YOLO, no CLIP decision
# forced: deep stays "auto", so the run must record what auto decided).
OBJECTS = ["--features", "objects", "--proposals", "motion", "--feature-types", "velocity",
           "--opt", "motion_min_area=20"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic(root, seed=0, n_train=3, n_test=2, n_frames=60)
    return root


def _error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0]


# ----------------------------------------------------------------------------- each layer


@pytest.mark.parametrize("how", ["flag", "config", "opt"])
def test_typo_gives_one_line_with_a_suggestion(how, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    args = ["train", "--dataset", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "run"), "-q"]
    if how == "flag":
        args += ["--stpes", "3"]
    elif how == "config":
        cfg.write_text("presett: cpu\n")
        args += ["--config", str(cfg)]
    else:
        args += ["--opt", "sigma_lwo=0.01"]
    with pytest.raises(SystemExit) if how == "flag" else _nothing() as exc:
        code = main(args)
    code = exc.value.code if how == "flag" else code
    assert code == 2
    line = _error(capsys)
    expected = {"flag": "--steps", "config": "'preset'", "opt": "'sigma_low'"}[how]
    assert f"did you mean {expected}" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("how", ["flag", "config", "opt"])
def test_wrong_type_gives_one_line(how, tmp_path, capsys):
    args = ["train", "--dataset", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "run"), "-q"]
    if how == "flag":
        args += ["--lr", "fast"]
    elif how == "config":
        (tmp_path / "c.yaml").write_text("hidden: [wide, 512]\n")
        args += ["--config", str(tmp_path / "c.yaml")]
    else:
        args += ["--opt", "steps=1.5"]
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    line = _error(capsys)
    assert {"flag": "--lr", "config": "detector.hidden", "opt": "detector.steps"}[how] in line
    if how != "flag":
        assert ("--config" in line) == (how == "config") and ("--opt" in line) == (how == "opt")


@pytest.mark.parametrize("value", ["1", "-2"])
def test_a_bad_crossfit_fold_count_fails_before_any_work(value, tmp_path, capsys):
    args = ["train", "--dataset", "folder", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "run"),
            "--opt", f"scoring.crossfit_folds={value}", "-q"]
    assert main(args) == 2
    line = _error(capsys)
    assert f"scoring.crossfit_folds = {value}" in line and ">= 2" in line and "missing" not in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("opt,fragment", [("detector.ema_decay=2", "ema_decay must be in [0, 1)"),
                                          ("detector.lr_schedule=cosin", "lr_schedule must be one of"),
                                          ("detector.sigma_low=5", "sigma_low"),
                                          ("detector.readout=nll", "readout must be one of gmm, mean")])
def test_a_bad_detector_value_fails_before_any_work(opt, fragment, tmp_path, capsys):
    """Right type, wrong value: caught when the config resolves, not after feature extraction."""
    with pytest.raises(InputError, match="detector options"):
        resolve_config({"dataset": "folder", "root": str(tmp_path)}, opt=[tuple(opt.split("="))])
    args = ["train", "--dataset", "folder", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "run"),
            "--opt", opt, "-q"]
    assert main(args) == 2
    line = _error(capsys)
    assert fragment in line and "missing" not in line  # the options are checked before the data
    assert not (tmp_path / "run").exists()



def test_sigma_high_takes_a_number_or_auto(tmp_path, capsys):
    assert resolve_config({"sigma_high": "auto"}).detector_options["sigma_high"] == "auto"
    assert resolve_config({"sigma_high": "2.5"}).detector_options["sigma_high"] == 2.5
    with pytest.raises(InputError, match=r"detector.sigma_high = 'max'.*expected float \| 'auto'"):
        resolve_config({"sigma_high": "max"})
    args = ["train", "--dataset", "folder", "--root", str(tmp_path / "missing"), "--sigma-high", "maximum", "-q"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and "give a number or auto, got 'maximum'" in capsys.readouterr().err

class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_yaml_numbers_and_scalars_are_parsed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nunits: 512\nsmoothing_sigma: '2'\ndetector:\n  beta: 0\n")
    cfg = resolve_config({"dataset": "ped2"}, path)
    assert cfg.detector_options["lr"] == pytest.approx(1e-3)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.detector_options["hidden"] == (512,)  # a deprecated spelling, a scalar for a tuple
    assert cfg.scoring.smoothing_sigma == 2.0 and cfg.detector_options["beta"] == 0.0


def test_amp_is_ambiguous_and_namespaced_amp_leaves_the_features_alone():
    with pytest.raises(InputError, match="extractor.amp or detector.amp"):
        resolve_config({"amp": False})
    from mulde.pipeline.cache import extractor_key
    from mulde.pipeline.extract import build_extractor

    base = {"dataset": "folder", "features": "objects", "proposals": "motion", "device": "cpu"}
    plain = build_extractor(resolve_config(base))
    detector_amp = build_extractor(resolve_config(base, opt=[("detector.amp", True)]))
    assert extractor_key(plain.name, plain.config()) == extractor_key(detector_amp.name, detector_amp.config())
    assert resolve_config(base, opt=[("detector.amp", True)]).component_kwargs("detector", "mulde")["amp"] is True


def test_deprecated_spellings_work_and_warn(caplog):
    with caplog.at_level(logging.WARNING, logger="mulde"):
        cfg = resolve_config({"L": 8, "imgsz": 960, "clip_step": 4}, packaged=False)
    assert cfg.detector_options["n_levels"] == 8
    assert cfg.component_kwargs("extractor", "objects")["imgsz"] == 960
    assert cfg.component_kwargs("extractor", "flowgrid")["clip_step"] == 4
    assert "deprecated" in caplog.text


def test_dataset_name_is_case_insensitive_including_its_defaults(tmp_path):
    cfg = resolve_config({"dataset": "Folder", "root": str(tmp_path)})
    assert cfg.data.dataset == "folder" and cfg.extractor.features == "frames"
    with pytest.raises(InputError, match="did you mean 'ped2'"):
        resolve_config({"dataset": "pedd2"})


def test_object_datasets_add_the_flow_grid_with_unseen_video_statistics_except_ped2():
    for name in ("avenue", "ped1", "shanghaitech"):
        cfg = resolve_config({"dataset": name})
        assert cfg.extractor.features == "objects" and cfg.extractor.frame_features == ("flowgrid",)
        assert cfg.scoring.crossfit_folds == 4
        assert cfg.extractor_options["velocity_norm"] == "area"  # motion-box heights are unreliable (RESULTS.md)
        assert cfg.scoring.derived == ("track",)  # track columns see stopped objects (RESULTS.md)
        alone = resolve_config({"dataset": name}, opt=[("frame_features", [])])
        assert alone.extractor.frame_features == ()
        frames = resolve_config({"dataset": name, "features": "frames", "backbone": "hiera_large_16x224"})
        assert frames.extractor.frame_features == ()  # the dataset's additions are for object runs
        assert frames.scoring.derived == ()
        asked = resolve_config({"dataset": name, "features": "frames"}, opt=[("derived", ["position"])])
        assert asked.scoring.derived == ("position",)  # what the user asks for stays (train.py says why not)
    ped2 = resolve_config({"dataset": "ped2"})  # its objects measured better alone (RESULTS.md)
    assert ped2.extractor.frame_features == () and ped2.scoring.crossfit_folds == 0
    assert ped2.scoring.derived == ("track",)


def test_track_columns_come_with_object_runs_that_model_velocity(tmp_path):
    folder = {"dataset": "folder", "root": str(tmp_path)}
    assert resolve_config(folder).scoring.derived == ()  # frames by default
    assert resolve_config({**folder, "features": "objects"}).scoring.derived == ("track",)
    for flags in ({**folder, "features": "objects", "feature_types": ["pose"]},
                  {"dataset": "avenue", "feature_types": ["pose", "flowgrid"]}):
        assert resolve_config(flags).scoring.derived == ()  # no velocity rows to extend
    assert resolve_config({**folder, "features": "objects"}, opt=[("derived", [])]).scoring.derived == ()


def test_preset_auto_picks_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr("mulde.config.cuda_available", lambda: False)
    cfg = resolve_config({"dataset": "ped2"})
    assert cfg.detector.preset == "cpu" and cfg.detector_options["hidden"] == (512, 512)
    monkeypatch.setattr("mulde.config.cuda_available", lambda: True)
    assert resolve_config({"dataset": "ped2"}).detector.preset == "paper"
    assert resolve_config({"dataset": "ped2", "device": "cpu"}).detector.preset == "cpu"


def test_paper_preset_feeds_sigma_and_cpu_preset_log_sigma_unless_overridden():
    from mulde.pipeline.train import make_configured_detector

    paper = resolve_config({"dataset": "ped2", "preset": "paper", "device": "cpu"})
    assert make_configured_detector(paper).config.conditioning == "sigma"
    assert make_configured_detector(resolve_config({"dataset": "ped2", "preset": "cpu"})).config.conditioning == "log_sigma"
    mine = resolve_config({"dataset": "ped2", "preset": "paper"}, opt=[("conditioning", "log_sigma")])
    assert mine.detector_options["conditioning"] == "log_sigma"
    gmm = resolve_config({"dataset": "ped2", "preset": "paper", "detector": "gmm"})
    assert "conditioning" not in gmm.component_kwargs("detector", "gmm")  # GMM takes no σ input


def test_fps_of_the_dataset_file_is_used(tmp_path):
    from mulde.pipeline.extract import open_dataset

    (tmp_path / "train").mkdir()
    assert resolve_config({"dataset": "ped2"}).data.fps == 10
    assert open_dataset(resolve_config({"dataset": "folder", "root": str(tmp_path), "fps": 12.5})).default_fps == 12.5


def test_root_is_stored_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config({"root": "data"}).data.root == str(tmp_path / "data")


# ----------------------------------------------------------------------------- help and typos


def test_help_texts_give_the_per_dataset_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "frames for" in out and "folder" in out.split("frames for", 1)[1][:80]
    sigma = out.split("--smoothing-sigma", 2)[2][:200]
    assert "folder" in sigma and "7 for" in sigma
    with pytest.raises(SystemExit):
        main(["info", "--help"])
    info = capsys.readouterr().out
    assert "ped2, ped1" in info and "the dataset's folder" in info


def test_command_typo_suggests(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["trian"])
    assert exc.value.code == 2 and "did you mean 'train'" in _error(capsys)


def test_toy_accepts_a_config(tmp_path, capsys):
    path = tmp_path / "toy.yaml"
    path.write_text("steps: 30\nhidden: [16, 16]\n")
    assert main(["toy", "--config", str(path)]) == 0
    assert "steps: 30" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the run folder


def _train(synthetic, tmp_path, *extra: str) -> list[str]:
    data = ["--dataset", "folder", "--root", str(synthetic), "--cache", str(tmp_path / "cache"), *OBJECTS]
    assert main(["train", *data, "--preset", "test", "--steps", "30", "--out", str(tmp_path / "run"), "-q", *extra]) == 0
    return data


@pytest.mark.slow
def test_run_records_decisions_and_survives_new_clip_weights(synthetic, tmp_path, monkeypatch):
    """Train without CLIP weights, put weights in the cache, evaluate: the run's scores, unchanged."""
    monkeypatch.setenv("MULDE_CACHE", str(tmp_path / "cache"))
    _train(synthetic, tmp_path)
    run = tmp_path / "run"
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["extractor"]["deep"] is False  # "auto" decided: no CLIP weights on disk
    assert record["extractor"]["proposals"] == "motion" and record["detector"]["hidden"] == [128, 128]
    assert record["data"]["root"] == str(synthetic)
    info = json.loads((run / "run.json").read_text())
    assert info["resolved"]["device"] and info["training_data"]["fps"] > 0
    for f in run.iterdir():  # every file of the run is readable by others, like any output
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~_umask(), f
    assert main(["evaluate", "--model", str(run), "-q"]) == 0
    before = pd.read_csv(run / "eval" / "scores.csv")

    from mulde.extractors.weights import list_weights

    clip = next(r for r in list_weights(str(tmp_path / "cache")) if r["name"].startswith("clip"))
    os.makedirs(os.path.dirname(clip["path"]), exist_ok=True)
    with open(clip["path"], "wb") as fh:
        fh.write(b"not a checkpoint")  # present now; a run that re-decided "auto" would try to load it
    assert main(["evaluate", "--model", str(run), "-q"]) == 0
    after = pd.read_csv(run / "eval" / "scores.csv")
    np.testing.assert_array_equal(before["score"].to_numpy(), after["score"].to_numpy())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_run_is_usable_from_another_directory(synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(synthetic.parent)
    rel = os.path.relpath(synthetic)
    data = ["--dataset", "folder", "--root", rel, "--cache", str(tmp_path / "cache"), *OBJECTS]
    assert main(["train", *data, "--preset", "test", "--steps", "20", "--out", str(tmp_path / "run"), "-q"]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--model", "run", "-q"]) == 0


@pytest.mark.slow
def test_interrupted_training_leaves_no_run_folder(synthetic, tmp_path, monkeypatch, capsys):
    from mulde.detector.mulde import MULDE

    def interrupt(self, X, progress=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(MULDE, "fit", interrupt)
    data = ["--dataset", "folder", "--root", str(synthetic), "--cache", str(tmp_path / "cache"), *OBJECTS]
    assert main(["train", *data, "--preset", "test", "--out", str(tmp_path / "run"), "-q"]) == 130
    assert "no run folder was written" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no run, no temporary folder


@pytest.mark.slow
def test_score_warns_when_the_input_is_unlike_the_training_footage(synthetic, tmp_path, caplog):
    import cv2

    _train(synthetic, tmp_path)
    video = sorted((synthetic / "test").glob("*.avi"))[0]
    big = tmp_path / "big.avi"
    from mulde.datasets.video import open_video

    with open_video(video) as reader:
        frames = reader.get(list(range(reader.n_frames)))
        fps = reader.fps
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"MJPG"), fps * 3, (frames.shape[2] * 2, frames.shape[1] * 2))
    for f in frames:
        writer.write(cv2.resize(f[:, :, ::-1], (frames.shape[2] * 2, frames.shape[1] * 2)))
    writer.release()
    with caplog.at_level(logging.WARNING):
        assert main(["score", str(video), "--model", str(tmp_path / "run"), "--out", str(tmp_path / "a.csv"), "-q"]) == 0
        assert "differs from the footage" not in caplog.text
        assert main(["score", str(big), "--model", str(tmp_path / "run"), "--out", str(tmp_path / "b.csv"), "-q"]) == 0
    line = [r.getMessage() for r in caplog.records if "differs from the footage" in r.getMessage()]
    assert len(line) == 1 and "fps" in line[0] and "frames where training had" in line[0]


def test_scores_far_beyond_training_warn_and_ordinary_anomalies_do_not():
    from pathlib import Path

    from mulde.pipeline.predict import warn_if_unlike_training
    from mulde.pipeline.run import Run
    from mulde.pipeline.score import TypeStats

    run = Run(folder=Path("run"), config={}, extractor="flowgrid", extractor_key="k", feature_types=("flowgrid",),
              stats={"flowgrid": TypeStats(mean=1.0, std=0.5, fill=0.0, n_rows=10)},
              info={"training_data": {"fps": 10.0, "frame_size": [360, 240],
                                      "score_range": {"flowgrid": {"z_p99": 2.0, "z_max": 4.0}}}})
    same = ((360, 240), 10.0)
    assert warn_if_unlike_training(run, "v.mp4", same[1], same[0], {"flowgrid": np.array([1.0, 30.0])}) == []
    far = warn_if_unlike_training(run, "v.mp4", 10.0, (360, 240), {"flowgrid": np.array([1.0, 4.5e10])})
    assert len(far) == 1 and "scores reach" in far[0]
    assert len(warn_if_unlike_training(run, "v.mp4", 30.0, (640, 360), {"flowgrid": np.array([1.0])})) == 2


def test_readme_tells_cpu_users_how_to_skip_the_cuda_wheels():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "download.pytorch.org/whl/cpu" in readme
