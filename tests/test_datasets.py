"""Dataset readers on miniature copies of each layout, the real Ped2, info and download."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from urllib.error import URLError

import cv2
import numpy as np
import pytest
import scipy.io

from mulde.datasets import download as dl
from mulde.datasets import get_dataset, list_datasets
from mulde.datasets.info import dataset_info, format_info
from mulde.datasets.ucsd import load_gt_mat, parse_ucsd_m
from mulde.errors import DatasetError, InputError, MuldeError


def write_frames(folder: Path, n: int, ext: str = ".jpg", size=(32, 24)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}{ext}"), np.full((size[1], size[0], 3), 8 * i, np.uint8))
    return folder


def write_video(path: Path, n: int, fourcc: str = "MJPG", size=(32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 5 * i, np.uint8))
    writer.release()
    return path


def cell(items) -> np.ndarray:
    out = np.empty((1, len(items)), dtype=object)
    for k, v in enumerate(items):
        out[0, k] = v
    return out


def expected(n: int, *ranges0) -> np.ndarray:
    lab = np.zeros(n, np.uint8)
    for s, e in ranges0:
        lab[s:e + 1] = 1
    return lab


# ---------------------------------------------------------------- UCSD

def test_ped2_frame_layout_converts_one_based_ranges(tmp_path):
    for v in ("01", "02"):
        write_frames(tmp_path / "training" / "frames" / v, 6)
    write_frames(tmp_path / "testing" / "frames" / "01", 10)
    write_frames(tmp_path / "testing" / "frames" / "02", 12)
    gt = cell([np.array([[3], [5]]), np.array([[1, 10], [2, 12]])])
    scipy.io.savemat(tmp_path / "ped2.mat", {"gt": gt})
    ds = get_dataset("ped2", tmp_path)
    assert [v.video_id for v in ds.videos("train")] == ["01", "02"]
    assert all(v.labels is None for v in ds.videos("train"))
    test = ds.videos("test")
    assert [v.video_id for v in test] == ["01", "02"]
    assert np.array_equal(test[0].labels, expected(10, (2, 4)))
    assert np.array_equal(test[1].labels, expected(12, (0, 1), (9, 11)))
    assert test[0].labels.dtype == np.uint8


def test_ped2_range_beyond_video_is_an_error(tmp_path):
    write_frames(tmp_path / "training" / "frames" / "01", 4)
    write_frames(tmp_path / "testing" / "frames" / "01", 10)
    scipy.io.savemat(tmp_path / "ped2.mat", {"gt": cell([np.array([[5], [11]])])})
    with pytest.raises(DatasetError, match="01: anomaly range 5..11.*10 frames"):
        get_dataset("ped2", tmp_path).videos("test")
    scipy.io.savemat(tmp_path / "ped2.mat", {"gt": cell([np.array([[1], [2]])] * 2)})
    with pytest.raises(DatasetError, match="2 test videos but 1 test folders"):
        get_dataset("ped2", tmp_path).videos("test")


def test_ped1_official_layout_parses_m_file_and_skips_gt_folders(tmp_path):
    base = tmp_path / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped1"
    for v in ("Train001", "Train002", "Train010"):
        write_frames(base / "Train" / v, 5, ".tif")
    write_frames(base / "Test" / "Test001", 8, ".tif")
    write_frames(base / "Test" / "Test001_gt", 8, ".bmp")
    write_frames(base / "Test" / "Test002", 9, ".tif")
    (base / "Test" / "UCSDped1.m").write_text(
        "TestVideoFile = {};\n"
        "% a comment TestVideoFile{end+1}.gt_frame = [1:2];\n"
        "TestVideoFile{end+1}.gt_frame = [3:5];\n"
        "TestVideoFile{end+1}.gt_frame = [1:2, 8:9];\n")
    ds = get_dataset("ped1", tmp_path)
    assert [v.video_id for v in ds.videos("train")] == ["Train001", "Train002", "Train010"]
    test = ds.videos("test")
    assert [v.video_id for v in test] == ["Test001", "Test002"]
    assert np.array_equal(test[0].labels, expected(8, (2, 4)))
    assert np.array_equal(test[1].labels, expected(9, (0, 1), (7, 8)))


@pytest.mark.shared_data
def test_real_ped2_counts_and_label_sources_agree(shared_data):
    root = shared_data / "ucsd_ped2"
    ds = get_dataset("ped2", root)
    train, test = ds.videos("train"), ds.videos("test")
    assert (len(train), len(test)) == (16, 12)
    assert sum(len(list(v.source.glob("*.jpg"))) for v in train) == 2550
    assert sum(len(v.labels) for v in test) == 2010
    from_m = parse_ucsd_m(root / "UCSDped2.m")
    assert from_m == load_gt_mat(root / "ped2.mat")
    assert from_m[0] == [(61, 180)]
    assert test[0].labels[59] == 0 and test[0].labels[60] == 1 and test[0].labels[-1] == 1
    for item, ranges in zip(test, from_m):
        assert int(item.labels.sum()) == sum(e - s + 1 for s, e in ranges)


# ---------------------------------------------------------------- Avenue / ShanghaiTech

def test_avenue_official_layout_and_length_mismatch(tmp_path):
    root = tmp_path / "Avenue Dataset"
    write_video(root / "training_videos" / "01.avi", 6)
    write_video(root / "testing_videos" / "01.avi", 7)
    write_video(root / "testing_videos" / "02.avi", 5)
    gt = tmp_path / "ground_truth_demo" / "testing_label_mask"
    gt.mkdir(parents=True)
    masks = [np.zeros((4, 4), np.uint8) for _ in range(7)]
    masks[3][1, 1] = 1
    masks[4][0, 0] = 1
    scipy.io.savemat(gt / "1_label.mat", {"volLabel": cell(masks)})
    scipy.io.savemat(gt / "2_label.mat", {"volLabel": cell([np.zeros((4, 4))] * 5)})
    ds = get_dataset("avenue", tmp_path)
    assert [v.video_id for v in ds.videos("train")] == ["01"]
    test = ds.videos("test")
    assert np.array_equal(test[0].labels, expected(7, (3, 4)))
    assert test[1].labels.tolist() == [0] * 5
    scipy.io.savemat(gt / "2_label.mat", {"volLabel": cell([np.zeros((4, 4))] * 6)})
    with pytest.raises(DatasetError, match=r"02: labels from .*2_label.mat cover 6 frames but the "
                                           r"video has 5 decodable frames"):
        get_dataset("avenue", tmp_path).videos("test")


def test_avenue_frame_layout(tmp_path):
    write_frames(tmp_path / "training" / "frames" / "01", 4)
    write_frames(tmp_path / "testing" / "frames" / "01", 6)
    scipy.io.savemat(tmp_path / "avenue.mat", {"gt": cell([np.array([[6], [6]])])})
    test = get_dataset("avenue", tmp_path).videos("test")
    assert np.array_equal(test[0].labels, expected(6, (5, 5)))


def test_shanghaitech_layout(tmp_path):
    write_video(tmp_path / "training" / "videos" / "01_001.avi", 5)
    write_video(tmp_path / "training" / "videos" / "02_001.avi", 5)
    write_frames(tmp_path / "testing" / "frames" / "01_0014", 6)
    masks = tmp_path / "testing" / "test_frame_mask"
    masks.mkdir(parents=True)
    np.save(masks / "01_0014.npy", np.array([0, 0, 1, 1, 0, 0]))
    ds = get_dataset("shanghaitech", tmp_path)
    train = ds.videos("train")
    assert [(v.video_id, v.scene) for v in train] == [("01_001", "01"), ("02_001", "02")]
    test = ds.videos("test")
    assert test[0].scene == "01" and test[0].labels.tolist() == [0, 0, 1, 1, 0, 0]
    np.save(masks / "01_0014.npy", np.zeros(7))
    with pytest.raises(DatasetError, match="01_0014: labels .* cover 7 frames .* 6 decodable"):
        get_dataset("shanghaitech", tmp_path).videos("test")


# ---------------------------------------------------------------- UBnormal / UCF-Crime

def test_ubnormal_splits_and_tracks(tmp_path):
    s1, s2 = tmp_path / "Scene1", tmp_path / "Scene2"
    write_video(s1 / "normal_scene_1_scenario_1.mp4", 8, "mp4v")
    write_video(s1 / "abnormal_scene_1_scenario_1.mp4", 8, "mp4v")
    write_video(s2 / "normal_scene_2_scenario_3.mp4", 9, "mp4v")
    write_video(s2 / "abnormal_scene_2_scenario_3.mp4", 10, "mp4v")
    ann = s2 / "abnormal_scene_2_scenario_3_annotations"
    ann.mkdir()
    (ann / "abnormal_scene_2_scenario_3_tracks.txt").write_text("1,2,4\n2,8,9\n")
    ann1 = s1 / "abnormal_scene_1_scenario_1_annotations"
    ann1.mkdir()
    (ann1 / "abnormal_scene_1_scenario_1_tracks.txt").write_text("0,0,0\n")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "normal_training_video_names.txt").write_text("normal_scene_1_scenario_1\n")
    (scripts / "abnormal_training_video_names.txt").write_text("abnormal_scene_1_scenario_1\n")
    (scripts / "normal_test_video_names.txt").write_text("normal_scene_2_scenario_3\n")
    (scripts / "abnormal_test_video_names.txt").write_text("abnormal_scene_2_scenario_3\n")
    ds = get_dataset("ubnormal", tmp_path)
    train = ds.videos("train")
    assert [v.video_id for v in train] == ["normal_scene_1_scenario_1"]  # normal videos only
    test = {v.video_id: v for v in ds.videos("test")}
    assert set(test) == {"normal_scene_2_scenario_3", "abnormal_scene_2_scenario_3"}
    assert test["abnormal_scene_2_scenario_3"].scene == "2"
    assert np.array_equal(test["abnormal_scene_2_scenario_3"].labels, expected(10, (2, 4), (8, 9)))
    assert test["normal_scene_2_scenario_3"].labels.tolist() == [0] * 9
    (ann / "abnormal_scene_2_scenario_3_tracks.txt").write_text("1,2,10\n")
    with pytest.raises(DatasetError, match="2..10 .* 10 decodable frames"):
        get_dataset("ubnormal", tmp_path).videos("test")


def test_ucfcrime_locates_files_and_reads_annotation(tmp_path):
    write_video(tmp_path / "Anomaly-Videos-Part-1" / "Arson" / "Arson011_x264.mp4", 12, "mp4v")
    write_video(tmp_path / "Anomaly-Videos-Part-1" / "Arson" / "Arson001_x264.mp4", 5, "mp4v")
    write_video(tmp_path / "Training-Normal-Videos-Part-1" / "Normal_Videos001_x264.mp4", 6,
                "mp4v")
    write_video(tmp_path / "Testing_Normal_Videos_Anomaly" / "Normal_Videos_003_x264.mp4", 7,
                "mp4v")
    splits = tmp_path / "UCF_Crimes-Train-Test-Split" / "Anomaly_Detection_splits"
    splits.mkdir(parents=True)
    (splits / "Anomaly_Train.txt").write_text(
        "Arson/Arson001_x264.mp4\nTraining_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4\n")
    (splits / "Anomaly_Test.txt").write_text(
        "Arson/Arson011_x264.mp4\nTesting_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4\n")
    (tmp_path / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt").write_text(
        "Arson011_x264.mp4  Arson  2  3  10  12\n"
        "Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1\n")
    ds = get_dataset("ucfcrime", tmp_path)
    assert [v.video_id for v in ds.videos("train")] == ["Normal_Videos001_x264"]
    test = {v.video_id: v for v in ds.videos("test")}
    assert np.array_equal(test["Arson011_x264"].labels, expected(12, (1, 2), (9, 11)))
    assert test["Normal_Videos_003_x264"].labels.tolist() == [0] * 7


# ---------------------------------------------------------------- folder

def test_folder_dataset_labels_csv(tmp_path):
    write_video(tmp_path / "train" / "a.avi", 5)
    write_frames(tmp_path / "train" / "b", 4)
    write_video(tmp_path / "test" / "x.avi", 10)
    write_video(tmp_path / "test" / "y.avi", 6)
    ds = get_dataset("folder", tmp_path)
    assert [v.video_id for v in ds.videos("train")] == ["a", "b"]
    assert all(v.labels is None for v in ds.videos("test"))
    (tmp_path / "labels.csv").write_text("video,start_frame,end_frame\nx,0,1\nx.avi,7,9\n")
    test = get_dataset("folder", tmp_path).videos("test")
    assert np.array_equal(test[0].labels, expected(10, (0, 1), (7, 9)))
    assert test[1].labels.tolist() == [0] * 6
    (tmp_path / "labels.csv").write_text("video,start_frame,end_frame\nzzz,0,1\n")
    with pytest.raises(DatasetError, match="'zzz' is not in"):
        get_dataset("folder", tmp_path).videos("test")
    (tmp_path / "labels.csv").write_text("video,start_frame,end_frame\nx,5,10\n")
    with pytest.raises(DatasetError, match="x: anomaly range 5..10"):
        get_dataset("folder", tmp_path).videos("test")


# ---------------------------------------------------------------- registry and errors

def test_registry_errors(tmp_path):
    assert {"ped1", "ped2", "avenue", "shanghaitech", "ubnormal", "ucfcrime", "folder",
            "synthetic"} <= set(list_datasets())
    with pytest.raises(InputError, match="unknown dataset 'ped3'.*ped2.*avenue"):
        get_dataset("ped3", tmp_path)
    with pytest.raises(DatasetError, match="dataset root not found"):
        get_dataset("ped2", tmp_path / "missing")
    for name, hint in [("ped2", "training/frames"), ("avenue", "training_videos"),
                       ("shanghaitech", "training"), ("ubnormal", "Scene1")]:
        with pytest.raises(DatasetError, match=hint):
            get_dataset(name, tmp_path)
    with pytest.raises(DatasetError, match="train"):
        get_dataset("folder", tmp_path).videos("train")
    with pytest.raises(InputError, match="unknown split"):
        get_dataset("folder", tmp_path).videos("val")


def test_dataset_info(tmp_path):
    write_video(tmp_path / "train" / "a.avi", 5)
    write_video(tmp_path / "test" / "x.avi", 10)
    write_frames(tmp_path / "test" / "y", 6, size=(32, 32))
    (tmp_path / "labels.csv").write_text("video,start_frame,end_frame\nx,0,3\n")
    info = dataset_info(get_dataset("folder", tmp_path), progress=False)
    assert info["train_videos"] == 1 and info["test_videos"] == 2
    assert (info["train_frames"], info["test_frames"]) == (5, 16)
    assert info["anomalous_fraction"] == pytest.approx(4 / 16)
    assert info["frame_size"] == [32, 32] and info["problems"] == []
    assert "16 frames" in format_info(info)
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "train" / "broken.avi").write_bytes(b"garbage" * 50)
    info = dataset_info(get_dataset("folder", tmp_path), progress=False)
    assert info["anomalous_fraction"] is None
    assert any("broken" in p for p in info["problems"])
    assert any("x has no labels" in p for p in info["problems"])


# ---------------------------------------------------------------- download (no network)

def test_download_offline_and_unavailable(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(dl, "urlopen", offline)
    with pytest.raises(MuldeError, match=r"cannot download http://www.svcl.ucsd.edu/.*"
                                         r"UCSD_Anomaly_Dataset.tar.gz"):
        dl.download_dataset("ped2", tmp_path)
    with pytest.raises(MuldeError, match="svip-lab.github.io"):
        dl.download_dataset("shanghaitech", tmp_path)
    with pytest.raises(InputError, match="unknown dataset"):
        dl.download_dataset("nope", tmp_path)


def test_fetch_and_extract_checks_sha256(tmp_path):
    payload = b"frame data"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("UCSDped2/readme.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    src = tmp_path / "src" / "data.tar.gz"
    src.parent.mkdir()
    src.write_bytes(buf.getvalue())
    good = hashlib.sha256(buf.getvalue()).hexdigest()
    with pytest.raises(DatasetError, match="does not match"):
        dl.fetch_and_extract(src.as_uri(), tmp_path / "bad", sha256="0" * 64, progress=False)
    out = dl.fetch_and_extract(src.as_uri(), tmp_path / "ok", sha256=good, progress=False)
    assert (out / "UCSDped2" / "readme.txt").read_bytes() == payload
