"""Live scoring speed of ``vad watch``: per-frame latency and sustained fps, one and several streams.

For each frame size (360x240: UCSD Ped2 test 01 frames; 640x360: car_traffic_640x360.mp4, both
re-encoded at 10 fps into a temporary H.264 file with the imageio-ffmpeg binary) and each
number of streams, two runs of :class:`mulde.pipeline.watch.Watcher`:

- ``real time``: the files play at 10 fps as cameras would; reported are the scored fps, the
  drop rate (frames skipped because scoring fell behind) and the latency from capture (the
  frame leaving the decoder) to the event decision, p50 / p95;
- ``max``: the same frames as fast as possible (``--no-realtime``), i.e. the sustained fps.

The model is a packaged dataset file's (``--dataset``: ``ped2``, YOLO11n-pose at ``--imgsz``,
person boxes, velocity + pose + context; ``avenue``, YOLO + motion boxes with the flow-grid
frame feature stepped beside them), MULDE with the cpu preset's 2x512 network. Without
``--model RUN`` the detectors are MULDE networks fitted for a few steps on random rows of the
right dimensions: scoring costs the same whatever the weights, and the extractors are the real ones.

    PYTHONPATH=. python benchmarks/bench_watch.py [--model RUN] [--dataset ped2,avenue]
        [--imgsz 1280,640] [--streams 1,2] [--seconds 10] [--device cpu] [--warm-up]

``--warm-up`` compares instead one real-time stream per clip on a fresh scorer without and with the
watcher's warm-up (blank frames of the clip's size scored before the first camera frame).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_clips(folder: Path, seconds: float) -> dict[str, Path]:
    """360x240 and 640x360 H.264 clips at 10 fps."""
    import imageio_ffmpeg

    ff = imageio_ffmpeg.get_ffmpeg_exe()
    n = int(seconds * 10)
    out = {}
    ped2 = SHARED / "ucsd_ped2" / "testing" / "frames" / "01"
    first = sorted(ped2.iterdir())[0] if ped2.is_dir() else None
    pattern = f"%0{len(first.stem)}d{first.suffix}" if first else ""
    src = ["-framerate", "10", "-start_number", str(int(first.stem)), "-i", str(ped2 / pattern)] if first else None
    cars = ["-i", str(SHARED / "videos" / "car_traffic_640x360.mp4")]
    for name, inp, scale in (("360x240", src, "360:240"), ("640x360", cars, "640:360")):
        if inp is None:
            continue
        path = folder / f"{name}.mp4"
        subprocess.run([ff, "-loglevel", "error", *inp, "-frames:v", str(n), "-vf", f"scale={scale},fps=10",
                        "-c:v", "libx264", "-preset", "veryfast", "-g", "10", "-an", str(path)], check=True)
        out[name] = path
    return out


def first_frames(clip: Path, n: int = 12) -> np.ndarray:
    """The first ``n`` RGB frames of Ped2 test 01, or of ``clip`` where ../shared is absent."""
    import cv2

    from mulde.datasets.video import list_frame_files

    ped2 = SHARED / "ucsd_ped2" / "testing" / "frames" / "01"
    if ped2.is_dir():
        return np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in list_frame_files(ped2)[:n]])
    cap, frames = cv2.VideoCapture(str(clip)), []
    while len(frames) < n and (got := cap.read())[0]:
        frames.append(cv2.cvtColor(got[1], cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


def row_widths(cfg, extractors, frames: np.ndarray) -> dict[str, int]:
    """Each feature type's row width as the run's detectors see it: the extractors on a few
    frames, then the run's tracklet and derived columns (no width is hard-coded, so the preset's
    types and columns are always the ones measured)."""
    from mulde.datasets.video import ArrayVideo
    from mulde.pipeline.score import prepare_tables

    raw = {t: tab for ex in extractors for t, tab in ex.extract(ArrayVideo(frames), progress=False).items()}
    tables = prepare_tables(raw, cfg.scoring.track_window, cfg.scoring.derived, cfg.scoring.derived_window)
    return {t: int(tab.values.shape[1]) for t, tab in tables.items()}


def cost_equivalent_run(dataset: str, imgsz: int, device: str, folder: Path, frames: np.ndarray):
    """A run with a packaged dataset file's extractors and untrained-cost-equivalent MULDE detectors."""
    from mulde.config import resolve_config, resolved_record
    from mulde.detector.registry import make_detector
    from mulde.pipeline.cache import extractor_key
    from mulde.pipeline.extract import build_extractors
    from mulde.pipeline.run import Run
    from mulde.pipeline.score import TypeStats, conformal_curve

    cfg = resolve_config({"dataset": dataset, "root": str(SHARED / "ucsd_ped2"), "yolo_imgsz": imgsz,
                          "device": device, "preset": "cpu", "deep": False,
                          "alerts.threshold": 3.0})  # fitted on random rows: no calibration, a fixed level
    extractors = build_extractors(cfg)
    extractor = extractors[0]
    dims = row_widths(cfg, extractors, frames)
    types = tuple(dims)
    rng = np.random.default_rng(0)
    detectors = {}
    for t in types:
        det = make_detector("mulde", hidden=(512, 512), steps=20, batch_size=256, device=device)
        det.fit(rng.normal(size=(2000, dims[t])).astype(np.float32), progress=False)
        detectors[t] = det
    record = resolved_record(cfg, extractor)
    frame_extractors = [{"name": ex.name, "key": extractor_key(ex.name, ex.config()), "config": ex.config()}
                        for ex in extractors[1:]]
    return Run(folder=folder, config=record.to_dict(), extractor=extractor.name,
               extractor_key=extractor_key(extractor.name, extractor.config()), feature_types=types,
               stats={t: TypeStats(mean=0.0, std=1.0, fill=0.0, n_rows=2000, **conformal_curve(rng.normal(size=2000)))
                      for t in types},
               detectors=detectors, info={"frame_extractors": frame_extractors})


