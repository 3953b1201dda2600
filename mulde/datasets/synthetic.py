"""A small synthetic surveillance benchmark that needs no download.

A static textured scene with a horizontal walkway; people-like shapes (ellipse body + circle head,
darker than the ground, slightly varied in size) walk left or right along the walkway at normal
speeds (about 0.8-2.2 px/frame, varying), several at once. Test videos add anomalous objects:

* ``fast``            a cyclist-like shape at 5-8 px/frame;
* ``wrong_direction`` a walker crossing vertically (training has horizontal motion only);
* ``large_object``    a car-like box, far larger than a person;
* ``loitering``       a walker that stops mid-way for a while, then turns back.

Two knobs stand in for unseen scenes: ``perspective`` makes objects (their size and their image
speed alike) grow towards the bottom of the image, by exp(perspective · (y/h − 0.6)), and widens
the walkway so that it spans that depth; ``object_scale`` shrinks or enlarges every object (0.5
gives walkers about 12 px tall at 160x120). Both default to the original scene (0 and 1).

Labels mark exactly the frames in which an anomalous object has at least one pixel in the frame.
Output, in the ``folder`` dataset layout: ``train/train_XX.avi``, ``test/test_XX.avi`` (OpenCV
MJPG), ``test/labels.csv`` (video,start_frame,end_frame; 0-based, inclusive) and
``synthetic.json`` describing every anomaly. Seeded and deterministic.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mulde.atomic import atomic_path, atomic_write
from mulde.datasets.folder import FolderDataset
from mulde.errors import DatasetError, InputError, VideoError

ANOMALY_KINDS = ("fast", "wrong_direction", "large_object", "loitering")


class Depth:
    """Image scale of an object at row y: exp(perspective · (y/h − 0.6)) · object_scale."""

    def __init__(self, h: int, perspective: float = 0.0, object_scale: float = 1.0) -> None:
        self.h, self.perspective, self.object_scale = float(h), float(perspective), float(object_scale)

    def motion(self, y: float) -> float:
        """Image speed factor at row y (1 without perspective)."""
        if not self.perspective:
            return 1.0
        return float(np.exp(self.perspective * (y / self.h - 0.6)))

    def size(self, y: float) -> float:
        return self.motion(y) * self.object_scale


FLAT = Depth(1)


@dataclass
class Agent:
    """One moving object; ``xy[t]`` is its centre at frame ``t`` (NaN when absent)."""

    kind: str
    xy: np.ndarray
    scale: float
    color: tuple[int, int, int]
    anomalous: bool = False
    info: dict = field(default_factory=dict)


def _background(rng: np.random.Generator, w: int, h: int, band: tuple[int, int]) -> np.ndarray:
    import cv2

    def smooth_noise(sigma: float) -> np.ndarray:
        n = rng.normal(0.0, 1.0, (h, w)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        return n / (n.std() + 1e-6)

    texture = 6.0 * smooth_noise(1.0) + 10.0 * smooth_noise(4.0)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (110, 150, 95)  # grass
    img[band[0]:band[1]] = (185, 180, 170)  # walkway
    for x in range(int(rng.integers(0, 12)), w, 12):  # paving joints
        img[band[0]:band[1], x] -= 18
    img[band[0]] -= 30
    img[band[1] - 1] -= 30
    img += texture[..., None]
    return np.clip(img, 0, 255)


def _walker_path(rng, n: int, t0: int, w: int, band: tuple[int, int], speed: float,
                 direction: int, depth: Depth = FLAT) -> np.ndarray:
    xy = np.full((n, 2), np.nan, np.float32)
    x = -12.0 if direction > 0 else w + 12.0
    y = rng.uniform(band[0] + 10, band[1] - 4)
    phase = rng.uniform(0, 2 * np.pi)
    for t in range(t0, n):
        if t >= 0:
            xy[t] = (x, y)
        v = speed * (1.0 + 0.12 * np.sin(0.15 * t + phase)) + rng.normal(0, 0.05)
        x += direction * max(v, 0.3) * depth.motion(y)
        y = float(np.clip(y + rng.normal(0, 0.15), band[0] + 10, band[1] - 4))
        if x < -20 or x > w + 20:
            break
    return xy


def _draw(img: np.ndarray, a: Agent, t: int, depth: Depth = FLAT) -> None:
    import cv2

    if np.isnan(a.xy[t, 0]):
        return
    x, y = a.xy[t]
    s = a.scale * depth.size(y)
    c = a.color
    shift = 4  # sub-pixel drawing
    p = lambda u, v: (int(round(u * 16)), int(round(v * 16)))  # noqa: E731
    q = lambda r: max(int(round(r * 16)), 16)  # noqa: E731
    if a.kind == "large_object":
        bw, bh = 22 * s, 9 * s
        cv2.rectangle(img, p(x - bw, y - bh), p(x + bw, y + bh), c, -1, cv2.LINE_AA, shift)
        win = tuple(int(v * 0.55) for v in c)
        cv2.rectangle(img, p(x - bw * 0.5, y - bh * 0.7), p(x + bw * 0.5, y - bh * 0.05), win, -1,
                      cv2.LINE_AA, shift)
        return
    if a.kind == "fast":
        cv2.circle(img, p(x - 6 * s, y + 2 * s), q(3.5 * s), c, 1, cv2.LINE_AA, shift)
        cv2.circle(img, p(x + 6 * s, y + 2 * s), q(3.5 * s), c, 1, cv2.LINE_AA, shift)
        cv2.ellipse(img, p(x, y - 5 * s), (q(2.5 * s), q(6 * s)), 0, 0, 360, c, -1, cv2.LINE_AA,
                    shift)
        cv2.circle(img, p(x, y - 12.5 * s), q(2.2 * s), c, -1, cv2.LINE_AA, shift)
        return
    cv2.ellipse(img, p(x, y - 6 * s), (q(3 * s), q(7 * s)), 0, 0, 360, c, -1, cv2.LINE_AA, shift)
    cv2.circle(img, p(x, y - 15 * s), q(2.6 * s), c, -1, cv2.LINE_AA, shift)


def _person_color(rng) -> tuple[int, int, int]:
    base = rng.uniform(30, 85)
    return tuple(int(np.clip(base + rng.normal(0, 12), 10, 110)) for _ in range(3))


def _normal_agents(rng, n: int, w: int, band: tuple[int, int], depth: Depth = FLAT) -> list[Agent]:
    agents = []
    t = -int(rng.integers(80, 140))
    while t < n:
        speed = rng.uniform(0.8, 2.2)
        xy = _walker_path(rng, n, t, w, band, speed, int(rng.choice([-1, 1])), depth)
        if not np.all(np.isnan(xy[:, 0])):
            agents.append(Agent("walker", xy, rng.uniform(0.85, 1.15), _person_color(rng)))
        t += int(rng.exponential(30)) + 6
    return agents


def _anomaly(rng, kind: str, n: int, t0: int, w: int, h: int, band: tuple[int, int],
             depth: Depth = FLAT) -> Agent:
    xy = np.full((n, 2), np.nan, np.float32)
    direction = int(rng.choice([-1, 1]))
    info: dict = {}
    if kind == "fast":
        speed = rng.uniform(5.0, 8.0)
        xy = _walker_path(rng, n, t0, w, band, speed, direction, depth)
        info = {"speed_px_per_frame": round(speed, 2), "direction": direction}
        return Agent(kind, xy, rng.uniform(0.9, 1.1), _person_color(rng), True, info)
    if kind == "large_object":
        speed = rng.uniform(2.5, 3.5)
        x, y = (-30.0 if direction > 0 else w + 30.0), rng.uniform(band[0] + 12, band[1] - 12)
        for t in range(t0, n):
            xy[t] = (x, y)
            x += direction * speed * depth.motion(y)
            if x < -40 or x > w + 40:
                break
        info = {"speed_px_per_frame": round(speed, 2), "direction": direction}
        color = tuple(int(v) for v in rng.integers(40, 200, 3))
        return Agent(kind, xy, rng.uniform(0.9, 1.1), color, True, info)
    if kind == "wrong_direction":
        speed = rng.uniform(1.4, 2.2)
        x, y = rng.uniform(0.2 * w, 0.8 * w), (-4.0 if direction > 0 else h + 20.0)
        for t in range(t0, n):
            xy[t] = (x, y)
            y += direction * speed * depth.motion(y)
            x += rng.normal(0, 0.15)
            if y < -10 or y > h + 24:
                break
        info = {"speed_px_per_frame": round(speed, 2), "direction": "down" if direction > 0 else "up"}
        return Agent(kind, xy, rng.uniform(0.9, 1.1), _person_color(rng), True, info)
    if kind == "loitering":
        speed = rng.uniform(1.6, 2.2)
        reach = rng.uniform(0.1 * w, 0.25 * w)
        stop_x = reach if direction > 0 else w - reach
        wait = int(rng.integers(18, 28))
        x, y = (-12.0 if direction > 0 else w + 12.0), rng.uniform(band[0] + 10, band[1] - 4)
        waited, heading = 0, direction
        for t in range(t0, n):
            xy[t] = (x + rng.normal(0, 0.2) * (0 < waited < wait), y)
            if heading == direction and (x - stop_x) * direction >= 0 and waited < wait:
                waited += 1
                if waited == wait:
                    heading = -direction
                continue
            x += heading * speed * depth.motion(y)
            if x < -20 or x > w + 20:
                break
        info = {"speed_px_per_frame": round(speed, 2), "stop_frames": wait}
        return Agent(kind, xy, rng.uniform(0.9, 1.1), _person_color(rng), True, info)
    raise InputError(f"unknown anomaly kind {kind!r}; choose from {', '.join(ANOMALY_KINDS)}")


def _intervals(mask: np.ndarray) -> list[tuple[int, int]]:
    idx = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(s), int(e) - 1) for s, e in zip(idx[::2], idx[1::2])]


def _render(path: Path, rng, agents: list[Agent], background: np.ndarray, n: int, fps: float,
            depth: Depth = FLAT) -> list[np.ndarray]:
    """Write the video; return per anomalous agent the frames in which it is visible."""
    import cv2

    h, w = background.shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h))
        if not writer.isOpened():
            raise VideoError(f"{path}: OpenCV cannot write MJPG video here")
        visible = [np.zeros(n, bool) for a in agents if a.anomalous]
        mask = np.zeros((h, w), np.uint8)
        try:
            for t in range(n):
                frame = background.copy()
                present = [a for a in agents if not np.isnan(a.xy[t, 0])]
                for a in sorted(present, key=lambda a: a.xy[t, 1]):
                    _draw(frame, a, t, depth)
                k = 0
                for a in agents:
                    if a.anomalous:
                        mask[:] = 0
                        _draw(mask, Agent(a.kind, a.xy, a.scale, (255, 255, 255)), t, depth)
                        visible[k][t] = bool(mask.any())
                        k += 1
                frame = frame.astype(np.float32) + rng.normal(0, 2.0, frame.shape).astype(np.float32)
                rgb = np.clip(frame, 0, 255).astype(np.uint8)
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
    return visible


def generate_synthetic(out_dir: str | Path, seed: int = 0, n_train: int = 4, n_test: int = 4,
                       n_frames: int = 120, size: tuple[int, int] = (160, 120),
                       fps: float = 25, perspective: float = 0.0, object_scale: float = 1.0) -> Path:
    """Render the benchmark into ``out_dir`` (folder layout) and return ``out_dir``.

    ``perspective`` (>= 0) and ``object_scale`` (> 0) vary the scene; see the module docstring.
    """
    w, h = int(size[0]), int(size[1])
    if n_frames < 60:
        raise InputError(f"n_frames must be >= 60 to fit an anomaly with normal frames around it, "
                         f"got {n_frames}")
    if w < 64 or h < 48:
        raise InputError(f"size must be at least 64x48, got {w}x{h}")
    if n_train < 1 or n_test < 1:
        raise InputError(f"n_train and n_test must be >= 1, got {n_train} and {n_test}")
    if not perspective >= 0 or not object_scale > 0:
        raise InputError(f"need perspective >= 0 and object_scale > 0, got {perspective} and {object_scale}")
    out = Path(out_dir).expanduser()
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    band = (int(0.38 * h), int(0.78 * h)) if not perspective else (int(0.25 * h), int(0.92 * h))
    depth = Depth(h, perspective, object_scale)
    background = _background(np.random.default_rng([seed, 0]), w, h, band)
    manifest: dict = {"seed": seed, "size": [w, h], "fps": fps, "n_frames": n_frames,
                      "walkway_rows": list(band), "kinds": list(ANOMALY_KINDS),
                      "perspective": perspective, "object_scale": object_scale, "videos": {}}
    for i in range(n_train):
        rng = np.random.default_rng([seed, 1, i])
        name = f"train_{i:02d}"
        agents = _normal_agents(rng, n_frames, w, band, depth)
        _render(out / "train" / f"{name}.avi", rng, agents, background, n_frames, fps, depth)
        manifest["videos"][name] = {"split": "train", "n_frames": n_frames,
                                    "n_walkers": len(agents), "anomalies": []}
    rows = []
    per_video = max(1, n_frames // 150)
    for i in range(n_test):
        rng = np.random.default_rng([seed, 2, i])
        name = f"test_{i:02d}"
        agents = _normal_agents(rng, n_frames, w, band, depth)
        kinds = [ANOMALY_KINDS[(i + j) % len(ANOMALY_KINDS)] for j in range(per_video)]
        slot = n_frames // per_video
        anomalies = []
        for j, kind in enumerate(kinds):
            t0 = j * slot + int(rng.integers(int(0.12 * slot), int(0.3 * slot) + 1))
            anomalies.append(_anomaly(rng, kind, n_frames, t0, w, h, band, depth))
        visible = _render(out / "test" / f"{name}.avi", rng, agents + anomalies, background,
                          n_frames, fps, depth)
        entries = []
        for a, vis in zip(anomalies, visible):
            for s, e in _intervals(vis):
                rows.append((name, s, e))
                entries.append({"kind": a.kind, "start_frame": s, "end_frame": e, **a.info})
        labels = np.any(visible, axis=0)
        manifest["videos"][name] = {"split": "test", "n_frames": n_frames,
                                    "n_walkers": len(agents), "anomalies": entries,
                                    "anomalous_frames": int(labels.sum())}
    with atomic_path(out / "test" / "labels.csv") as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["video", "start_frame", "end_frame"])
        writer.writerows(rows)
    atomic_write(out / "synthetic.json", json.dumps(manifest, indent=2))  # last: marks completion
    return out


def synthetic_labels(manifest: dict, video: str) -> np.ndarray:
    """Per-frame 0/1 labels of one test video from a ``synthetic.json`` manifest."""
    entry = manifest["videos"][video]
    labels = np.zeros(entry["n_frames"], np.uint8)
    for a in entry["anomalies"]:
        labels[a["start_frame"]:a["end_frame"] + 1] = 1
    return labels



class SyntheticDataset(FolderDataset):
    """The synthetic benchmark read as a ``folder`` dataset; generated into ``root`` if absent."""

    name = "synthetic"

    def __init__(self, root: str | Path, seed: int = 0, fps: float | None = 25.0) -> None:
        root = Path(root).expanduser()
        if not (root / "synthetic.json").is_file():
            if root.is_dir() and any(root.iterdir()):
                raise DatasetError(f"{root}: folder is not empty and holds no synthetic.json; pass "
                                   "an empty or new folder to generate the synthetic benchmark")
            generate_synthetic(root, seed=seed, fps=fps or 25.0)
        super().__init__(root, fps=fps)

    def manifest(self) -> dict:
        """The ``synthetic.json`` description of the anomalies."""
        return json.loads((self.root / "synthetic.json").read_text())
