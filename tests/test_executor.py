"""Parallel extraction: workers, Ray, shards and concurrent commands write the same cache as the
one-process loop; claims keep them off each other's videos; failures and killed workers are
contained. Extraction uses motion-proposal object features (no weights) on a tiny synthetic set."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from mulde.datasets.folder import FolderDataset
from mulde.errors import InputError, VideoError
from mulde.extractors.objects import ObjectExtractor
from mulde.pipeline.cache import FeatureCache
from mulde.pipeline.claims import Claims, merge_json
from mulde.pipeline.executor import (
    FailedVideos,
    RunOptions,
    WorkItem,
    import_ray,
    parse_shard,
    select_shard,
)
from mulde.pipeline.extract import extract_split

TESTS = Path(__file__).resolve().parent
OPTIONS = {"proposals": "motion", "motion_min_area": 20, "velocity_extras": ("magnitude", "geometry"),
           "deep": False, "device": "cpu"}
N_TRAIN = 4


def make_extractor(cls=ObjectExtractor):
    return cls(**OPTIONS)


class KillingExtractor(ObjectExtractor):
    """Kills its own process (SIGKILL) on the video named by $MULDE_TEST_KILL, the first time only."""

    def extract(self, reader, progress=True):
        marker = Path(os.environ["MULDE_TEST_KILL_MARKER"])
        if Path(reader.path).stem == os.environ.get("MULDE_TEST_KILL") and not marker.exists():
            marker.write_text(str(os.getpid()))
            next(iter(reader.iter_chunks(16)))  # mid-video: some frames decoded
            os.kill(os.getpid(), signal.SIGKILL)
        return super().extract(reader, progress)


class FlakyExtractor(ObjectExtractor):
    """Raises on the video named by $MULDE_TEST_FAIL."""

    def extract(self, reader, progress=True):
        if Path(reader.path).stem == os.environ.get("MULDE_TEST_FAIL"):
            raise RuntimeError(f"flaky {Path(reader.path).stem}")
        return super().extract(reader, progress)


class LoggingExtractor(ObjectExtractor):
    """Appends ``<pid> <video>`` to $MULDE_TEST_LOG for every video it computes."""

    def extract(self, reader, progress=True):
        with open(os.environ["MULDE_TEST_LOG"], "a") as fh:
            fh.write(f"{os.getpid()} {Path(reader.path).stem}\n")
        time.sleep(0.3)  # keep two concurrent commands overlapping
        return super().extract(reader, progress)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from mulde.datasets.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synth"), seed=3, n_train=N_TRAIN, n_test=1,
                              n_frames=60, size=(96, 72))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """Features of the one-process loop (inline executor)."""
    cache = FeatureCache(tmp_path_factory.mktemp("ref"))
    summary = extract_split(FolderDataset(data), "train", make_extractor(), cache, progress=False)
    assert summary.report.executor == "inline" and summary.computed == N_TRAIN
    return read_features(summary.folder)


def read_features(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted(p for p in Path(folder).glob("*.npz") if not p.name.startswith(".")):
        with np.load(path) as z:
            out[path.name] = {k: z[k] for k in z.files}
    return out


def assert_same(folder: Path, reference) -> None:
    got = read_features(folder)
    assert sorted(got) == sorted(reference)
    for name, arrays in reference.items():
        assert sorted(got[name]) == sorted(arrays), name
        for k, v in arrays.items():
            np.testing.assert_array_equal(got[name][k], v, err_msg=f"{name}:{k}")


def run_script(code: str, env: dict | None = None, wait: bool = True):
    """Start ``python -c code`` with the tests folder importable; return the Popen."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        proc.wait(timeout=300)
    return proc


EXTRACT = """
import os, time
from pathlib import Path
from mulde.datasets.folder import FolderDataset
from mulde.pipeline.cache import FeatureCache
from mulde.pipeline.extract import extract_split
import test_executor as t
ext = t.make_extractor(getattr(t, {cls!r}))
barrier = os.environ.get("MULDE_TEST_BARRIER")
if barrier:  # start extracting together with the other command
    Path(barrier, str(os.getpid())).touch()
    while len(os.listdir(barrier)) < 2:
        time.sleep(0.05)
s = extract_split(FolderDataset({data!r}), "train", ext, FeatureCache({cache!r}), progress=False,
                  shard={shard!r})
print("computed", s.computed, "skipped", s.skipped)
"""


