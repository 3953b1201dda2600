"""Throughput of every feature-extraction stage, object-centric and frame-centric, in one table.

Object-centric stages (this file), for a 360x240 video (UCSD Ped2 test 01 frames) and a
640x360 video (car_traffic_640x360.mp4), on the CPU and, when present, the GPU: decoding,
YOLO11n-pose detection at each ``--imgsz``, the MOG2 motion proposer, Farneback and DIS flow (RAFT
small and large on the GPU),
velocity histograms (8 bins, 5 boxes per frame) and CLIP ViT-B/16 crops (random weights run
at the speed of pretrained ones). Frame-centric rows come from ``bench_extract_frames.run``
when that file is beside this one. Without ../shared/data, synthetic frames are used.

    PYTHONPATH=. python benchmarks/bench_extract.py [--device auto|cpu|cuda] [--quick]
        [--imgsz 640,960] [--threads 2]
    PYTHONPATH=. python benchmarks/bench_extract.py --end-to-end [--frames 96] [--configs ...]

``--end-to-end`` times the whole object extractor with the Ped2 preset (decode to feature
rows), one row per configuration of ``E2E_CONFIGS`` (runtime, pipelining, flow), all in one run,
with each stage's ms/frame (stages of the pipelined runs overlap, so they add up to more than
the wall time; ``wait`` is the time the detector waited for decoded frames) and the peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mulde.datasets.video import open_video  # noqa: E402
from mulde.extractors.clip import ClipEncoder  # noqa: E402
from mulde.extractors.detection import YoloDetector  # noqa: E402
from mulde.extractors.flow import FlowEstimator  # noqa: E402
from mulde.extractors.motion import MotionProposer  # noqa: E402
from mulde.extractors.velocity import flow_histograms  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {
    "360x240": (DATA / "ucsd_ped2" / "testing" / "frames" / "01", (360, 240)),
    "640x360": (DATA / "videos" / "car_traffic_640x360.mp4", (640, 360)),
}
COLUMNS = ("stage", "resolution", "device", "dtype", "per_second", "unit", "note")


def _row(stage: str, resolution: str, device: str, dtype: str, per_second: float,
         unit: str, note: str) -> dict[str, Any]:
    return {"stage": stage, "resolution": resolution, "device": device, "dtype": dtype,
            "per_second": round(per_second, 3), "unit": unit, "note": note}


def _rate(fn: Callable[[], Any], n: int, sync: Callable[[], None] = lambda: None) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return n / max(time.perf_counter() - start, 1e-9)


def load_frames(resolution: str, n: int) -> tuple[np.ndarray, float, str]:
    """``n`` RGB frames at the resolution, the decode rate (frames/s) and where they came from."""
    source, (w, h) = SOURCES[resolution]
    if not source.exists():
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (h, w + 2 * n, 3), dtype=np.uint8)
        return np.stack([base[:, 2 * t:2 * t + w] for t in range(n)]), float("nan"), "synthetic"
    chunks: list[np.ndarray] = []
    start = time.perf_counter()
    with open_video(source) as reader:
        for _, frames in reader.iter_chunks(32, 0, min(n, reader.n_frames)):
            chunks.append(frames)
    rate = n / (time.perf_counter() - start)
    frames = np.concatenate(chunks)[:n]
    if frames.shape[1:3] != (h, w):
        frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
    return frames, rate, source.name


def bench_objects(device: str, resolution: str, n: int, imgsizes: list[int]) -> list[dict[str, Any]]:
    frames, decode_rate, name = load_frames(resolution, n)
    cpu = device == "cpu"
    dev_name = "cpu" if cpu else torch.cuda.get_device_name(0)
    sync = (lambda: None) if cpu else torch.cuda.synchronize
    rows = []
    if cpu:  # decoding, motion, flow and histograms run on the CPU whatever the device
        rows.append(_row("decode", resolution, "cpu", "uint8", decode_rate, "frames/s", name))
        rows.append(_row("motion proposer (mog2)", resolution, "cpu", "uint8",
                         _rate(lambda: MotionProposer()(frames), n), "frames/s", "incl. priming"))
        for method in ("farneback", "dis"):  # dis: the CPU default of flow: auto
            flow = FlowEstimator(method)
            rows.append(_row(f"flow ({method})", resolution, "cpu", "fp32",
                             _rate(lambda flow=flow: flow.sequence(frames), n), "frames/s", ""))
        field = flow(frames[0], frames[1])  # the last method's (dis) field for the histogram row
        h, w = frames.shape[1:3]
        boxes = np.array([[w * i / 6, h / 4, w * i / 6 + w / 10, h / 4 + h / 5] for i in range(5)], np.float32)
        rows.append(_row("velocity histograms", resolution, "cpu", "fp32",
                         _rate(lambda: [flow_histograms(field, boxes) for _ in range(n)], n),
                         "frames/s", "5 boxes/frame, 8 bins"))
    else:  # RAFT is the GPU flow; random weights run at the speed of pretrained ones
        for method in ("raft_small", "raft_large"):
            raft = FlowEstimator(method, device=device, random_init=True)
            raft.sequence(frames[:2])  # warm-up
            rows.append(_row(f"flow ({method})", resolution, dev_name, "fp32",
                             _rate(lambda raft=raft: raft.sequence(frames), n, sync), "frames/s",
                             "random init, 12 iterations"))
    for imgsz in imgsizes:
        det = YoloDetector(imgsz=imgsz, device=device, batch_size=16)
        det(frames[:16])  # warm-up at the timed batch shape: model load, kernel choice
        found: list[int] = []
        rate = _rate(lambda det=det, found=found: found.extend(len(d) for d in det(frames)), n, sync)
        rows.append(_row(f"detection yolo11n-pose @{imgsz}", resolution, dev_name,
                         "fp32" if cpu else "fp16", rate, "frames/s",
                         f"{np.mean(found):.2f} objects/frame"))
    enc = ClipEncoder(random_init=True, device=device, batch_size=16)
    h, w = frames.shape[1:3]
    n_crops = 16 if cpu else 256
    crop_box = np.array([[w / 3, h / 4, w / 3 + 24, h / 4 + 40]] * n_crops, np.float32)
    enc(frames[0], crop_box[:2])  # warm-up
    rows.append(_row("CLIP ViT-B/16 crops", resolution, dev_name, "fp32" if cpu else "fp16",
                     _rate(lambda: enc(frames[0], crop_box), n_crops, sync), "crops/s",
                     "random init, crop+resize+forward"))
    return rows


# The Ped2 preset's extractor options (mulde/configs/ped2.yaml) and the configurations compared
# end to end: today's serial PyTorch loop, then each lever added.
PED2_PRESET = {"imgsz": 1280, "proposals": "yolo", "velocity_norm": "height",
               "velocity_extras": ("magnitude", "aspect"), "context": True, "deep": False}
E2E_CONFIGS = {
    "torch-serial": {"yolo_runtime": "torch", "pipelined": False},
    "torch-pipelined": {"yolo_runtime": "torch", "pipelined": True},
    "onnx-pipelined": {"yolo_runtime": "onnx", "pipelined": True},
    "openvino-serial": {"yolo_runtime": "openvino", "pipelined": False},
    "openvino-pipelined": {"yolo_runtime": "openvino", "pipelined": True},
    "onnx-every2": {"yolo_runtime": "onnx", "pipelined": True, "yolo_every": 2},
    "onnx-every2-farneback": {"yolo_runtime": "onnx", "pipelined": True, "yolo_every": 2, "flow": "farneback"},
    "onnx-every3": {"yolo_runtime": "onnx", "pipelined": True, "yolo_every": 3},
}
STAGES = ("decode", "motion", "flow", "detection", "velocity", "wait")


class _FirstFrames:
    """The first ``n`` frames of a reader, streamed chunk by chunk (decoding is timed too)."""

    def __init__(self, reader: Any, n: int) -> None:
        self.reader, self.path = reader, reader.path
        self.n_frames = min(n, reader.n_frames)

    def iter_chunks(self, chunk_size: int = 64, start: int = 0, stop: int | None = None):
        return self.reader.iter_chunks(chunk_size, start, self.n_frames if stop is None else stop)


class _PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> _PeakRSS:
        import threading

        import psutil

        self.peak, self._stop = 0, threading.Event()
        proc = psutil.Process()

        def sample() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, proc.memory_info().rss)
                self._stop.wait(0.02)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def bench_end_to_end(resolution: str, n: int, configs: dict[str, dict[str, Any]],
                     device: str = "cpu") -> list[dict[str, Any]]:
    """Frames/s of the whole object extractor (decode to feature rows) with the Ped2 preset, one
    row per configuration, with each stage's ms/frame and the peak RSS during the run."""
    from mulde.extractors.objects import ObjectExtractor

    source, _ = SOURCES[resolution]
    if not source.exists():
        return []
    rows = []
    for name, options in configs.items():
        ex = ObjectExtractor(device=device, **PED2_PRESET, **options)
        with open_video(source) as reader:  # warm-up: model load, export on first use
            ex.extract(_FirstFrames(reader, 16), progress=False)
        with open_video(source) as reader, _PeakRSS() as rss:
            start = time.perf_counter()
            tables = ex.extract(_FirstFrames(reader, n), progress=False)
            wall = time.perf_counter() - start
        frames = ex.last_timings["frames"]
        stages = ", ".join(f"{k} {1000 * ex.last_timings.get(k, 0.0) / frames:.0f}"
                           for k in STAGES if k in ex.last_timings)
        persons = len(tables["pose"]) / frames if "pose" in tables else float("nan")
        rows.append(_row(f"end to end: {name}", resolution, device, "fp32", frames / wall, "frames/s",
                         f"{persons:.2f} persons/frame; ms/frame: {stages}; peak RSS "
                         f"{rss.peak / 2**20:.0f} MB; {source.name}"))
    return rows


