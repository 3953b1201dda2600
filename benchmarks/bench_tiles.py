"""Can YOLO spend its pixels only where people move? Motion-guided tiles against the whole frame.

UCSD Ped2 people are 20-40 px tall in 360x240 frames, so the Ped2 preset runs YOLO11n-pose at
imgsz 1280 on the whole frame (an 864x1280 network input). This benchmark runs, side by side on
the same real Ped2 frames, that baseline and variants that upscale only parts of the frame by
the same factor (1280/360 = 32/9) and run the same detector on them:

- ``grid`` (control, ``--grid``): the whole frame as the fewest fixed tiles that cover it (they
  overlap by only 9-15 px): what tiling alone costs and loses, motion aside.
- ``motion``: fixed-size tiles placed greedily to cover every MOG2 motion box (plus a margin), as
  the extractor's :class:`~mulde.extractors.motion.MotionProposer` gives them; a frame whose plan
  would cost more pixels than the whole frame gets the whole-frame pass instead.
- ``lowres+motion``: a whole-frame pass at a low ``imgsz`` first; tiles go only where a motion
  box has no confident low-res person on it.
- ``motion+memory``: tiles cover motion boxes and the previous frame's persons (so people who
  stop stay in view), with a whole-frame refresh every ``--refresh`` frames.

Tile sides are multiples of 9 source pixels, so a tile scaled by 32/9 is a multiple of YOLO's
stride 32 and needs no padding: 180x126 -> 640x448 (the export the 640 preset already uses),
126x90 -> 448x320. Each tile shape is one fixed-shape ONNX export (``yolo_runtime.py``), run
through the project's :class:`~mulde.extractors.detection.YoloDetector`. Boxes are mapped back to
frame pixels and merged with NMS (IoU 0.7, as the detector); a box cut by a tile's inner edge that
lies mostly inside another box is dropped as a fragment.

Per variant: persons/frame, recall of the baseline's persons (one-to-one matches at IoU >= 0.5),
extra boxes (no baseline match), network-input pixels per frame relative to the baseline, and
ms/frame (detection, tile planning, cropping, merging; the motion variants include the MOG2
proposer's time, which the Ped2 preset, ``proposals: yolo``, does not otherwise run). Missed
baseline persons are split into those that a motion box touched and those it did not (people
standing still are invisible to background subtraction).

    PYTHONPATH=. python benchmarks/bench_tiles.py [--videos test/01,test/04,train/01]
        [--frames 96] [--threads 2] [--refresh 10] [--tiles 126x180,90x126] [--grid 90x126]
        [--low-imgsz 640] [--motion mog2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.ops import box_iou, nms  # noqa: E402

from mulde.datasets.video import open_video  # noqa: E402
from mulde.extractors.detection import PERSON, Detections, YoloDetector  # noqa: E402
from mulde.extractors.motion import MotionConfig, MotionProposer, coverage  # noqa: E402
from mulde.extractors.yolo_runtime import input_shape  # noqa: E402

PED2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucsd_ped2"
BASE_IMGSZ = 1280
CHUNK = 64  # the extractor's chunk_size: MOG2 is primed on the first chunk's median
NMS_IOU = 0.7  # the detector's own NMS threshold
MATCH_IOU = 0.5
MARGIN = 10  # source pixels added around a motion box before it is tiled
CONFIDENT = 0.5  # a low-res person at least this sure hides the motion box it covers


@dataclass
class Result:
    name: str
    boxes: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0
    cpu: float = 0.0
    pixels: float = 0.0
    tiles: int = 0
    full_passes: int = 0


class Tiler:
    """Runs the detector on fixed-size tiles at the baseline's scale and merges their boxes."""

    def __init__(self, tile_hw: tuple[int, int], frame_hw: tuple[int, int]) -> None:
        self.th, self.tw = tile_hw
        self.fh, self.fw = frame_hw
        imgsz = round(max(tile_hw) * BASE_IMGSZ / max(frame_hw))
        self.detector = detector(imgsz)
        self.shape = input_shape(self.th, self.tw, imgsz)
        self.pixels = self.shape[0] * self.shape[1]

    def plan(self, boxes: np.ndarray) -> list[tuple[int, int]]:
        """Top-left corners of tiles such that every box (grown by MARGIN) lies inside one tile;
        boxes larger than a tile are cut into overlapping tile-sized pieces first."""
        pieces = []
        for x1, y1, x2, y2 in np.asarray(boxes, np.float32).reshape(-1, 4):
            x1, y1 = max(0.0, x1 - MARGIN), max(0.0, y1 - MARGIN)
            x2, y2 = min(float(self.fw), x2 + MARGIN), min(float(self.fh), y2 + MARGIN)
            for px in _spans(x1, x2, self.tw):
                for py in _spans(y1, y2, self.th):
                    pieces.append((px[0], py[0], px[1], py[1]))
        pieces.sort()
        corners: list[tuple[int, int]] = []
        left = list(pieces)
        while left:
            gx1, gy1, gx2, gy2 = left[0]
            for p in sorted(left[1:], key=lambda p: (p[0] - left[0][0]) ** 2 + (p[1] - left[0][1]) ** 2):
                ux1, uy1, ux2, uy2 = min(gx1, p[0]), min(gy1, p[1]), max(gx2, p[2]), max(gy2, p[3])
                if ux2 - ux1 <= self.tw and uy2 - uy1 <= self.th:
                    gx1, gy1, gx2, gy2 = ux1, uy1, ux2, uy2
            x0 = int(round(min(max((gx1 + gx2 - self.tw) / 2, 0), self.fw - self.tw)))
            y0 = int(round(min(max((gy1 + gy2 - self.th) / 2, 0), self.fh - self.th)))
            corners.append((x0, y0))
            left = [p for p in left if not (p[0] >= x0 - 0.5 and p[1] >= y0 - 0.5 and p[2] <= x0 + self.tw + 0.5
                                            and p[3] <= y0 + self.th + 0.5)]
        return corners

    def grid(self) -> list[tuple[int, int]]:
        """Corners of the fewest tiles covering the frame, evenly spread (overlapping)."""
        nx, ny = math.ceil(self.fw / self.tw), math.ceil(self.fh / self.th)
        xs = np.linspace(0, self.fw - self.tw, nx).round().astype(int) if nx > 1 else [0]
        ys = np.linspace(0, self.fh - self.th, ny).round().astype(int) if ny > 1 else [0]
        return [(int(x), int(y)) for y in ys for x in xs]

    def detect(self, frame: np.ndarray, corners: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (frame pixels), scores and per-box "cut by an inner tile edge" flags."""
        if not corners:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, bool)
        crops = [frame[y:y + self.th, x:x + self.tw] for x, y in corners]
        boxes, scores, cut = [], [], []
        for (x, y), det in zip(corners, self.detector(crops)):
            b = det.boxes + np.array([x, y, x, y], np.float32)
            inner = np.array([x > 0, y > 0, x + self.tw < self.fw, y + self.th < self.fh])
            edge = np.array([x, y, x + self.tw, y + self.th], np.float32)
            touches = (np.abs(b - edge) <= 2.0) & inner
            boxes.append(b)
            scores.append(det.scores)
            cut.append(touches.any(axis=1))
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(cut)


def _spans(lo: float, hi: float, size: int) -> list[tuple[float, float]]:
    """[lo, hi] as itself when it fits in ``size``, else tile-sized pieces overlapping by >= 48 px
    (taller than a Ped2 person, so each person lies whole in one piece)."""
    if hi - lo <= size:
        return [(lo, hi)]
    n = math.ceil((hi - lo - 48) / (size - 48))
    starts = np.linspace(lo, hi - size, n)
    return [(float(s), float(s) + size) for s in starts]


def merge(boxes: np.ndarray, scores: np.ndarray, cut: np.ndarray) -> np.ndarray:
    """NMS across tiles, then drop tile-edge fragments lying >= 70% inside a better kept box."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float32)
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), NMS_IOU).numpy()
    boxes, scores, cut = boxes[keep], scores[keep], cut[keep]
    drop = np.zeros(len(boxes), bool)
    cov = coverage(boxes, boxes)
    np.fill_diagonal(cov, 0.0)
    for i in np.flatnonzero(cut):
        others = (cov[i] >= 0.7) & ~drop & ((scores > scores[i]) | ~cut)
        drop[i] = bool(others.any())
    return boxes[~drop].astype(np.float32)


