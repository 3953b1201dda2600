"""Parallel extraction and batch scoring: 1 vs N workers side by side, end to end.

1. Ped2 object-centric extraction (the packaged Ped2 options: YOLO11n-pose at 1280, person
   boxes, velocity and pose features) of a fixed subset of training videos (default 01 and 08:
   2 x 120 frames, so two workers get equal halves), into a fresh cache per worker count.
2. Batch scoring (``vad score DIR --out-dir``) of the three real videos in ../shared/data/videos
   with a frame-centric flow-grid run trained on that subset (preset ``test``; the run only has
   to exist, the timing is the extraction and scoring of 2,399 frames at 480x360 to 1280x720).

Frames per second are end to end: wall time of the call, worker start-up and model loading
included; "steady" is frames over the time after the workers were up. Speedup is against the
first worker count.

    PYTHONPATH=. python benchmarks/bench_scale.py [--workers 1,2] [--videos 01,08]
        [--device cpu] [--write-results]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import sys
import tempfile
import time
from datetime import date
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
SECTION = "## Parallel extraction and batch scoring"


def ped2_options() -> dict:
    """The packaged Ped2 options (mulde/configs/ped2.yaml) for a ``folder`` copy of Ped2."""
    import yaml

    return yaml.safe_load(resources.files("mulde.configs").joinpath("ped2.yaml").read_text())


def make_subset(root: Path, videos: list[str]) -> Path:
    """A ``folder`` dataset whose train/ links the chosen Ped2 training frame folders."""
    (root / "train").mkdir(parents=True)
    for vid in videos:
        (root / "train" / vid).symlink_to(DATA / "ucsd_ped2" / "training" / "frames" / vid)
    return root


def bench_extract(subset: Path, workers: list[int], tmp: Path, device: str) -> list[dict]:
    from mulde.datasets.folder import FolderDataset
    from mulde.pipeline.cache import FeatureCache
    from mulde.pipeline.extract import build_extractor, extract_split

    rows = []
    for n in workers:
        cfg = {**ped2_options(), "dataset": "folder", "root": str(subset), "device": device,
               "cache": str(tmp / f"cache-{n}")}
        t0 = time.perf_counter()
        summary = extract_split(FolderDataset(subset, fps=10), "train", build_extractor(cfg),
                                FeatureCache(tmp / f"cache-{n}"), progress=False, workers=n)
        wall = time.perf_counter() - t0
        r = summary.report
        rows.append({"workers": n, "videos": r.total, "frames": r.frames, "wall": wall,
                     "fps": r.frames / wall, "steady": r.fps, "executor": r.executor})
        print(f"extract  workers={n}: {r.frames} frames in {wall:.1f} s = {r.frames / wall:.2f} frames/s "
              f"(steady {r.fps:.2f})", flush=True)
    return rows


def bench_score(subset: Path, workers: list[int], tmp: Path, device: str) -> list[dict]:
    from mulde.pipeline.batch import score_many
    from mulde.pipeline.executor import RunOptions
    from mulde.pipeline.train import train_run

    cfg = {"dataset": "folder", "root": str(subset), "fps": 10, "features": "frames", "backbone": "flowgrid",
           "preset": "test", "device": device, "cache": str(tmp / "cache-run")}
    train_run(cfg, tmp / "run", progress=False)
    rows = []
    for n in workers:
        t0 = time.perf_counter()
        r = score_many([DATA / "videos"], tmp / "run", tmp / f"scores-{n}", overrides={"device": device},
                       options=RunOptions(workers=n), progress=False)
        wall = time.perf_counter() - t0
        r.raise_for_failures()
        rows.append({"workers": n, "videos": r.total, "frames": r.frames, "wall": wall,
                     "fps": r.frames / wall, "steady": r.fps, "executor": r.executor,
                     "per_video": [sum(1 for _ in open(tmp / f"scores-{n}" / f"{Path(v).stem}.scores.csv")) - 1
                                   for v in sorted(os.listdir(DATA / "videos"))]})
        print(f"score    workers={n}: {r.frames} frames in {wall:.1f} s = {r.frames / wall:.2f} frames/s "
              f"(steady {r.fps:.2f})", flush=True)
    return rows


def greedy_makespan(frames: list[int], workers: int) -> int:
    """Frames of the busiest worker when videos go, in order, to whichever worker is free first."""
    loads = [0] * workers
    for f in frames:
        loads[loads.index(min(loads))] += f
    return max(loads)


def table(title: str, rows: list[dict]) -> list[str]:
    base = rows[0]
    out = [f"| {title} | workers | videos | frames | wall s | frames/s | speedup | steady frames/s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| | {r['workers']} ({r['executor']}) | {r['videos']} | {r['frames']} | {r['wall']:.1f} | "
                   f"{r['fps']:.2f} | {r['fps'] / base['fps']:.2f}x | {r['steady']:.2f} |")
    return out


def write_results(lines: list[str]) -> None:
    path = REPO / "benchmarks" / "RESULTS.md"
    text = path.read_text()
    block = "\n".join(lines) + "\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: block + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + block
    path.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="worker counts to compare (default: 1,2)")
    ap.add_argument("--videos", default="01,08", help="Ped2 training videos of the subset (default: 01,08)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-extract", action="store_true")
    ap.add_argument("--skip-score", action="store_true")
    ap.add_argument("--write-results", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if not (DATA / "ucsd_ped2").is_dir():
        print(f"error: Ped2 not found under {DATA}; this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    import torch

    workers = [int(w) for w in args.workers.split(",")]
    videos = args.videos.split(",")
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        subset = make_subset(tmp / "ped2", videos)
        ext = [] if args.skip_extract else bench_extract(subset, workers, tmp, args.device)
        sco = [] if args.skip_score else bench_score(subset, workers, tmp, args.device)
    cores = len(os.sched_getaffinity(0))
    gpu = torch.cuda.get_device_name(0) if args.device != "cpu" and torch.cuda.is_available() else "none"
    lines = [SECTION, "",
             f"{date.today()}, {platform.processor() or platform.machine()}, {cores} cores, GPU: {gpu}, "
             f"device {args.device}. Command: `python benchmarks/bench_scale.py --workers {args.workers} "
             f"--videos {args.videos} --device {args.device}` ({time.perf_counter() - t_all:.0f} s in all). "
             "End to end: wall time of `extract_split` / `score_many` with worker start-up and model "
             "loading; steady = after the workers were up. One worker runs inline with torch's default "
             f"threads; N workers get {cores} // N threads each.", ""]
    if ext:
        lines += [f"Ped2 object-centric extraction (packaged Ped2 options, YOLO11n-pose @1280), training "
                  f"videos {', '.join(videos)}:", ""] + table("extract", ext) + [""]
    if sco:
        per_video = sco[0]["per_video"]
        bound = ", ".join(f"{n} workers {sum(per_video) / greedy_makespan(per_video, n):.2f}x"
                          for n in workers if n > 1)
        lines += ["Batch scoring (`score_many`, = `vad score DIR --out-dir`) of the three real videos "
                  f"(flow-grid run; {'/'.join(map(str, per_video))} decoded frames, handed out in that "
                  f"order, so the best possible speedup is {bound}):", ""] + table("score", sco) + [""]
    print("\n".join(lines))
    if args.write_results:
        write_results(lines)
        print("wrote benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
