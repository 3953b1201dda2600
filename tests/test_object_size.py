"""``yolo_imgsz: auto``: the detector size from the moving objects in the training videos."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mulde.config import resolve_config
from mulde.errors import InputError
from mulde.extractors.objects import ObjectExtractor
from mulde.pipeline.object_size import (
    TARGET_HEIGHT,
    choose_imgsz,
    moving_object_heights,
    resolve_auto_imgsz,
)


def test_size_scales_the_median_object_to_the_target_height():
    # Ped2: 360x240 frames, median moving blob 23 px -> 1280, the size that finds its people
    assert choose_imgsz(np.array([16, 19, 23, 28, 34.0]), (240, 360)) == 1280
    assert choose_imgsz(np.array([46.0]), (240, 360)) == 640  # twice as tall: the lower bound
    assert choose_imgsz(np.array([5.0]), (720, 1280)) == 1920  # tiny: the cost limit
    assert choose_imgsz(np.zeros(0), (240, 360)) == 640  # nothing moved
    size = choose_imgsz(np.array([40.0]), (480, 856))
    assert size % 32 == 0 and size >= 856 * TARGET_HEIGHT / 40 > size - 32


def test_auto_is_measured_on_the_training_videos_and_recorded(tmp_path):
    from mulde.datasets.registry import get_dataset
    from mulde.datasets.synthetic import generate_synthetic
    from mulde.pipeline.extract import build_extractors

    generate_synthetic(tmp_path, n_train=2, n_test=1, n_frames=60)
    ds = get_dataset("folder", str(tmp_path))
    heights, shape = moving_object_heights(ds)
    assert len(heights) > 20 and shape[0] > 0
    cfg = resolve_config({"dataset": "folder", "root": str(tmp_path), "features": "objects"},
                         opt=[("yolo_imgsz", "auto"), ("proposals", "yolo"), ("deep", False)])
    resolved = resolve_auto_imgsz(cfg, ds)
    assert resolved.extractor_options["yolo_imgsz"] == choose_imgsz(heights, shape)
    ex = build_extractors(cfg, ds)[0]
    assert ex.cfg.imgsz == choose_imgsz(heights, shape)
    with pytest.raises(InputError, match="yolo_imgsz auto is measured"):
        build_extractors(cfg)  # no dataset to measure on
    with pytest.raises(InputError, match="yolo_imgsz must be a number of pixels or auto"):
        ObjectExtractor(proposals="yolo", imgsz="big", device="cpu")


def test_cli_rejects_a_bad_size_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mulde", "extract", "--dataset", "folder", "--root", str(tmp_path),
                          "--yolo-imgsz", "big"], capture_output=True, text=True)
    assert out.returncode == 2 and "give a number of pixels or auto" in out.stderr
    assert "Traceback" not in out.stderr
