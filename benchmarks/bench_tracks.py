"""Speed of track linking and the derived track columns, this checkout against an earlier revision.

``derived: [track]`` (the Avenue, Ped1, ShanghaiTech and folder object runs) links every video's
boxes into tracks and computes four columns per row before each fit and each scoring. The scene
is synthetic: walkers enter at random places, walk 50-200 frames at random velocities and leave,
``--objects`` of them in every frame; one row in five is dropped (detector misses). For each
length, both revisions time ``link_tracks`` and ``track_columns`` (which links again) on the same
rows in one run, each in its own process importing that revision's ``mulde`` (``git archive``
into a temporary folder), and report the largest difference between their columns (float32
rounding of sums over the whole video, about 1e-7, where the revisions sum differently).

    python benchmarks/bench_tracks.py [--baseline ae1d770] [--frames 2000 8000 32000] [--objects 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np
from mulde.pipeline.derived import track_columns
from mulde.pipeline.tracks import link_tracks
data = np.load(sys.argv[1])
fi, bx = data["frame_idx"], data["boxes"]
t = time.perf_counter(); link_tracks(fi, bx); link_s = time.perf_counter() - t
t = time.perf_counter(); cols = track_columns(fi, bx, 12); cols_s = time.perf_counter() - t
np.save(sys.argv[2], cols)
print(json.dumps({"link_s": link_s, "columns_s": cols_s}))
"""


def scene(n_frames: int, per_frame: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices and boxes of walkers that come and go, ``per_frame`` of them at a time."""
    rng = np.random.default_rng(seed)
    frames, boxes, active = [], [], []
    for f in range(n_frames):
        while len(active) < per_frame:
            active.append([rng.uniform(0, 600), rng.uniform(0, 400), *rng.normal(0, [2, 1]),
                           int(rng.integers(50, 200)), rng.uniform(20, 80)])
        for a in active:
            a[0] += a[2]
            a[1] += a[3]
            a[4] -= 1
            frames.append(f)
            boxes.append([a[0], a[1], a[0] + a[5] / 2, a[1] + a[5]])
        active = [a for a in active if a[4] > 0]
    keep = rng.random(len(frames)) > 0.2
    return np.asarray(frames)[keep], np.asarray(boxes, np.float32)[keep]


def run(src: Path, data: Path, out: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(data), str(out)], cwd=src, env=dict(os.environ, PYTHONPATH=str(src)),
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="ae1d770", help="git revision to compare with (default: ae1d770)")
    ap.add_argument("--frames", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--objects", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "mulde"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
              f"`python benchmarks/bench_tracks.py --baseline {args.baseline} --frames "
              f"{' '.join(map(str, args.frames))} --objects {args.objects}`\n")
        print("| frames | rows | tracks | revision | link_tracks s | track_columns s | rows/s | largest column difference |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in args.frames:
            fi, bx = scene(n, args.objects)
            data = tmp / f"scene{n}.npz"
            np.savez(data, frame_idx=fi, boxes=bx)
            from mulde.pipeline.tracks import link_tracks
            n_tracks = int(link_tracks(fi, bx).max()) + 1
            cols = {}
            for name, src in (("baseline", base), ("this checkout", ROOT)):
                r = run(src, data, tmp / f"{name.replace(' ', '_')}{n}.npy")
                cols[name] = np.load(tmp / f"{name.replace(' ', '_')}{n}.npy")
                diff = float(np.abs(cols[name] - cols["baseline"]).max()) if len(fi) else 0.0
                print(f"| {n} | {len(fi)} | {n_tracks} | {name if name != 'baseline' else args.baseline} | "
                      f"{r['link_s']:.2f} | {r['columns_s']:.2f} | {len(fi) / r['columns_s']:,.0f} | "
                      f"{diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
