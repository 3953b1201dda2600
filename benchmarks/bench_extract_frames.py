"""Throughput of the frame-centric extractors: Hiera clips and the offline flow grid.

Rows: Hiera-B clips per second on the CPU (random init runs at the speed of pretrained
weights; model forward on preprocessed 16x224x224 clips), flowgrid frames per second on the
CPU for 360x240 and 640x360 in-memory videos (resize + flow + histograms + window pooling,
no decoding; Farneback and DIS flow side by side) and, when a GPU is available, Hiera-B and
Hiera-L clips per second with bf16 autocast on CUDA (the paper: 130 ms per Hiera-L clip, 33 ms per Hiera-B clip on an RTX
2080 Ti). ``quick=True`` keeps every measurement to a few seconds.

    PYTHONPATH=. python benchmarks/bench_extract_frames.py [--device auto|cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mulde.datasets.video import ArrayVideo  # noqa: E402
from mulde.device import resolve_device  # noqa: E402
from mulde.extractors.flowgrid import FlowGridExtractor  # noqa: E402
from mulde.extractors.hiera import HieraExtractor  # noqa: E402


def _row(stage: str, resolution: str, device: str, dtype: str, per_second: float,
         unit: str, note: str) -> dict[str, Any]:
    return {"stage": stage, "resolution": resolution, "device": device, "dtype": dtype,
            "per_second": round(per_second, 3), "unit": unit, "note": note}


def _moving_video(n: int, h: int, w: int) -> ArrayVideo:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w + 2 * n, 3), dtype=np.uint8)
    return ArrayVideo(np.stack([base[:, 2 * t : 2 * t + w] for t in range(n)]))


def bench_hiera(model: str, device: str, batch: int, reps: int) -> dict[str, Any]:
    """Clips per second of the model forward pass (random init) on preprocessed clips."""
    ext = HieraExtractor(model=model, random_init=True, device=device, batch_size=batch)
    ext.load(progress=False)
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (batch, 16, ext.size, ext.size, 3), dtype=np.uint8)
    ext.embed_clips(clips)  # warm-up (allocations, cuDNN/SDPA kernel choice)
    sync = torch.cuda.synchronize if ext.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        ext.embed_clips(clips)
    sync()
    seconds = time.perf_counter() - start
    rate = batch * reps / seconds
    name = str(ext.device) if ext.device.type == "cpu" else torch.cuda.get_device_name(ext.device)
    return _row(f"hiera forward ({model})", f"16x{ext.size}x{ext.size}", name,
                "bf16" if ext.use_amp else "fp32", rate, "clips/s",
                f"batch {batch}, {reps} reps, {1000 / rate:.1f} ms/clip, random init")


def bench_flowgrid(h: int, w: int, n: int, method: str = "farneback") -> dict[str, Any]:
    """Frames per second of the flowgrid extractor on an in-memory moving-texture video."""
    video = _moving_video(n, h, w)
    ext = FlowGridExtractor(method=method)
    ext.extract(_moving_video(4, h, w), progress=False)  # warm-up
    start = time.perf_counter()
    ext.extract(video, progress=False)
    rate = n / (time.perf_counter() - start)
    return _row("flowgrid extract", f"{w}x{h}", "cpu", "fp32", rate, "frames/s",
                f"{n} frames, {ext.cfg.method} flow at short side {ext.cfg.work_size}, "
                f"{1000 / rate:.1f} ms/frame, decoding excluded")


def run(device: str = "auto", quick: bool = False) -> list[dict[str, Any]]:
    """Benchmark rows (stage, resolution, device, dtype, per_second, unit, note)."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows = [bench_hiera("hiera_base_16x224", "cpu", batch=2 if quick else 4, reps=1 if quick else 3)]
    n = 48 if quick else 300
    rows += [bench_flowgrid(h, w, n, method) for h, w in ((240, 360), (360, 640)) for method in ("farneback", "dis")]
    if device != "cpu" and resolve_device(device).type == "cuda":
        reps = 5 if quick else 20
        for model in ("hiera_base_16x224", "hiera_large_16x224"):
            rows.append(bench_hiera(model, device, batch=1, reps=reps))
            rows.append(bench_hiera(model, device, batch=16, reps=reps))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--quick", action="store_true", help="a few seconds per measurement")
    args = parser.parse_args()
    for row in run(args.device, args.quick):
        print(f"{row['stage']:<40} {row['resolution']:>12} {row['device']:>24} {row['dtype']:>5} "
              f"{row['per_second']:>10.2f} {row['unit']:<9} {row['note']}")


if __name__ == "__main__":
    main()