def run_case(scorer, clip: Path, n_streams: int, realtime: bool, scores: Path | None = None) -> dict:
    from mulde.pipeline.watch import Watcher, WatchOptions

    opts = WatchOptions(realtime=realtime, events=os.devnull, status_every=0, scores=str(scores) if scores else None)
    summary = Watcher([str(clip)] * n_streams, scorer, opts).run()
    s = summary["sources"]
    lat = [x["latency_p50_ms"] for x in s], [x["latency_p95_ms"] for x in s]
    return {"fps": sum(x["frames"] for x in s) / summary["seconds"],
            "fps_per_stream": float(np.mean([x["fps"] for x in s])),
            "drop": float(np.mean([x["drop_rate"] for x in s])),
            "p50": float(np.max(lat[0])), "p95": float(np.max(lat[1])), "frames": sum(x["frames"] for x in s)}


def warm_up_case(run, clip: Path, warm: bool, folder: Path) -> dict:
    """One real-time stream on a fresh scorer, with or without the watcher's warm-up: the first
    frame's latency, the largest latency and the drop rate."""
    import pandas as pd

    from mulde.pipeline.online import OnlineScorer

    scorer = OnlineScorer(run)
    if not warm:
        scorer.warm_up = lambda *args, **kwargs: None
    out = folder / f"warm-{warm}-{clip.stem}.csv"
    rt = run_case(scorer, clip, 1, realtime=True, scores=out)
    latency = pd.read_csv(out).sort_values("frame")["latency_ms"].to_numpy()
    return {"first": float(latency[0]), "max": float(latency.max()), "drop": rt["drop"], "p95": rt["p95"]}


def main() -> int:
    import torch

    from mulde.pipeline.online import OnlineScorer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a trained run (default: a cost-equivalent run of --dataset's file)")
    ap.add_argument("--dataset", default="ped2",
                    help="packaged files whose extractors the cost-equivalent runs use, compared in one run: "
                         "ped2, avenue or both as ped2,avenue (default: ped2)")
    ap.add_argument("--imgsz", default="1280,640", help="YOLO input sizes to compare (default: 1280,640)")
    ap.add_argument("--streams", default="1,2", help="numbers of simultaneous streams (default: 1,2)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length (default: 10 s = 100 frames)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm-up", action="store_true",
                    help="instead: one real-time stream on a fresh scorer per size, without and with the "
                         "watcher's warm-up, side by side (first-frame latency, largest latency, drops)")
    ap.add_argument("--clips", help="a folder with 360x240.mp4 / 640x360.mp4 made earlier (a machine "
                                    "without FFmpeg or ../shared); default: encode them from ../shared/data")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    streams = [int(x) for x in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        clips = ({p.stem: p for p in sorted(Path(args.clips).glob("*x*.mp4"))} if args.clips
                 else make_clips(Path(tmp), args.seconds))
        print(f"# bench_watch: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__}, {args.threads} threads, device {args.device}, "
              f"{time.strftime('%Y-%m-%d')}")
        print(f"# command: python benchmarks/bench_watch.py {' '.join(sys.argv[1:])}")
        if args.warm_up:
            print("| model | size | warm-up | first frame latency ms | largest latency ms | p95 ms | dropped |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
        else:
            print("| model | size | streams | real time 10 fps: scored fps/stream | dropped | latency p50 ms | "
                  "p95 ms | max fps (all streams) |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        datasets = args.dataset.split(",")
        if not set(datasets) <= {"ped2", "avenue"}:
            ap.error(f"--dataset {args.dataset}: choose ped2, avenue or ped2,avenue")
        for dataset, imgsz in [(d, int(x)) for d in datasets for x in args.imgsz.split(",")]:
            if args.model:
                from mulde.pipeline.run import load_run

                run = load_run(args.model, device=args.device)
                label = Path(args.model).name
            else:
                frames = first_frames(next(iter(clips.values())))
                run = cost_equivalent_run(dataset, imgsz, args.device, Path(tmp), frames)
                label = f"{'Ped2' if dataset == 'ped2' else 'Avenue'} preset, YOLO @{imgsz}"
            if args.warm_up:
                for size, clip in clips.items():
                    for warm in (True, False):  # warm first: the cold run then finds what is cached
                        # process-wide already, so its first-frame cost is if anything understated
                        r = warm_up_case(run, clip, warm, Path(tmp))
                        print(f"| {label} | {size} | {'yes' if warm else 'no'} | {r['first']:.0f} | {r['max']:.0f} | "
                              f"{r['p95']:.0f} | {100 * r['drop']:.0f}% |", flush=True)
                if args.model:
                    break
                continue
            scorer = OnlineScorer(run)
            scorer.step(scorer.new_stream(), 0, np.zeros((240, 360, 3), np.uint8))  # load the models
            for size, clip in clips.items():
                for n in streams:
                    rt = run_case(scorer, clip, n, realtime=True)
                    mx = run_case(scorer, clip, n, realtime=False)
                    print(f"| {label} | {size} | {n} | {rt['fps_per_stream']:.1f} | {100 * rt['drop']:.0f}% | "
                          f"{rt['p50']:.0f} | {rt['p95']:.0f} | {mx['fps']:.1f} |", flush=True)
            if args.model:
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
