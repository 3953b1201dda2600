"""The `vad` command line: help texts, one-line errors, and the console script itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mulde.cli import main

COMMANDS = ["extract", "train", "evaluate", "score", "demo", "info", "download", "toy", "weights"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vad " + command)


def test_help_shows_paper_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for text in ("default: 0.1", "default: 1e-3", "default: 4096 4096", "default: 2048", "--config"):
        assert text in out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    assert err[-1].startswith("error: ")
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_unknown_dataset_is_one_line(tmp_path, capsys):
    assert main(["extract", "--dataset", "nope", "--root", str(tmp_path), "-q"]) == 2
    line = _error_line(capsys)
    assert "nope" in line and "ped2" in line


def test_missing_root_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["extract", "--dataset", "ped2", "--root", str(missing), "-q"]) == 2
    assert str(missing) in _error_line(capsys)


def test_missing_required_dataset(capsys):
    assert main(["train", "--out", "x", "-q"]) == 2
    assert "--dataset is required" in _error_line(capsys)


def test_track_window_without_object_features_is_one_line(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    args = ["train", "--dataset", "folder", "--root", str(tmp_path), "--features", "frames",
            "--track-window", "3", "--out", str(tmp_path / "run"), "-q"]
    assert main(args) == 2
    assert "--track-window smooths object-centric velocity" in _error_line(capsys)


def test_not_a_run_dir(tmp_path, capsys):
    assert main(["evaluate", "--model", str(tmp_path), "-q"]) == 2
    assert "not a trained run" in _error_line(capsys)


def test_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("- just\n- a list\n")
    assert main(["extract", "--config", str(bad), "-q"]) == 2
    assert "mapping" in _error_line(capsys)


def test_console_script_entrypoint():
    res = subprocess.run([sys.executable, "-m", "mulde", "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.startswith("mulde ")


def test_score_missing_video_names_it(tmp_path, capsys):
    missing = tmp_path / "nope.mp4"
    assert main(["score", str(missing), "--model", str(tmp_path), "-q"]) == 2
    assert str(missing) in _error_line(capsys)


def test_score_corrupt_video_names_it(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01 this is not a video" * 100)
    assert main(["score", str(bad), "--model", str(tmp_path), "-q"]) == 2
    assert str(bad) in _error_line(capsys)


def test_info_json_on_real_ped2(shared_data, capsys):
    assert main(["info", "--dataset", "ped2", "--root", str(shared_data / "ucsd_ped2"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["train_videos"], info["test_videos"]) == (16, 12)
    assert (info["train_frames"], info["test_frames"]) == (2550, 2010)
    assert 0.5 < info["anomalous_fraction"] < 0.9


def test_toy_command_prints_auc(capsys):
    assert main(["toy", "--steps", "200"]) == 0
    out = capsys.readouterr().out
    assert "AUC" in out.upper()


def test_context_flag_takes_on_or_off_and_ped2_turns_it_on(capsys):
    from mulde.config import resolve_config

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset", "ped2", "--context", "maybe", "-q"])
    assert exit_.value.code == 2
    assert "--context: choose on or off, got 'maybe'" in _error_line(capsys)
    assert resolve_config({"dataset": "ped2"}).extractor_options["context"] is True
    assert resolve_config({"dataset": "ped2", "context": False}).extractor_options["context"] is False
    assert "context" not in resolve_config({"dataset": "avenue"}).extractor_options


def test_corrupt_video_gives_one_stderr_line_not_the_decoders_log(tmp_path):
    """decord and FFmpeg write their own lines to file descriptor 2 on a failed open; only mulde's may show."""
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"ftyp" + b"\x00\x01 this is not a video" * 100)
    res = subprocess.run([sys.executable, "-m", "mulde", "score", str(bad), "--model", str(tmp_path), "-q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {bad}: cannot open video file (unsupported or corrupt)"]
