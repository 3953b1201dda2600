"""The `vad` command line: help texts, one-line errors, and the console script itself."""

from __future__ import annotations

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
