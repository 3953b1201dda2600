"""The YOLO inference runtime option: resolution, fall-back, export shape, cache key, and that an
exported model (ONNX Runtime, OpenVINO) finds the PyTorch model's people on real Ped2 frames."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mulde.errors import InputError
from mulde.extractors import yolo_runtime as yr
from mulde.extractors.detection import YoloDetector
from mulde.extractors.objects import ObjectExtractor

# An exported model computes the same network in another engine. ONNX Runtime (fp32) gave the
# PyTorch boxes to 1e-3 px on these frames; OpenVINO runs bfloat16 on CPUs with AVX-512 BF16 (as
# here), measured: boxes within 0.17 px, keypoints within 0.46 px, scores within 0.05 (Ped2 test
# 04, frames 0/60/120 at imgsz 1280). Only people whose score is clear of the threshold must be
# found by both.
BOX_TOL_PX = 0.5
KEYPOINT_TOL_PX = 1.0
SCORE_TOL = 0.1
CLEAR_MARGIN = 0.1


def test_resolve_runtime_rules(monkeypatch, caplog):
    assert yr.resolve_runtime("torch", "cpu") == "torch"
    assert yr.resolve_runtime("auto", "cuda") == "torch"
    assert yr.resolve_runtime("auto", "cpu", embed=True) == "torch"
    with pytest.raises(InputError, match="yolo_runtime"):
        yr.resolve_runtime("tensorrt", "cpu")
    monkeypatch.setattr(yr, "missing_packages", lambda name: [])
    assert yr.resolve_runtime("auto", "cpu") == "onnx"  # fp32, PyTorch's boxes
    monkeypatch.setattr(yr, "missing_packages", lambda name: [name] if name == "onnx" else [])
    monkeypatch.setattr(yr, "inference_precision", lambda name: "bf16" if name == "openvino" else "fp32")
    assert yr.resolve_runtime("auto", "cpu") == "torch"  # bf16 OpenVINO costs accuracy: not for auto
    assert yr.resolve_runtime("openvino", "cpu") == "openvino"  # unless asked for
    monkeypatch.setattr(yr, "inference_precision", lambda name: "fp32")
    assert yr.resolve_runtime("auto", "cpu") == "openvino"
    monkeypatch.setattr(yr, "missing_packages", lambda name: [name])
    yr._LOGGED.clear()
    with caplog.at_level(logging.INFO, logger="mulde"):
        assert yr.resolve_runtime("openvino", "cpu") == "torch"
        assert yr.resolve_runtime("openvino", "cpu") == "torch"
    lines = [r.getMessage() for r in caplog.records if "not installed" in r.getMessage()]
    assert len(lines) == 1 and "openvino" in lines[0]  # one log line, not one per call


@pytest.mark.parametrize(("hw", "imgsz", "shape"), [((240, 360), 1280, (864, 1280)),
                                                    ((360, 640), 1280, (736, 1280)),
                                                    ((480, 640), 640, (480, 640)),
                                                    ((720, 480), 320, (320, 224))])
def test_input_shape_is_ultralytics_letterbox(hw, imgsz, shape):
    assert yr.input_shape(*hw, imgsz) == shape


def test_unknown_runtime_is_a_config_error():
    with pytest.raises(InputError, match="yolo_runtime"):
        ObjectExtractor(yolo_runtime="tensorrt", device="cpu")


def test_cache_key_names_the_runtime(monkeypatch):
    monkeypatch.setattr(yr, "missing_packages", lambda name: [])
    torch_cfg = ObjectExtractor(yolo_runtime="torch", device="cpu", deep=False).config()
    onnx_cfg = ObjectExtractor(yolo_runtime="onnx", device="cpu", deep=False).config()
    ov_cfg = ObjectExtractor(yolo_runtime="openvino", device="cpu", deep=False).config()
    assert "yolo_runtime" not in torch_cfg  # keys of caches made before the option are kept
    assert onnx_cfg["yolo_runtime"] == "onnx"
    # OpenVINO computes in bfloat16 where the CPU has it: other features, so another key
    assert ov_cfg["yolo_runtime"] == f"openvino-{yr.inference_precision('openvino')}".replace("-fp32", "")
    assert len({str(sorted(c.items())) for c in (torch_cfg, onnx_cfg, ov_cfg)}) == 3
    # the pipeline switch changes no feature, so it is not part of the key
    assert ObjectExtractor(yolo_runtime="torch", device="cpu", deep=False, pipelined=False).config() == torch_cfg


class _Recorded:
    """An extractor whose config is given: what ``check_features`` compares with a run's record."""

    name, feature_types = "objects", ("velocity",)

    def __init__(self, **config):
        self._config = {"extractor": "objects", "n_bins": 8, **config}

    def config(self):
        return self._config


@pytest.mark.parametrize("trained, here", [({"amp": True}, {"amp": False, "yolo_runtime": "onnx"}),
                                           ({"amp": False, "yolo_runtime": "openvino-bf16"}, {"amp": True}),
                                           ({"precision": "bf16"}, {"precision": "fp32"})])
def test_a_run_trained_at_another_precision_scores_with_a_warning(tmp_path, caplog, trained, here):
    # trained on a GPU (YOLO and CLIP in fp16, Hiera in bf16), scored on a CPU, or the other way round
    from mulde.pipeline.cache import extractor_key
    from mulde.pipeline.run import Run, check_features

    then = _Recorded(**trained)
    run = Run(folder=tmp_path, config={}, extractor="objects", extractor_key=extractor_key("objects", then.config()),
              feature_types=("velocity",), stats={}, detectors={}, info={"extractor_config": then.config()})
    with caplog.at_level("WARNING", logger="mulde.pipeline.run"):
        check_features(run, _Recorded(**here))
    assert len(caplog.records) == 1 and "scores may shift slightly" in caplog.text
    with pytest.raises(InputError, match="n_bins: 8 -> 4"):  # a setting that changes the features is refused
        check_features(run, _Recorded(**here, n_bins=4))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_exported_detector_matches_pytorch_on_ped2(shared_data, runtime):
    if yr.missing_packages(runtime):
        pytest.skip(f"{runtime} runtime not installed ({', '.join(yr.missing_packages(runtime))})")
    from mulde.datasets.video import open_video

    with open_video(shared_data / "ucsd_ped2" / "testing" / "frames" / "04") as reader:
        frames = reader.get([0, 60, 120])
    ref = YoloDetector(imgsz=1280, device="cpu", runtime="torch")(frames)
    det = YoloDetector(imgsz=1280, device="cpu", runtime=runtime)
    assert det.runtime == runtime
    out = det(frames)
    assert yr.export_path(det.weights, runtime, (864, 1280)).exists()  # cached for the next run
    assert sum(len(d) for d in ref) >= 10  # Ped2 at 1280: several people per frame
    for a, b in zip(ref, out):
        clear = a.scores > det.conf + CLEAR_MARGIN
        for i in np.flatnonzero(clear):
            err = np.abs(b.boxes - a.boxes[i]).max(axis=1)
            j = int(np.argmin(err))
            assert err[j] < BOX_TOL_PX, (runtime, a.boxes[i], b.boxes[j])
            assert abs(float(b.scores[j] - a.scores[i])) < SCORE_TOL
            assert np.abs(b.keypoints[j, :, :2] - a.keypoints[i, :, :2]).max() < KEYPOINT_TOL_PX
        assert abs(len(a) - len(b)) <= int((~clear).sum())  # only borderline scores may differ