def extract_code(data, cache, shard=None, cls="ObjectExtractor") -> str:
    return EXTRACT.format(data=str(data), cache=str(cache), shard=shard, cls=cls)


# --- parallel runs give the one-process features ---------------------------------------------


def test_two_local_workers_match_one_process(data, reference, tmp_path):
    summary = extract_split(FolderDataset(data), "train", make_extractor(), FeatureCache(tmp_path),
                            progress=False, workers=2)
    assert (summary.report.executor, summary.report.workers, summary.computed) == ("local", 2, N_TRAIN)
    assert summary.report.frames == 60 * N_TRAIN
    assert_same(summary.folder, reference)
    assert not list(summary.folder.glob(".claims/*.claim")), "claims are released"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_a_worker_that_imports_another_mulde_says_so(tmp_path):
    # the version is part of every cache key: a worker importing another copy of the package
    # (a source tree beside an installed one) would write under other keys
    import pickle

    from mulde.errors import MuldeError
    from mulde.pipeline.extract_job import ExtractJob

    job = pickle.loads(pickle.dumps(ExtractJob(make_extractor(), FeatureCache(tmp_path), "folder", "train")))
    job.setup(None)  # the same copy: the worker's extractor writes the same key
    job._extractor, job.version = None, "0.0.0+elsewhere"
    with pytest.raises(MuldeError, match=r"mulde 0\.0\.0\+elsewhere and its worker mulde .*pip install -e"):
        job.setup(None)


def test_ray_local_cluster_matches_one_process(ray_cluster, data, reference, tmp_path):
    summary = extract_split(FolderDataset(data), "train", make_extractor(), FeatureCache(tmp_path),
                            progress=False, executor="ray", workers=2)
    assert (summary.report.executor, summary.report.workers, summary.computed) == ("ray", 2, N_TRAIN)
    assert_same(summary.folder, reference)
    again = extract_split(FolderDataset(data), "train", make_extractor(), FeatureCache(tmp_path),
                          progress=False, executor="ray", workers=2)
    assert (again.computed, again.skipped) == (0, N_TRAIN)
    assert ray_cluster.is_initialized(), "a cluster the caller started is left running"


