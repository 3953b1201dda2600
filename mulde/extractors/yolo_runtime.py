"""Which engine runs the YOLO detector, and its exported model files.

On the CPU, ultralytics can run an exported copy of the PyTorch model through ONNX Runtime or
OpenVINO, which are made for CPU inference (fused kernels, no autograd bookkeeping). The export
is done once, offline (the exporters need no network), for a fixed input shape: the letterboxed
shape ultralytics uses for the video's frame size, so boxes come out as with PyTorch. The file is
cached in the weights folder (``<cache>/weights/exports``), keyed by the weights' content hash and
that shape; an export that fails or a runtime that is not installed falls back to PyTorch with
one log line.

``auto`` picks PyTorch on a GPU and otherwise ONNX Runtime, else OpenVINO where it computes in
fp32 (see :data:`CPU_PREFERENCE`; measured in ``benchmarks/bench_extract.py``). The runtimes are the optional extra
``pip install "mulde[cpu-runtime]"`` (``.[dev]`` installs it).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import warnings
from pathlib import Path

from mulde.errors import InputError
from mulde.extractors.weights import weights_digest, weights_dir

log = logging.getLogger("mulde")

RUNTIMES = ("auto", "torch", "onnx", "openvino")
# auto on the CPU: ONNX Runtime computes in fp32 and gives PyTorch's boxes to 1e-3 px (2.8x
# PyTorch on Ped2). OpenVINO is faster still (4.9x) but runs bfloat16 on CPUs that have it, and
# those features cost 1.7 points of Ped2 micro AUC (benchmarks/RESULTS.md): auto takes it only
# where it computes in fp32; `yolo_runtime: openvino` asks for it anyway.
CPU_PREFERENCE = ("onnx", "openvino")
# Python packages each exported runtime needs, for the export and for inference.
PACKAGES = {"onnx": ("onnx", "onnxslim", "onnxruntime"), "openvino": ("openvino",)}
STRIDE = 32  # YOLO's largest stride: input sides are padded to a multiple of it
_EXPORT_LOCK = threading.Lock()
_LOGGED: set[str] = set()


def missing_packages(runtime: str) -> list[str]:
    """The packages ``runtime`` needs that are not installed (empty for torch)."""
    return [p for p in PACKAGES.get(runtime, ()) if importlib.util.find_spec(p) is None]


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info(message)


def resolve_runtime(requested: str, device: str, embed: bool = False) -> str:
    """The runtime that will run: ``torch``, ``onnx`` or ``openvino``.

    auto: torch on CUDA (and when the appearance embedding needs PyTorch's feature maps), else
    the first installed of :data:`CPU_PREFERENCE` that computes in fp32, else torch. An explicit runtime that cannot
    run here falls back to torch with one log line saying why.
    """
    if requested not in RUNTIMES:
        raise InputError(f"unknown yolo_runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    if requested == "torch":
        return "torch"
    why = None
    if str(device).startswith("cuda"):
        why = "PyTorch runs YOLO on the GPU"
    elif embed:
        why = "the appearance embedding reads PyTorch's feature maps"
    if why is not None:
        if requested != "auto":
            _log_once(f"yolo_runtime {requested}: using torch instead ({why})")
        return "torch"
    candidates = CPU_PREFERENCE if requested == "auto" else (requested,)
    for name in candidates:
        missing = missing_packages(name)
        if not missing and (requested != "auto" or inference_precision(name) == "fp32"):
            return name
        if requested != "auto":
            _log_once(f"yolo_runtime {name}: {', '.join(missing)} not installed, using torch "
                      "(pip install \"mulde[cpu-runtime]\")")
    if requested == "auto":
        _log_once("yolo_runtime auto: no CPU runtime installed (onnxruntime, openvino), using torch; "
                  "pip install \"mulde[cpu-runtime]\" runs YOLO 1.5-2x faster on the CPU")
    return "torch"


@functools.cache
def inference_precision(runtime: str) -> str:
    """The arithmetic the runtime uses on this CPU: ``bf16`` where OpenVINO runs bfloat16 by
    default (CPUs with AVX-512 BF16 or AMX), else ``fp32``. It changes the features slightly,
    so it is part of the cache key (:meth:`ObjectExtractor.config`)."""
    if runtime != "openvino":
        return "fp32"
    try:
        import openvino as ov
    except ImportError:  # not installed: the runtime falls back to torch anyway
        return "fp32"
    hint = str(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")).lower()
    return "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"


def input_shape(height: int, width: int, imgsz: int) -> tuple[int, int]:
    """The (h, w) ultralytics feeds the network for ``height x width`` frames at ``imgsz``:
    the longer side scaled to ``imgsz``, the other padded up to a multiple of the stride
    (its minimal-padding letterbox). An export for this shape gives the PyTorch model's boxes."""
    r = min(imgsz / height, imgsz / width)
    h, w = round(height * r), round(width * r)
    return h + (-h) % STRIDE, w + (-w) % STRIDE


def export_path(weights: str | os.PathLike, runtime: str, shape: tuple[int, int],
                cache: str | os.PathLike | None = None) -> Path:
    """Where the export of ``weights`` for ``runtime`` at input ``shape`` is cached."""
    weights = Path(weights)
    stem = f"{weights.stem}-{weights_digest(weights)[:16]}-{shape[0]}x{shape[1]}"
    folder = weights_dir(cache) / "exports"
    return folder / (f"{stem}.onnx" if runtime == "onnx" else f"{stem}_openvino_model")


def exported_model(weights: str | os.PathLike, runtime: str, shape: tuple[int, int],
                   cache: str | os.PathLike | None = None) -> Path:
    """The exported model (an ``.onnx`` file or an OpenVINO folder), exporting it on first use.

    The export runs in a private temporary folder and is moved into place in one rename, so a
    concurrent or interrupted export never leaves a half-written model under the final name.
    """
    if runtime not in PACKAGES:
        raise InputError(f"no export for runtime {runtime!r}; choose one of {', '.join(PACKAGES)}")
    target = export_path(weights, runtime, shape, cache)
    with _EXPORT_LOCK:
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting %s to %s at input %dx%d (once; cached as %s)", Path(weights).name, runtime,
                 shape[1], shape[0], target)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")  # never pip-install from inside a run
        from ultralytics import YOLO
        from ultralytics.utils import LOGGER

        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
            copy = Path(tmp) / f"{target.stem.removesuffix('_openvino_model')}.pt"
            shutil.copyfile(weights, copy)
            level = LOGGER.level
            LOGGER.setLevel(logging.ERROR)  # the exporter prints a page per export
            extra = {"simplify": True} if runtime == "onnx" else {}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation notice
                    out = YOLO(str(copy)).export(format=runtime, imgsz=list(shape), dynamic=False, batch=1,
                                                 device="cpu", verbose=False, **extra)
            finally:
                LOGGER.setLevel(level)
            try:
                Path(out).rename(target)
            except OSError:  # another process finished the same export first
                if not target.exists():
                    raise
    return target
