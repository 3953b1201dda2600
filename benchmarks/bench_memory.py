"""Peak RSS and frames/s of extraction and ``vad score --overlay``, 1x vs Nx the video length.

For every extractor (objects with motion proposals, objects with YOLO at a small ``imgsz``,
flowgrid, a tiny random-initialised Hiera) this trains a small run on a synthetic folder
dataset (a GMM; the model only has to exist, its accuracy is not the point), then runs, each in
a fresh child process so the peak is its own:

* ``extract``: the run's extractor over the whole video (what ``vad extract`` does per video);
* ``score``: ``vad score VIDEO --model RUN --out CSV --overlay MP4`` (extraction, scoring, CSV and
  the overlay video; its frames/s include loading the run, which weighs on short videos),

on the first ``--frames`` frames of a real video (re-encoded as H.264 MP4, the common case,
read through decord) and on the same frames repeated ``--times`` times. The child reports its
peak RSS (``VmHWM``: the kernel's exact high-water mark, no sampling) and the frames/s of the call.
Memory is flat when the Nx peak is within 10% of the 1x one. The videos are written under a
temporary folder (``--work``, default under /tmp), never into the repository.

    PYTHONPATH=. python benchmarks/bench_memory.py [--video PATH] [--frames 384] [--times 5]
        [--only objects-motion,objects-yolo,flowgrid,hiera-tiny] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VIDEO = DATA / "videos" / "opencv_vtest_480x360_h264.avi"

# name -> `vad train` options choosing the extractor (everything else: defaults).
EXTRACTORS: dict[str, list[str]] = {
    "objects-motion": ["--features", "objects", "--proposals", "motion", "--feature-types", "velocity",
                       "--deep", "off"],
    # yolo+motion: the synthetic training frames hold no people for YOLO; YOLO still runs on
    # every frame, and finds the real video's pedestrians.
    "objects-yolo": ["--features", "objects", "--proposals", "yolo+motion", "--yolo-imgsz", "320",
                     "--feature-types", "velocity", "--deep", "off"],
    "flowgrid": ["--features", "frames", "--backbone", "flowgrid"],
    "hiera-tiny": ["--features", "frames", "--backbone", "hiera_tiny_test", "--random-init"],
}


def make_video(source: Path, frames: int, times: int, out: Path) -> int:
    """The first ``frames`` frames of ``source`` repeated ``times`` times, as H.264 MP4."""
    import cv2
    import imageio_ffmpeg

    cap = cv2.VideoCapture(str(source))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    clip = []
    while len(clip) < frames:
        ok, frame = cap.read()
        if not ok:
            break
        clip.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    if not clip:
        raise SystemExit(f"error: {source}: no decodable frames")
    h, w = clip[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(str(out), (w, h), fps=fps, codec="libx264", quality=None,
                                         output_params=["-preset", "veryfast", "-crf", "23"],
                                         macro_block_size=1)
    writer.send(None)
    for _ in range(times):
        for frame in clip:
            writer.send(frame.tobytes())
    writer.close()
    return len(clip) * times


def train_run(name: str, work: Path) -> Path:
    """A small run with the extractor ``name`` on a synthetic folder dataset (seconds)."""
    from mulde.datasets.synthetic import generate_synthetic

    data, run = work / "synthetic", work / f"run-{name}"
    if not (data / "training").is_dir():
        generate_synthetic(data, seed=0, n_train=3, n_test=1, n_frames=60)
    if not (run / "run.json").is_file():  # in a child: this process stays small (see peak_mb)
        proc = subprocess.run([sys.executable, "-m", "mulde", "train", "--dataset", "folder", "--root", str(data),
                               "--cache", str(work / "cache"), *EXTRACTORS[name], "--detector", "gmm",
                               "--device", "cpu", "--out", str(run), "-q"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"error: training the {name} run failed: {proc.stderr.strip()[-300:]}")
    return run


def peak_mb() -> float:
    """This process's peak RSS (VmHWM) in MB. Not ``ru_maxrss``: Linux carries that over from
    the parent through fork and exec, so a child would report at least its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most