def run(device: str = "auto", quick: bool = False, imgsizes: tuple[int, ...] = (640, 960),
        skip_cpu: bool = False) -> list[dict[str, Any]]:
    """Rows for every object-centric stage on the CPU, plus the GPU when asked/available."""
    devices = [] if skip_cpu else ["cpu"]
    if device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append("cuda")
    n = 16 if quick else 64
    rows = []
    for dev in devices:
        for resolution in SOURCES:
            rows += bench_objects(dev, resolution, n, list(imgsizes) if not quick else list(imgsizes)[:1])
    return rows


def frame_rows(device: str, quick: bool) -> list[dict[str, Any]]:
    """Rows of ``bench_extract_frames.run`` (frame-centric extractors) when that file exists."""
    folder = str(Path(__file__).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        import bench_extract_frames
    except ImportError:
        return []
    return list(bench_extract_frames.run(device=device, quick=quick))


def print_table(rows: list[dict[str, Any]]) -> None:
    cells = [[str(r.get(c, "")) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)))
    print("  ".join("-" * w for w in widths))
    for x in cells:
        print("  ".join(v.ljust(w) for v, w in zip(x, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--quick", action="store_true", help="few frames, first imgsz only")
    parser.add_argument("--imgsz", default="640,960", help="detector sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--objects-only", action="store_true", help="skip the frame-centric rows")
    parser.add_argument("--skip-cpu", action="store_true", help="GPU rows only (object-centric stages)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="only the whole extractor, Ped2 preset, one row per configuration")
    parser.add_argument("--frames", type=int, default=96, help="frames per end-to-end run")
    parser.add_argument("--configs", default=",".join(E2E_CONFIGS),
                        help="end-to-end configurations, comma-separated names of E2E_CONFIGS")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    imgsizes = tuple(int(s) for s in args.imgsz.split(","))
    if args.end_to_end:
        configs = {k.strip(): E2E_CONFIGS[k.strip()] for k in args.configs.split(",")}
        dev = "cuda" if args.device == "cuda" else "cpu"
        rows = [r for res in SOURCES for r in bench_end_to_end(res, args.frames, configs, dev)]
        print_table(rows)
        return
    rows = run(args.device, args.quick, imgsizes, args.skip_cpu)
    if not args.objects_only:
        rows += frame_rows(args.device, args.quick)
    print_table(rows)


if __name__ == "__main__":
    main()
