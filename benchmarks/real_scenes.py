"""Real footage with anomalies made by editing time, per anomaly kind and setting (not a test).

    python benchmarks/real_scenes.py [--videos plaza bridge] [--settings frames objects objects+flowgrid]
                                     [--seeds 0 1] [--steps 1000] [--out DIR] [--opt KEY=VALUE ...]

The synthetic scenes (``benchmarks/demo_kinds.py``) draw their walkers; these are real videos
from ``../shared/data/videos`` (unlabelled, so nothing was tuned on them): real people, cars and
bicycles, real perspective and real detector misses. ``plaza`` is OpenCV's pedestrian sample
(480x360, 10 fps, an elevated view of a path), ``bridge`` the road-traffic clip (640x360, 30 fps,
a one-way bridge seen along its axis, with a footpath). Each becomes a folder dataset
(``mulde.datasets.folder``): the first half of the video, cut into four, is the normal training
split; every test video is cut from the second half and holds one edited segment in its middle,
whose frames are the labelled anomaly:

* ``fast``: every 3rd source frame, so everything moves 3x faster (running; speeding);
* ``rewind``: the segment played backwards, continuous at both ends (people walking backwards;
  cars going the wrong way on the one-way bridge);
* ``freeze``: one frame held, so everything stops (a halt, or a stalled feed).

The edits touch every object of a frame at once, so these are easier than one odd walker; what
they measure is whether a setting carries to footage it was not chosen on. Every setting of
``--settings`` trains MULDE (the cpu preset) on each ``--seeds`` seed and is evaluated on the same
test videos; features are extracted once per extractor configuration and cached under ``--out``.
Settings: ``frames`` is the folder dataset's default (the flow-grid frame feature alone);
``objects`` is ``--features objects`` on a folder dataset (the object defaults a user gets);
``objects+flowgrid`` adds what the Avenue, Ped1 and ShanghaiTech files add to those
(``frame_features: [flowgrid]``, ``crossfit_folds: 4``, ``derived: [track]``; their velocity is in
pixels, as here), and ``objects+flowgrid-height`` the same in body heights (``velocity_norm:
height``, which those files set until session 25); ``demo`` is `vad demo`'s
options (motion boxes that keep stopped objects, track columns, velocity alone), and
``demo+flowgrid`` those with the flow grid beside them as the Avenue file adds it (the setting of
``benchmarks/combine_kinds.py``). ``--opt`` sets further options of every run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from combine_kinds import kind_auc, types_alone  # noqa: E402
from demo_kinds import opt_suffix  # noqa: E402

from mulde.cli import key_value  # noqa: E402
from mulde.config import dataset_defaults, resolve_config  # noqa: E402
from mulde.pipeline.demo import DEMO_OPTIONS  # noqa: E402
from mulde.pipeline.evaluate import evaluate_run  # noqa: E402
from mulde.pipeline.train import train_run  # noqa: E402

VIDEOS_DIR = REPO.parent / "shared" / "data" / "videos"
# name: (file, fps, frames before and after the edit, frames of the edit, test videos per kind)
VIDEOS = {
    "plaza": ("opencv_vtest_480x360_h264.avi", 10, 40, 30, 2),
    "bridge": ("car_traffic_640x360.mp4", 30, 60, 60, 2),
}
KINDS = ("fast", "rewind", "freeze")
FAST = 3
# What avenue.yaml (as ped1.yaml and shanghaitech.yaml) adds to object runs.
FLOWGRID = {k: dataset_defaults("avenue")[k] for k in ("frame_features", "crossfit_folds")}
PACKAGED = {**FLOWGRID, **{k: dataset_defaults("avenue")[k] for k in ("velocity_norm", "derived")}}
SETTINGS = {
    "frames": {},
    "objects": {"features": "objects"},
    "objects+flowgrid": {"features": "objects", **PACKAGED},
    "objects+flowgrid-height": {"features": "objects", **PACKAGED, "velocity_norm": "height"},
    "demo": dict(DEMO_OPTIONS),
    "demo+flowgrid": {**DEMO_OPTIONS, "feature_types": ["velocity", "flowgrid"], **FLOWGRID},
}


def edited_indices(kind: str, start: int, lead: int, span: int) -> tuple[list[int], tuple[int, int]]:
    """Source frame indices of one test video and its anomalous output range (inclusive)."""
    before = list(range(start, start + lead))
    if kind == "fast":
        edit = list(range(start + lead, start + lead + FAST * span, FAST))
    elif kind == "rewind":
        edit = list(range(start + lead - 2, start + lead - 2 - span, -1))
    elif kind == "freeze":
        edit = [start + lead - 1] * span
    else:
        raise ValueError(kind)
    after = list(range(edit[-1] + 1, edit[-1] + 1 + lead))
    return before + edit + after, (lead, lead + span - 1)


def source_span(kind: str, lead: int, span: int) -> int:
    """How many source frames after ``start`` one test video of ``kind`` reaches."""
    idx, _ = edited_indices(kind, 0, lead, span)
    return max(idx) + 1


def build_scene(out: Path, name: str) -> tuple[Path, dict]:
    """Write the folder dataset of one real video (once); return its root and manifest."""
    import cv2

    file, _, lead, span, per_kind = VIDEOS[name]
    root = out / name / "data"
    manifest = {"videos": {}}
    done = root / "test" / "labels.csv"
    source = out / name / "source"
    if not done.is_file():
        cap = cv2.VideoCapture(str(VIDEOS_DIR / file))
        source.mkdir(parents=True, exist_ok=True)
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            cv2.imwrite(str(source / f"{n:06d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            n += 1
        cap.release()
        if n < 200:
            raise SystemExit(f"error: {VIDEOS_DIR / file}: only {n} frames decode")
    n = len(list(source.glob("*.jpg")))
    half = n // 2
    cuts = np.linspace(0, half, 5).astype(int)
    videos = {f"train/{k:02d}": list(range(cuts[k], cuts[k + 1])) for k in range(4)}
    labels = []
    for kind in KINDS:
        last = n - source_span(kind, lead, span)
        for j, start in enumerate(np.linspace(half, last, per_kind).astype(int)):
            vid = f"{kind}{j}"
            idx, (a, b) = edited_indices(kind, int(start), lead, span)
            videos[f"test/{vid}"] = idx
            labels.append(f"{vid},{a},{b}")
            manifest["videos"][vid] = {"anomalies": [{"kind": kind}]}
    if not done.is_file():
        for rel, idx in videos.items():
            folder = root / rel
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(idx):
                link = folder / f"{k:06d}.jpg"
                if not link.exists():
                    link.symlink_to(source / f"{i:06d}.jpg")
        tmp = done.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text("video,start_frame,end_frame\n" + "\n".join(labels) + "\n")
        tmp.replace(done)
    return root, manifest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--out", default=str(REPO / ".bench-runs" / "real-scenes"))
    ap.add_argument("--opt", action="append", default=[], type=key_value, metavar="KEY=VALUE", help="extra options of every run")
    args = ap.parse_args()
    if not VIDEOS_DIR.is_dir():
        print(f"error: {VIDEOS_DIR} not found; these real videos come with ../shared/data", file=sys.stderr)
        return 2
    extra = dict(args.opt)
    suffix = opt_suffix(extra)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.out).expanduser().resolve()
    rows: dict[tuple[str, str], list[tuple[float, float, dict[str, float]]]] = {}
    t0 = time.perf_counter()
    for name in args.videos:
        root, manifest = build_scene(out, name)
        fps = VIDEOS[name][1]
        for setting in args.settings:
            for seed in args.seeds:
                opts = {"dataset": "folder", "root": str(root), "cache": str(out / name / "cache"), "seed": seed,
                        "device": "cpu", "preset": "cpu", "steps": args.steps, "fps": fps,
                        **SETTINGS[setting], **extra}
                run_dir = out / name / f"run-{setting}-seed{seed}{suffix}"
                train_run(resolve_config(opts), run_dir, progress=False)  # extracts what the cache lacks
                m = evaluate_run(run_dir, progress=False, plots=False)
                named = {setting: m}
                if len(m["feature_types"]) > 1:
                    named.update({f"{setting}: {k}": v for k, v in types_alone(run_dir).items()})
                for label, met in named.items():
                    rows.setdefault((name, label), []).append(
                        (met["micro_auc"], met["macro_auc"], kind_auc(met["per_video_auc"], manifest)))
                print(name, setting, seed, f"{100 * m['micro_auc']:.1f}", f"{time.perf_counter() - t0:.0f} s", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{stamp}, {os.cpu_count()} cores, `python benchmarks/real_scenes.py {' '.join(sys.argv[1:])}`, "
          f"{time.perf_counter() - t0:.0f} s; MULDE cpu preset, {args.steps} steps, seeds {args.seeds} (mean)\n")
    print("| scene | setting | micro | macro | " + " | ".join(KINDS) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in KINDS) + " |")
    for (name, label), vals in rows.items():
        micro = 100 * np.mean([v[0] for v in vals])
        macro = 100 * np.mean([v[1] for v in vals])
        kinds = [100 * np.mean([v[2][k] for v in vals if k in v[2]]) for k in KINDS]
        print(f"| {name} | {label} | {micro:.1f} | {macro:.1f} | " + " | ".join(f"{k:.1f}" for k in kinds) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
