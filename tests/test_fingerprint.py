"""Dataset fingerprints: cache keys follow the data, not the folder it is mounted at."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from mulde.datasets.base import fingerprint_tree
from mulde.datasets.folder import FolderDataset
from mulde.pipeline.extract import dataset_key


def make_dataset(root: Path) -> Path:
    """train/: a frame folder and a (fake) video file; test/: one frame folder and labels."""
    rng = np.random.default_rng(0)
    for split, name, n in (("train", "walk", 3), ("test", "run", 2)):
        folder = root / split / name
        folder.mkdir(parents=True)
        for t in range(n):
            cv2.imwrite(str(folder / f"{t:03d}.png"), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    (root / "train" / "clip.avi").write_bytes(b"RIFF" + bytes(100))
    (root / "test" / "labels.csv").write_text("video,start_frame,end_frame\nrun,0,1\n")
    return root


def key(root: Path) -> str:
    return dataset_key(FolderDataset(root))


def test_same_data_under_two_roots_shares_one_key(tmp_path):
    a = make_dataset(tmp_path / "node_a" / "data")
    b = tmp_path / "mnt" / "elsewhere"
    shutil.copytree(a, b)
    assert key(a) == key(b) and key(a).startswith("folder-")
    (b / "test" / ".run.000.png.123.tmp.png").write_bytes(b"partial")  # hidden files do not count
    (b / "notes.txt").write_text("not a video")
    (b / "test" / "labels.csv").write_text("video,start_frame,end_frame\n")  # labels do not change features
    assert key(a) == key(b)


def test_changed_data_gives_another_key(tmp_path):
    a = make_dataset(tmp_path / "a")
    base = key(a)
    changes = []

    def changed(edit) -> str:
        root = tmp_path / f"copy{len(changes)}"
        shutil.copytree(a, root)
        edit(root)
        changes.append(key(root))
        return changes[-1]

    assert changed(lambda r: (r / "train" / "clip.avi").write_bytes(b"RIFF" + bytes(101))) != base  # resized
    assert changed(lambda r: (r / "train" / "walk" / "001.png").write_bytes(b"x")) != base  # one frame
    assert changed(lambda r: (r / "train" / "walk" / "003.png").write_bytes(b"x")) != base  # a frame more
    assert changed(lambda r: (r / "train" / "clip.avi").rename(r / "train" / "clip2.avi")) != base
    assert changed(lambda r: (r / "test" / "run").rename(r / "test" / "jog")) != base
    assert len(set(changes)) == len(changes)  # and all different from each other
    assert fingerprint_tree(a, "folder") != fingerprint_tree(a, "synthetic")  # the name counts too


def test_real_ped2_fingerprint_is_cheap_and_stable(shared_data):
    from mulde.datasets.registry import get_dataset

    ds = get_dataset("ped2", shared_data / "ucsd_ped2")
    assert dataset_key(ds) == dataset_key(get_dataset("ped2", shared_data / "ucsd_ped2" / "." / ""))
    assert len(ds.fingerprint()) == 40