def detector(imgsz: int) -> YoloDetector:
    return YoloDetector(classes=[PERSON], imgsz=imgsz, runtime="onnx", device="cpu", batch_size=16)


def load(video: str, n: int) -> np.ndarray:
    split, name = video.split("/")
    folder = PED2 / ("testing" if split == "test" else "training") / "frames" / name
    with open_video(folder) as reader:
        return reader.get(range(min(n, reader.n_frames)))


def match(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Per reference box: True when some box of ``got`` matches it one-to-one at IoU >= MATCH_IOU."""
    hit = np.zeros(len(ref), bool)
    if len(ref) == 0 or len(got) == 0:
        return hit
    iou = box_iou(torch.from_numpy(ref), torch.from_numpy(got)).numpy()
    pairs = sorted(((iou[i, j], i, j) for i, j in zip(*np.nonzero(iou >= MATCH_IOU))), reverse=True)
    used: set[int] = set()
    for _, i, j in pairs:
        if not hit[i] and j not in used:
            hit[i] = True
            used.add(j)
    return hit


def run_video(frames: np.ndarray, refresh: int, low_imgsz: int, tilers: dict[str, Tiler],
              full: YoloDetector, low: YoloDetector, grid: set[str], method: str = "mog2") -> tuple[list[Result], list[np.ndarray], float]:
    """All variants on one video's frames; returns results, motion boxes and motion s/frame."""
    h, w = frames.shape[1:3]
    full_px = np.prod(input_shape(h, w, BASE_IMGSZ))
    low_px = np.prod(input_shape(h, w, low_imgsz))
    motion = MotionProposer(MotionConfig(method=method, min_area=100.0))  # the extractor's defaults
    t0, c0 = time.perf_counter(), time.process_time()
    mboxes = [b for s in range(0, len(frames), CHUNK) for b in motion(frames[s:s + CHUNK])]
    motion_s = (time.perf_counter() - t0) / len(frames)
    motion_cpu = (time.process_time() - c0) / len(frames)

    def whole(det: YoloDetector, px: float):
        def fn(t, f, r):
            r.pixels += px
            return det([f])[0].boxes
        return fn

    variants = [(Result(f"whole frame @{BASE_IMGSZ} (baseline)"), whole(full, full_px), False),
                (Result(f"whole frame @{low_imgsz}"), whole(low, low_px), False)]
    for spec, tiler in tilers.items():
        def grid_fn(t, f, r, tiler=tiler):
            corners = tiler.grid()
            r.tiles += len(corners)
            r.pixels += tiler.pixels * len(corners)
            return merge(*tiler.detect(f, corners))

        def tiles_or_full(f, r, corners, tiler, extra=None):
            """The tiles, unless they cost more pixels than the whole frame."""
            if len(corners) * tiler.pixels >= full_px:
                r.full_passes += 1
                r.pixels += full_px
                return full([f])[0].boxes
            r.tiles += len(corners)
            r.pixels += tiler.pixels * len(corners)
            b, s, c = tiler.detect(f, corners)
            if extra is not None:
                b = np.concatenate([b, extra.boxes])
                s = np.concatenate([s, extra.scores])
                c = np.concatenate([c, np.zeros(len(extra), bool)])
            return merge(b, s, c)

        def motion_fn(t, f, r, tiler=tiler):
            return tiles_or_full(f, r, tiler.plan(mboxes[t]), tiler)

        def lowres_fn(t, f, r, tiler=tiler):
            det: Detections = low([f])[0]
            r.pixels += low_px
            sure = det.boxes[det.scores >= CONFIDENT]
            mb = mboxes[t]
            if len(mb) and len(sure):
                mb = mb[coverage(mb, sure).max(axis=1) < 0.5]
            return tiles_or_full(f, r, tiler.plan(mb), tiler, extra=det)

        def memory_fn(t, f, r, tiler=tiler):
            if t % refresh == 0:
                r.full_passes += 1
                r.pixels += full_px
                return full([f])[0].boxes
            seeds = np.concatenate([mboxes[t], r.boxes[t - 1]])
            return tiles_or_full(f, r, tiler.plan(seeds), tiler)

        th, tw = tiler.th, tiler.tw
        if spec in grid:
            variants.append((Result(f"grid of {len(tiler.grid())} tiles {tw}x{th} (control)"), grid_fn, False))
        variants += [
            (Result(f"motion tiles {tw}x{th}"), motion_fn, True),
            (Result(f"@{low_imgsz} + motion tiles {tw}x{th} where no sure person"), lowres_fn, True),
            (Result(f"tiles {tw}x{th} on motion + last frame's persons, @{BASE_IMGSZ} every {refresh}"),
             memory_fn, True),
        ]
    # frame by frame, every variant in turn: load from other processes hits all variants alike
    for t, frame in enumerate(frames):
        for res, fn, _ in variants:
            wall, cpu = time.perf_counter(), time.process_time()
            res.boxes.append(fn(t, frame, res))
            res.seconds += time.perf_counter() - wall
            res.cpu += time.process_time() - cpu
    for res, _, adds_motion in variants:
        if adds_motion:
            res.seconds += motion_s * len(frames)
            res.cpu += motion_cpu * len(frames)
    results = [res for res, _, _ in variants]
    return results, mboxes, motion_s


def warm_up(frame: np.ndarray, dets: list[YoloDetector], tilers: dict[str, Tiler]) -> None:
    """Export (once, cached) and load every fixed-shape model before anything is timed."""
    for d in dets:
        d([frame])
    for tiler in tilers.values():
        tiler.detect(frame, tiler.grid()[:1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", default="test/01,test/04,train/01",
                        help="Ped2 videos as test/NN or train/NN")
    parser.add_argument("--frames", type=int, default=96, help="first frames of each video")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (ONNX Runtime uses the cores)")
    parser.add_argument("--refresh", type=int, default=10, help="whole-frame pass period of motion+memory")
    parser.add_argument("--low-imgsz", type=int, default=640, help="imgsz of the low-resolution pass")
    parser.add_argument("--tiles", default="126x180,90x126", help="tile shapes HxW in source pixels")
    parser.add_argument("--grid", default="90x126",
                        help="tile shapes that also run as a whole-frame grid (control: tiling alone)")
    parser.add_argument("--motion", default="mog2", help="motion proposer method (the extractor's motion_method)")
    args = parser.parse_args(argv)
    if not PED2.exists():
        print(f"error: {PED2} not found; this benchmark needs the UCSD Ped2 frames", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    videos = [v.strip() for v in args.videos.split(",") if v.strip()]
    clips = {v: load(v, args.frames) for v in videos}
    hw = next(iter(clips.values())).shape[1:3]
    tilers = {}
    for spec in args.tiles.split(","):
        th, tw = (int(s) for s in spec.lower().split("x"))
        tilers[spec] = Tiler((th, tw), hw)
    full, low = detector(BASE_IMGSZ), detector(args.low_imgsz)
    warm_up(next(iter(clips.values()))[0], [full, low], tilers)

    totals: dict[str, dict[str, float]] = {}
    n_frames = 0
    for video, frames in clips.items():
        results, mboxes, motion_s = run_video(frames, args.refresh, args.low_imgsz, tilers, full, low,
                                             set(args.grid.split(",")), args.motion)
        n_frames += len(frames)
        ref = results[0]
        print(f"{video}: {len(frames)} frames, baseline {sum(map(len, ref.boxes)) / len(frames):.2f} persons/frame, "
              f"{sum(map(len, mboxes)) / len(frames):.2f} motion boxes/frame, motion {1000 * motion_s:.1f} ms/frame",
              flush=True)
        for res in results:
            tot = totals.setdefault(res.name, dict.fromkeys(
                ("persons", "ref", "hit", "extra", "extra_on", "miss_static", "seconds", "cpu", "pixels",
                 "ref_pixels", "tiles", "full"), 0.0))
            for t in range(len(frames)):
                hit = match(ref.boxes[t], res.boxes[t])
                tot["persons"] += len(res.boxes[t])
                tot["ref"] += len(hit)
                tot["hit"] += hit.sum()
                tot["extra"] += len(res.boxes[t]) - hit.sum()
                extra = res.boxes[t][~match(res.boxes[t], ref.boxes[t])]
                if len(extra) and len(ref.boxes[t]):  # a fragment or duplicate of a baseline person
                    tot["extra_on"] += (coverage(extra, ref.boxes[t]).max(axis=1) >= 0.5).sum()
                missed = ref.boxes[t][~hit]
                if len(missed):
                    touched = (coverage(missed, mboxes[t]).max(axis=1) > 0 if len(mboxes[t])
                               else np.zeros(len(missed), bool))
                    tot["miss_static"] += (~touched).sum()
            tot["seconds"] += res.seconds
            tot["cpu"] += res.cpu
            tot["pixels"] += res.pixels
            tot["ref_pixels"] += ref.pixels
            tot["tiles"] += res.tiles
            tot["full"] += res.full_passes
            print(f"  {res.name}: {len(res.boxes) and sum(map(len, res.boxes)) / len(frames):.2f} persons/frame, "
                  f"{1000 * res.seconds / len(frames):.0f} ms/frame, {1000 * res.cpu / len(frames):.0f} CPU ms/frame",
                  flush=True)

    base = totals[next(iter(totals))]
    print(f"\n{n_frames} frames ({', '.join(videos)}), {args.threads} threads\n")
    print("| variant | persons/frame | recall of baseline persons | extra boxes/frame (on a baseline person) "
          "| missed: share without motion | tiles/frame | whole-frame passes | detector pixels vs baseline "
          "| ms/frame | time vs baseline | CPU ms/frame | CPU vs baseline |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, tot in totals.items():
        missed = tot["ref"] - tot["hit"]
        static = f"{tot['miss_static'] / missed:.0%} of {missed / n_frames:.2f}/frame" if missed else "-"
        print(f"| {name} | {tot['persons'] / n_frames:.2f} | {tot['hit'] / max(tot['ref'], 1):.1%} "
              f"| {tot['extra'] / n_frames:.2f} ({tot['extra_on'] / n_frames:.2f}) | {static} "
              f"| {tot['tiles'] / n_frames:.2f} | {tot['full'] / n_frames:.0%} "
              f"| {tot['pixels'] / tot['ref_pixels']:.0%} | {1000 * tot['seconds'] / n_frames:.0f} "
              f"| {tot['seconds'] / base['seconds']:.0%} | {1000 * tot['cpu'] / n_frames:.0f} "
              f"| {tot['cpu'] / base['cpu']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