def test_two_shards_as_processes_fill_one_cache(data, reference, tmp_path):
    procs = [run_script(extract_code(data, tmp_path, f"{k}/2"), wait=False) for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "computed 2 skipped 0" in out
    summary = extract_split(FolderDataset(data), "train", make_extractor(), FeatureCache(tmp_path), progress=False)
    assert (summary.computed, summary.skipped) == (0, N_TRAIN)  # the cache is the merge point
    assert_same(summary.folder, reference)
    manifest = json.loads((summary.folder.parent / "manifest.json").read_text())
    assert manifest["extractor"] == "objects" and manifest["roots"] == [str(data)]


def test_two_commands_at_once_never_compute_a_video_twice(data, reference, tmp_path):
    log = tmp_path / "computed.log"
    (tmp_path / "barrier").mkdir()
    env = {"MULDE_TEST_LOG": str(log), "MULDE_TEST_BARRIER": str(tmp_path / "barrier")}
    code = extract_code(data, tmp_path / "cache", cls="LoggingExtractor")
    procs = [run_script(code, env, wait=False) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    videos = [line.split()[1] for line in log.read_text().splitlines()]
    assert sorted(videos) == [f"train_{i:02d}" for i in range(N_TRAIN)], f"computed twice: {videos}"
    assert len({line.split()[0] for line in log.read_text().splitlines()}) == 2, "both commands worked"
    folder = next((tmp_path / "cache").rglob("train"))
    assert_same(folder, reference)
    assert not list(folder.glob(".*.tmp*"))


# --- failures are contained ------------------------------------------------------------------


def test_sigkilled_worker_is_replaced_and_its_video_retried(data, reference, tmp_path, monkeypatch):
    monkeypatch.setenv("MULDE_TEST_KILL", "train_01")
    monkeypatch.setenv("MULDE_TEST_KILL_MARKER", str(tmp_path / "killed"))
    summary = extract_split(FolderDataset(data), "train", make_extractor(KillingExtractor),
                            FeatureCache(tmp_path / "cache"), progress=False, workers=2)
    assert (tmp_path / "killed").exists(), "a worker was killed"
    assert int((tmp_path / "killed").read_text()) != os.getpid()
    assert summary.computed == N_TRAIN and summary.failed == 0 and summary.failures_file is None
    assert_same(summary.folder, reference)


def test_killed_command_leaves_a_stale_claim_that_the_rerun_takes_over(data, reference, tmp_path):
    # The command is killed while it writes train_01's features: np.savez writes half a file.
    code = extract_code(data, tmp_path / "cache", cls="ObjectExtractor").replace(
        "import test_executor as t", textwrap.dedent("""
        import os, signal, numpy
        import test_executor as t
        _savez = numpy.savez
        def savez(fh, **arrays):
            if "train_01" in getattr(fh, "name", ""):
                fh.write(b"PK\\x03\\x04 half a zip")
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return _savez(fh, **arrays)
        numpy.savez = savez
        """))
    proc = run_script(code)
    assert proc.returncode == -signal.SIGKILL
    folder = next((tmp_path / "cache").rglob("train"))
    claims = Claims(folder / ".claims")
    assert claims.holder("train_01")["pid"] == proc.pid and claims.is_stale("train_01")
    assert not (folder / "train_01.velocity.npz").exists(), "no partial file under the final name"
    assert list(folder.glob(".train_01.velocity.npz.*")), "the half-written temporary file is hidden"
    t0 = time.monotonic()
    summary = extract_split(FolderDataset(data), "train", make_extractor(), FeatureCache(tmp_path / "cache"),
                            progress=False)
    assert time.monotonic() - t0 < 60, "the dead command's claim did not block the rerun"
    assert (summary.computed, summary.skipped) == (N_TRAIN - 1, 1)
    assert_same(folder, reference)
    assert not claims.path("train_01").exists()
    assert not list(folder.glob(".train_01.*")), "the dead writer's temporary file is cleaned up"


def test_corrupt_video_is_listed_and_the_others_are_extracted(data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data, root)
    bad = root / "train" / "train_02.avi"
    bad.write_bytes(b"this is not a video")
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(FailedVideos) as info:
        extract_split(FolderDataset(root), "train", make_extractor(), cache, progress=False)
    message = str(info.value)
    assert "1 of 4 videos failed" in message and "failures.json" in message and "\n" not in message
    folder = next((tmp_path / "cache").rglob("train"))
    assert sorted(p.name for p in folder.glob("*.npz")) == [f"train_{i:02d}.velocity.npz" for i in (0, 1, 3)]
    entries = json.loads((folder / "failures.json").read_text())["failures"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["id"] == "train_02" and entry["video"] == str(bad) and entry["attempt"] == 1
    assert "train_02.avi" in entry["error"] and str(os.getpid()) in entry["worker"]
    summary = extract_split(FolderDataset(root), "train", make_extractor(), cache, progress=False,
                            raise_on_failure=False)
    assert (summary.computed, summary.skipped, summary.failed) == (0, 3, 1)  # reruns only what is missing


def test_rerun_clears_the_entry_of_a_video_that_now_succeeds(data, reference, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    monkeypatch.setenv("MULDE_TEST_FAIL", "train_01")
    first = extract_split(FolderDataset(data), "train", make_extractor(FlakyExtractor), cache, progress=False,
                          raise_on_failure=False)
    assert (first.computed, first.failed) == (3, 1) and first.failures_file == first.folder / "failures.json"
    assert json.loads(first.failures_file.read_text())["failures"][0]["error"] == "RuntimeError: flaky train_01"
    monkeypatch.delenv("MULDE_TEST_FAIL")
    again = extract_split(FolderDataset(data), "train", make_extractor(FlakyExtractor), cache, progress=False)
    assert (again.computed, again.skipped, again.failed) == (1, 3, 0)
    assert not first.failures_file.exists()
    assert_same(again.folder, reference)


# --- claims, shards, options -----------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_exclusive_stale_and_heartbeat(tmp_path):
    claims = Claims(tmp_path, stale_after=60, heartbeat=0.05)
    mine = claims.acquire("v1", "me")
    assert mine is not None and claims.acquire("v1", "other") is None
    before = claims.path("v1").stat().st_mtime
    os.utime(claims.path("v1"), (before - 30, before - 30))
    time.sleep(0.3)
    assert claims.path("v1").stat().st_mtime > before - 1, "the heartbeat refreshes the claim"
    claims.release(mine)
    assert not claims.path("v1").exists()
    # a claim of a dead process on this host is stale at once
    claims.path("v2").write_text(json.dumps({"host": claims_host(), "pid": dead_pid(), "token": "x"}))
    assert claims.is_stale("v2") and claims.acquire("v2") is not None
    # a claim of another host is stale only without heartbeat for stale_after seconds
    claims.path("v3").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "y"}))
    assert not claims.is_stale("v3") and claims.acquire("v3") is None
    old = time.time() - 120
    os.utime(claims.path("v3"), (old, old))
    taken = claims.acquire("v3")
    assert taken is not None and json.loads(claims.path("v3").read_text())["token"] == taken.token
    # releasing a claim someone else took over leaves theirs in place
    claims.path("v3").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "theirs"}))
    claims.release(taken)
    assert json.loads(claims.path("v3").read_text())["token"] == "theirs"


