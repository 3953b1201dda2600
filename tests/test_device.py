"""The one device resolver every detector and extractor uses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from mulde.device import resolve_device
from mulde.errors import InputError

PACKAGE = Path(__file__).resolve().parents[1] / "mulde"


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["tpu0", "gpu", "cuda:x", "mps", "meta", "cpu:3", ""])
def test_bad_specs_are_one_line_input_errors(spec):
    with pytest.raises(InputError) as err:
        resolve_device(spec)
    assert "\n" not in str(err.value) and "auto, cpu, cuda or cuda:N" in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda(spec):
    with pytest.raises(InputError, match="CUDA is not available; use --device cpu"):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_index_checked():
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(InputError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_extractors_and_detectors_share_it():
    """Every module that picks a device imports mulde.device; extractors no longer import the
    detector package, and no other module defines its own resolver."""
    users = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        defs = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        if path.name != "device.py":
            assert not defs & {"resolve_device", "torch_device"}, f"{path} defines its own device resolver"
        imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        if any(n.module == "mulde.device" for n in imports):
            users.append(path.relative_to(PACKAGE).as_posix())
        if path.parent.name == "extractors":
            assert not any(n.module.startswith("mulde.detector") for n in imports), path
    assert {"detector/neural.py", "extractors/hiera.py", "extractors/detection.py", "extractors/clip.py",
            "extractors/flow.py"} <= set(users)