def child(mode: str, run: str, video: str, out: str) -> None:
    """One measurement, in its own process: prints a JSON line with frames, seconds, peak MB."""
    import logging

    logging.disable(logging.WARNING)  # the synthetic run's "unlike the training footage" warning
    if mode == "extract":
        from mulde.datasets.video import open_video
        from mulde.pipeline.extract import build_extractor
        from mulde.pipeline.run import load_run, run_config

        extractor = build_extractor(run_config(load_run(run, device="cpu"), {"device": "cpu"}))
        with open_video(video) as reader:
            start = time.perf_counter()
            tables = extractor.extract(reader, progress=False)
            seconds = time.perf_counter() - start
            n = reader.n_frames
        assert tables, "no feature tables"
    else:
        from mulde.cli import main

        start = time.perf_counter()
        code = main(["score", video, "--model", run, "--device", "cpu", "--out", f"{out}.csv",
                     "--overlay", f"{out}.mp4", "-q"])
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(code)
        import pandas as pd

        n = len(pd.read_csv(f"{out}.csv"))
    print(json.dumps({"frames": n, "seconds": seconds, "peak_mb": peak_mb()}))


def measure(mode: str, run: Path, video: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, str(run), str(video), str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"error: {mode} on {video.name} failed: " + " | ".join(tail))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores {cpu}, {mem:.0f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=VIDEO, help="real video to take the frames from")
    parser.add_argument("--frames", type=int, default=384,
                        help="frames of the 1x video (default 384: 6 chunks of 64, enough to fill every "
                             "extractor's read-ahead queues, so the 1x peak is the steady state)")
    parser.add_argument("--times", type=int, default=5, help="the long video repeats them N times (default 5)")
    parser.add_argument("--only", default=",".join(EXTRACTORS), help="comma-separated subset of "
                        + ", ".join(EXTRACTORS))
    parser.add_argument("--work", type=Path, help="folder for the videos and runs (default: a new one in /tmp)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "RUN", "VIDEO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if not args.video.is_file():
        raise SystemExit(f"error: {args.video}: video not found (pass --video PATH)")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(EXTRACTORS))
    if unknown:
        raise SystemExit(f"error: unknown extractor(s) {', '.join(unknown)} in --only; choose from "
                         + ", ".join(EXTRACTORS))
    work = args.work or Path(tempfile.mkdtemp(prefix="mulde-bench-memory-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    videos = {}
    for times in (1, args.times):
        path = work / f"{args.video.stem}_{args.frames}x{times}.mp4"
        if not path.is_file():
            make_video(args.video, args.frames, times, path)
        videos[times] = path
    print(f"machine: {machine()}; video: {args.video.name}, first {args.frames} frames, "
          f"1x and {args.times}x; work folder {work}", file=sys.stderr)
    rows, failed = [], []
    for name in names:
        try:
            run = train_run(name, work)
            measure("extract", run, videos[1], work / f"{name}-warm-up")  # one-time exports, caches
            for mode in ("extract", "score"):
                r = {t: measure(mode, run, v, work / f"{name}-{mode}-{t}x") for t, v in videos.items()}
                short, long = r[1], r[args.times]
                rows.append((name, mode, short, long))
                print(f"{name} {mode}: {short} | {long}", file=sys.stderr, flush=True)
        except SystemExit as exc:  # one extractor failing leaves the others' rows
            failed.append(f"{name}: {exc}")
            print(f"skipped {name}: {exc}", file=sys.stderr, flush=True)
    n = args.times
    print(f"| extractor | command | frames 1x / {n}x | peak RSS 1x (MB) | peak RSS {n}x (MB) | "
          f"{n}x vs 1x | frames/s 1x | frames/s {n}x |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mode, short, long in rows:
        growth = 100 * (long["peak_mb"] / short["peak_mb"] - 1)
        label = "extract" if mode == "extract" else "score --overlay"
        print(f"| {name} | {label} | {short['frames']} / {long['frames']} | {short['peak_mb']:.0f} | "
              f"{long['peak_mb']:.0f} | {growth:+.1f}% | {short['frames'] / short['seconds']:.1f} | "
              f"{long['frames'] / long['seconds']:.1f} |")
    for line in failed:
        print(f"\nnot measured: {line}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