def claims_host() -> str:
    from mulde.pipeline.claims import HOST

    return HOST


def test_manifest_and_json_merges_never_clobber(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.write_manifest("d", "k", {"dataset": "d", "root": "/a", "extractor": "objects"})
    cache.write_manifest("d", "k", {"dataset": "d", "root": "/b", "extractor": "objects"})
    manifest = json.loads((tmp_path / "features" / "d" / "k" / "manifest.json").read_text())
    assert manifest["roots"] == ["/a", "/b"] and manifest["root"] == "/b"
    path = tmp_path / "counter.json"
    code = ("from mulde.pipeline.claims import merge_json\n"
            f"for _ in range(25): merge_json({str(path)!r}, lambda old: {{'n': (old or {{'n': 0}})['n'] + 1}})")
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(3)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert json.loads(path.read_text()) == {"n": 75}
    assert merge_json(path, lambda old: None) is None and not path.exists()


def test_shards_partition_the_sorted_list():
    items = [WorkItem(f"v{i:02d}", f"/x/v{i:02d}.mp4") for i in (5, 3, 0, 4, 1, 2, 6)]
    parts = [select_shard(items, parse_shard(f"{k}/3")) for k in range(3)]
    keys = [[it.key for it in p] for p in parts]
    assert keys == [["v00", "v03", "v06"], ["v01", "v04"], ["v02", "v05"]]
    assert select_shard(items, None) == items
    assert parse_shard("1/4") == (1, 4) and parse_shard((0, 1)) == (0, 1) and parse_shard(None) is None
    for bad in ("4/4", "1/0", "a/b", "2"):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)


def test_runtime_option_errors(monkeypatch):
    with pytest.raises(InputError, match="unknown executor 'dask'"):
        RunOptions(executor="dask")
    with pytest.raises(InputError, match="workers must be >= 1"):
        RunOptions(workers=0)
    with pytest.raises(InputError, match="--ray-address needs --executor ray"):
        RunOptions(ray_address="auto")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r'pip install "mulde\[ray\]"'):
        import_ray()


def test_batch_inputs_tell_video_folders_from_frame_folders(tmp_path):
    from mulde.pipeline.batch import expand_inputs

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("b.mp4", "a.avi", "notes.txt"):
        (videos / name).write_bytes(b"")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        (frames / f"{i:03d}.jpg").write_bytes(b"")
    (videos / "cam3").mkdir()
    (videos / "cam3" / "0001.png").write_bytes(b"")
    assert expand_inputs([videos]) == [videos / "a.avi", videos / "b.mp4", videos / "cam3"]
    assert expand_inputs([frames]) == [frames]
    assert expand_inputs([str(videos / "*.mp4")]) == [videos / "b.mp4"]
    listing = tmp_path / "list.txt"
    listing.write_text("# inputs\nvideos/a.avi\n\nframes  # a frame folder\n")
    assert expand_inputs([f"@{listing}"]) == [videos / "a.avi", frames]
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(videos / "*.mkv")])
    with pytest.raises(VideoError, match="missing.mp4"):
        expand_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(InputError, match="list file not found"):
        expand_inputs(["@nolist.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos or frame folders"):
        expand_inputs([tmp_path / "empty"])


@pytest.mark.slow
@pytest.mark.shared_data
def test_two_workers_on_real_ped2_videos_match_one_process(shared_data, tmp_path):
    from mulde.extractors.flowgrid import FlowGridExtractor

    (tmp_path / "ped2" / "train").mkdir(parents=True)
    for vid in ("01", "02", "03"):
        (tmp_path / "ped2" / "train" / vid).symlink_to(shared_data / "ucsd_ped2" / "training" / "frames" / vid)
    ds = FolderDataset(tmp_path / "ped2", fps=10)
    one = extract_split(ds, "train", FlowGridExtractor(), FeatureCache(tmp_path / "one"), progress=False)
    two = extract_split(ds, "train", FlowGridExtractor(), FeatureCache(tmp_path / "two"), progress=False,
                        workers=2)
    assert (one.computed, two.computed, two.report.workers) == (3, 3, 2)
    frames = sum(len(list((shared_data / "ucsd_ped2" / "training" / "frames" / v).iterdir()))
                 for v in ("01", "02", "03"))
    assert one.report.frames == two.report.frames == frames
    assert_same(two.folder, read_features(one.folder))


# --- the commands: one error line; batch scoring -------------------------------------------------

CONFIG = """features: objects
proposals: motion
motion_min_area: 20
velocity_extras: [magnitude, geometry]
feature_types: [velocity]
deep: false
preset: test
device: cpu
"""


def vad(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mulde", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_vad_extract_with_a_corrupt_video_ends_with_one_error_line(data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data, root)
    (root / "train" / "train_01.avi").write_bytes(b"\x00" * 100)
    (tmp_path / "c.yaml").write_text(CONFIG)
    res = vad("extract", "--dataset", "folder", "--root", root, "--config", tmp_path / "c.yaml",
              "--cache", tmp_path / "cache", "--split", "train", "-q")
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and res.stderr.strip().splitlines()[-1] == errors[0]
    assert "1 of 4 videos failed" in errors[0] and errors[0].rstrip().endswith("and rerun")
    failures = Path(errors[0].split("see ", 1)[1].split(" for each", 1)[0])
    assert failures.name == "failures.json" and json.loads(failures.read_text())["failures"][0]["id"] == "train_01"
    assert "3 videos extracted, 0 already cached, 1 failed" in res.stdout


@pytest.fixture(scope="module")
def trained_run(data, tmp_path_factory) -> Path:
    from mulde.config import resolve_config
    from mulde.pipeline.train import train_run

    folder = tmp_path_factory.mktemp("run")
    (folder / "c.yaml").write_text(CONFIG)
    cfg = resolve_config({"dataset": "folder", "root": str(data), "cache": str(folder / "cache")},
                         config_file=folder / "c.yaml")
    train_run(cfg, folder / "run", progress=False)
    return folder / "run"


@pytest.mark.slow
def test_vad_score_a_folder_of_videos_and_ray_agree(ray_cluster, data, trained_run, tmp_path):
    import pandas as pd

    from mulde.pipeline.batch import score_many

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("train_00", "train_03"):
        shutil.copy(data / "train" / f"{name}.avi", videos / f"{name}.avi")
    shutil.copy(data / "test" / "test_00.avi", videos / "test_00.avi")
    res = vad("score", videos, "--model", trained_run, "--out-dir", tmp_path / "inline", "-q")
    assert res.returncode == 0, res.stderr
    assert "3 videos scored" in res.stdout
    report = score_many([str(videos / "*.avi")], trained_run, tmp_path / "ray", progress=False,
                        options=RunOptions(executor="ray", workers=2))
    assert (report.executor, sorted(report.computed)) == ("ray", ["test_00", "train_00", "train_03"])
    for name in report.computed:
        a = pd.read_csv(tmp_path / "inline" / f"{name}.scores.csv")
        b = pd.read_csv(tmp_path / "ray" / f"{name}.scores.csv")
        assert len(a) == 60
        pd.testing.assert_frame_equal(a, b)
    res = vad("score", videos, "--model", trained_run, "--out-dir", tmp_path / "inline", "--shard", "0/2", "-q")
    assert res.returncode == 0 and "0 videos scored" in res.stdout and "2 already scored" in res.stdout
    res = vad("score", videos, "--model", trained_run, "--out", "x.csv")
    assert res.returncode == 2 and "--out is for one video" in res.stderr
