"""Run "one video -> its files" over many videos: inline, local worker processes, Ray, or a shard.

Extraction and batch scoring describe their work as a :class:`Job` (set up once per worker:
load the models; then ``run(item)`` computes one video and renames its files into place) and
call :func:`run_job`; they never know which executor ran them.

* **inline** (one local worker): the job runs in this process, exactly as a plain loop would.
* **local** worker processes: long-lived (each loads its models once) and fed from one queue
  by this process, which hands the next video to whichever worker is free. On CPU the
  torch/OpenCV threads are split so their total equals the cores; with GPUs the default is one
  worker per visible GPU, each pinned to its device.
* **ray**: ``ray.init()`` (a local cluster) or ``ray.init(address=...)`` (join one); workers
  are Ray actors that load the job once; GPUs are Ray resources.
* **shard K/N**: only the K-th (0-based) of N deterministic parts of the sorted item list, so a
  Slurm job array can split the work without Ray.

Every worker claims an item before computing it (:class:`mulde.pipeline.claims.Claims`), so two
workers or two commands sharing an output folder never compute the same video; a claim left
by a killed worker is taken over. A video that fails is written to ``failures.json`` (video,
error line, worker, attempt) and the others go on; a worker that dies is replaced and its
video retried up to ``retries`` times. A rerun does only what is missing.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from mulde.errors import InputError, MuldeError
from mulde.pipeline.claims import HOST, Claims, merge_json

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_HINT = 'pip install "mulde[ray]"'


class Job(Protocol):
    """One kind of work; an instance travels (pickled) to every worker."""

    label: str  # shown on the progress bar, e.g. "extract ped2/train"

    def setup(self, device: str | None) -> None:
        """Load models once per worker; ``device`` is a suggested ``cuda:N`` (None: keep own)."""

    def uses_gpu(self) -> bool:
        """Whether the job would run on a GPU when one is visible."""

    def is_done(self, item: WorkItem) -> bool:
        """Whether the item's output files already exist."""

    def run(self, item: WorkItem, progress: bool) -> int:
        """Compute one item and rename its files into place; returns the frames processed."""


@dataclass(frozen=True)
class WorkItem:
    """key: unique and file-name safe (names the claim); source: what users call it (a path)."""

    key: str
    source: str
    payload: Any = None


@dataclass
class RunOptions:
    """How to run a job (the runtime options of ``vad extract`` and ``vad score``)."""

    executor: str = "local"
    workers: int | None = None  # None: one per visible GPU for GPU jobs, else 1 (inline)
    ray_address: str | None = None
    shard: tuple[int, int] | None = None
    retries: int = 2
    stale_after: float = 600.0  # seconds without heartbeat before another host takes a claim
    heartbeat: float = 30.0
    wait_poll: float = 2.0  # how often to look again at videos another process is computing

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise InputError(f"unknown executor {self.executor!r}; choose one of {', '.join(EXECUTORS)}")
        if self.workers is not None and int(self.workers) < 1:
            raise InputError(f"workers must be >= 1, got {self.workers}")
        if int(self.retries) < 0:
            raise InputError(f"retries must be >= 0, got {self.retries}")
        if self.ray_address and self.executor != "ray":
            raise InputError("--ray-address needs --executor ray")
        self.shard = parse_shard(self.shard)

    @classmethod
    def from_runtime(cls, runtime: Any) -> RunOptions:
        """The options of a config's runtime section (``cfg.runtime``: workers, executor, ...)."""
        return cls(executor=runtime.executor or "local", workers=runtime.workers,
                   ray_address=runtime.ray_address, shard=runtime.shard, retries=runtime.retries)


@dataclass
class Outcome:
    """What a worker reports for one item."""

    key: str
    status: str  # done | cached | busy | failed
    frames: int = 0
    seconds: float = 0.0
    error: str = ""
    worker: str = ""
    holder: str = ""


@dataclass
class Failure:
    key: str
    video: str
    error: str
    worker: str
    attempt: int

    def record(self) -> dict[str, Any]:
        return {"id": self.key, "video": self.video, "error": self.error, "worker": self.worker,
                "attempt": self.attempt, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@dataclass
class JobReport:
    """What a run did; ``failures_file`` is set when any video failed."""

    label: str
    total: int
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    workers: int = 1
    executor: str = "inline"
    failures_file: Path | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def failure_message(self) -> str:
        return (f"{len(self.failed)} of {self.total} videos failed ({self.label}); the others are done; "
                f"see {self.failures_file} for each error, fix or remove those videos and rerun")

    def raise_for_failures(self) -> None:
        """One :class:`FailedVideos` error naming failures.json when any video failed."""
        if self.failed:
            raise FailedVideos(self.failure_message())


class FailedVideos(MuldeError):
    """Some videos of a job failed; the message names the failures.json that lists them."""


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"K/N"`` or ``(K, N)`` -> ``(K, N)`` with 0 <= K < N (K is 0-based, like Slurm array ids)."""
    if shard is None or shard == "":
        return None
    if isinstance(shard, str):
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", shard)
        if not m:
            raise InputError(f"--shard {shard!r}: expected K/N with integers, e.g. 0/4 (the first of 4 parts)")
        k, n = int(m.group(1)), int(m.group(2))
    else:
        k, n = (int(v) for v in shard)
    if n < 1 or not 0 <= k < n:
        raise InputError(f"--shard {k}/{n}: K must be in 0..{max(n - 1, 0)} for N={n} (0-based, e.g. a "
                         f"Slurm array --array=0-{max(n - 1, 0)})")
    return k, n


def select_shard(items: Sequence[WorkItem], shard: tuple[int, int] | None) -> list[WorkItem]:
    """The K-th of N parts of the items sorted by key (every N-th from K); all items, in their
    given order, without a shard."""
    if shard is None:
        return list(items)
    k, n = shard
    return sorted(items, key=lambda it: it.key)[k::n]


def error_line(exc: BaseException) -> str:
    """The first line of an error, with its type unless it is a user-facing mulde error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, MuldeError) and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def process_item(job: Job, item: WorkItem, claims: Claims, worker: str, progress: bool) -> Outcome:
    """Claim, compute and release one item (runs inside a worker)."""
    if job.is_done(item):
        return Outcome(item.key, "cached", worker=worker)
    claim = claims.acquire(item.key, worker)
    if claim is None:
        rec = claims.holder(item.key) or {}
        return Outcome(item.key, "busy", worker=worker, holder=f"{rec.get('host')} pid {rec.get('pid')}")
    try:
        if job.is_done(item):  # finished by another worker between our check and our claim
            return Outcome(item.key, "cached", worker=worker)
        t0 = time.perf_counter()
        try:
            frames = job.run(item, progress)
        except Exception as exc:  # noqa: BLE001 - any error of one video is contained and recorded
            log.debug("%s failed", item.source, exc_info=True)
            return Outcome(item.key, "failed", seconds=time.perf_counter() - t0, error=error_line(exc),
                           worker=worker)
        return Outcome(item.key, "done", frames=int(frames), seconds=time.perf_counter() - t0, worker=worker)
    finally:
        claims.release(claim)


def _claims_config(claims_dir: Path, options: RunOptions) -> dict[str, Any]:
    return {"folder": str(claims_dir), "stale_after": options.stale_after, "heartbeat": options.heartbeat}


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def limit_threads(threads: int | None) -> None:
    """Give this process ``threads`` torch/OpenCV/BLAS threads (a worker's share of the cores)."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2
    import torch

    torch.set_num_threads(int(threads))
    cv2.setNumThreads(int(threads))


# --- backends --------------------------------------------------------------------------------
# A backend runs items on its worker slots; the scheduler in run_job hands out the items.
# Events: ("outcome", slot, Outcome) or ("died", slot, reason).


class _Inline:
    """One worker: this process."""

    name = "inline"

    def __init__(self, job: Job, claims_cfg: dict[str, Any], progress: bool) -> None:
        self.job, self.claims, self.progress = job, Claims(**claims_cfg), progress
        self.n = 1
        self.worker = f"{HOST}:{os.getpid()}"
        self.current: dict[int, Any] = {}

    def start(self) -> None:
        self.job.setup(None)

    def submit(self, slot: int, item: WorkItem) -> None:
        self.current[slot] = item

    def wait(self, timeout: float) -> list[tuple]:
        item = self.current[0]
        return [("outcome", 0, process_item(self.job, item, self.claims, self.worker, self.progress))]

    def close(self) -> None:
        pass


def _local_worker(job: Job, slot: int, device: str | None, threads: int | None,
                  claims_cfg: dict[str, Any], conn) -> None:
    """Main of a local worker process: set up once, then compute what the parent sends."""
    limit_threads(threads)
    try:
        job.setup(device)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", _picklable(exc)))
        return
    conn.send(("ready", None))
    claims = Claims(**claims_cfg)
    worker = f"{HOST}:{os.getpid()} (worker {slot})"
    try:
        while True:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if item is None:
                return
            conn.send(("outcome", process_item(job, item, claims, worker, progress=False)))
    except KeyboardInterrupt:
        return  # Ctrl-C reaches every worker; the parent reports it (claims were released)


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        return MuldeError(error_line(exc))


class _Local:
    """Long-lived worker processes (spawned: safe with torch and CUDA)."""

    name = "local"

    def __init__(self, job: Job, n: int, devices: list[str | None], threads: int | None,
                 claims_cfg: dict[str, Any]) -> None:
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.job, self.n, self.devices, self.threads, self.claims_cfg = job, n, devices, threads, claims_cfg
        self.procs: dict[int, Any] = {}
        self.conns: dict[int, Any] = {}
        self.current: dict[int, WorkItem] = {}
        self.ready: set[int] = set()

    def _spawn(self, slot: int) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_local_worker, name=f"mulde-worker-{slot}", daemon=True,
                                args=(self.job, slot, self.devices[slot], self.threads, self.claims_cfg, child))
        proc.start()
        child.close()
        self.procs[slot], self.conns[slot] = proc, parent

    def start(self) -> None:
        """Start the workers and wait until each has loaded its models (or raise its error)."""
        for slot in range(self.n):
            self._spawn(slot)
        while len(self.ready) < self.n:
            self.wait(timeout=1.0)

    def submit(self, slot: int, item: WorkItem) -> None:
        self.current[slot] = item
        try:
            self.conns[slot].send(item)
        except (BrokenPipeError, OSError):
            pass  # the worker died; wait() reports it

    def wait(self, timeout: float) -> list[tuple]:
        from multiprocessing.connection import wait

        events: list[tuple] = []
        by_conn = {id(c): s for s, c in self.conns.items()}
        ready = wait(list(self.conns.values()) + [p.sentinel for p in self.procs.values()], timeout)
        gone: set[int] = set()
        for obj in ready:
            slot = by_conn.get(id(obj))
            if slot is None:
                continue
            conn = self.conns[slot]
            try:
                while conn.poll():
                    kind, payload = conn.recv()
                    if kind == "error":
                        raise payload
                    if kind == "ready":
                        self.ready.add(slot)
                    elif kind == "outcome":
                        self.current.pop(slot, None)
                        events.append(("outcome", slot, payload))
            except (EOFError, OSError):
                gone.add(slot)
        for slot, proc in list(self.procs.items()):
            if slot not in gone and proc.is_alive():
                continue
            proc.join(timeout=5)
            code = proc.exitcode
            reason = (f"worker process killed by signal {-code}" if code is not None and code < 0
                      else f"worker process exited with status {code}")
            if slot not in self.ready:
                raise MuldeError(f"a worker process died while loading the models ({reason}); "
                                 "try fewer --workers (memory) or --workers 1 to see the error")
            self.ready.discard(slot)
            self.conns[slot].close()
            if self.current.pop(slot, None) is not None:
                events.append(("died", slot, reason))
            self._spawn(slot)
        return events

    def close(self) -> None:
        for conn in self.conns.values():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self.conns.values():
            conn.close()


class _RayWorker:
    """A Ray actor: sets the job up once, then computes the items it is given."""

    def __init__(self, job: Job, threads: int | None, claims_cfg: dict[str, Any]) -> None:
        self.job, self.threads, self.claims_cfg = job, threads, claims_cfg
        self.worker = f"{HOST}:{os.getpid()} (ray)"

    def setup(self) -> BaseException | None:
        import ray

        limit_threads(self.threads)
        device = "cuda:0" if ray.get_gpu_ids() else None  # Ray sets CUDA_VISIBLE_DEVICES
        try:
            self.job.setup(device)
        except Exception as exc:  # noqa: BLE001 - returned so the driver raises it as is
            return _picklable(exc)
        self.claims = Claims(**self.claims_cfg)
        return None

    def run(self, item: WorkItem) -> Outcome:
        return process_item(self.job, item, self.claims, self.worker, progress=False)


def import_ray():
    """The ray module, or one error line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--executor ray needs Ray, which is not installed; run: {RAY_HINT}") from None
    return ray


class _Ray:
    """Ray actors on a local cluster (``ray.init()``) or an existing one (``address``)."""

    name = "ray"

    def __init__(self, job: Job, workers: int | None, address: str | None,
                 claims_cfg: dict[str, Any]) -> None:
        self.ray = ray = import_ray()
        self.started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address:
                kwargs["address"] = address
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise InputError(f"--ray-address {address}: cannot join the Ray cluster ({error_line(exc)}); "
                                 "start it with `ray start --head` or check the address") from None
            self.started = True
        res = ray.cluster_resources()
        gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
        node_cpus = max([float(nd.get("Resources", {}).get("CPU", 0)) for nd in ray.nodes() if nd.get("Alive")]
                        or [cpus])
        use_gpu = gpus > 0 and job.uses_gpu()
        self.n = int(workers or (gpus if use_gpu else max(1, int(cpus) // 4)))
        per_cpu = max(1, min(int(node_cpus), int(cpus) // self.n))
        self.options: dict[str, Any] = {"num_cpus": per_cpu, "max_restarts": 0}
        if use_gpu:
            self.options["num_gpus"] = min(1.0, gpus / self.n)
        self.job, self.claims_cfg, self.threads = job, claims_cfg, per_cpu
        self.actor_cls = ray.remote(_RayWorker)
        self.actors: dict[int, Any] = {}
        self.refs: dict[Any, int] = {}
        self.current: dict[int, WorkItem] = {}

    def _make(self, slot: int) -> None:
        actor = self.actor_cls.options(**self.options).remote(self.job, self.threads, self.claims_cfg)
        err = self.ray.get(actor.setup.remote())
        if err is not None:
            raise err
        self.actors[slot] = actor

    def start(self) -> None:
        for slot in range(self.n):
            self._make(slot)

    def submit(self, slot: int, item: WorkItem) -> None:
        self.current[slot] = item
        self.refs[self.actors[slot].run.remote(item)] = slot

    def wait(self, timeout: float) -> list[tuple]:
        ray = self.ray
        if not self.refs:
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        events: list[tuple] = []
        for ref in ready:
            slot = self.refs.pop(ref)
            self.current.pop(slot, None)
            try:
                events.append(("outcome", slot, ray.get(ref)))
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                    ray.exceptions.RayTaskError) as exc:
                events.append(("died", slot, f"Ray worker died ({type(exc).__name__})"))
                self.ray.kill(self.actors[slot], no_restart=True)
                self._make(slot)
        return events

    def close(self) -> None:
        for actor in self.actors.values():
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.started:
            self.ray.shutdown()


def _local_plan(job: Job, options: RunOptions) -> tuple[int, list[str | None], int | None]:
    """Workers, their devices and threads per worker for the local executor."""
    gpus = visible_gpus() if job.uses_gpu() else 0
    n = int(options.workers or (gpus if gpus > 1 else 1))
    devices: list[str | None] = [f"cuda:{i % gpus}" if gpus else None for i in range(n)]
    threads = max(1, cpu_cores() // n) if n > 1 else None
    return n, devices, threads


def _make_backend(job: Job, options: RunOptions, claims_cfg: dict[str, Any], progress: bool):
    if options.executor == "ray":
        return _Ray(job, options.workers, options.ray_address, claims_cfg)
    n, devices, threads = _local_plan(job, options)
    if n == 1 and devices[0] is None:
        return _Inline(job, claims_cfg, progress)
    return _Local(job, n, devices, threads, claims_cfg)


# --- failures.json -----------------------------------------------------------------------------


def _update_failures(path: Path, add: list[Failure], clear: set[str]) -> bool:
    """Merge this run's failures into ``path`` and drop entries of items that now succeed."""

    def update(old: Any) -> dict[str, Any] | None:
        entries = {e["id"]: e for e in (old or {}).get("failures", []) if isinstance(e, dict) and "id" in e}
        for key in clear:
            entries.pop(key, None)
        for f in add:
            entries[f.key] = f.record()
        if not entries:
            return None
        return {"failures": [entries[k] for k in sorted(entries)]}

    if not add and not path.exists():
        return False
    return merge_json(path, update) is not None


# --- the scheduler -----------------------------------------------------------------------------


def run_job(job: Job, items: Sequence[WorkItem], out_dir: str | os.PathLike,
            options: RunOptions | None = None, progress: bool = True,
            skip_note: str = "already done (skipped)") -> JobReport:
    """Run ``job`` over ``items`` (or one shard of them) and return what happened.

    ``out_dir`` holds the claims (``.claims/``) and ``failures.json``. Items already done are
    skipped with one log line; items another process is computing are waited for.
    """
    options = options or RunOptions()
    out_dir = Path(out_dir)
    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[0]
        raise InputError(f"several inputs share the name {dup!r}; rename one of them (it names the output files)")
    selected = select_shard(items, options.shard)
    if options.shard is not None:
        k, n = options.shard
        log.info("%s: shard %d/%d holds %d of %d videos", job.label, k, n, len(selected), len(items))
    todo = [it for it in selected if not job.is_done(it)]
    report = JobReport(job.label, total=len(selected), skipped=[it.key for it in selected if it not in todo])
    failures_file = out_dir / "failures.json"
    if report.skipped:
        log.info("%s: %d of %d videos %s", job.label, len(report.skipped), len(selected), skip_note)
    if not todo:
        _update_failures(failures_file, [], set(report.skipped))
        return report
    claims_cfg = _claims_config(out_dir / ".claims", options)
    backend = _make_backend(job, options, claims_cfg, progress)
    report.executor, report.workers = backend.name, backend.n
    if backend.n > 1 or backend.name == "ray":
        log.info("%s: %d videos on %d %s workers", job.label, len(todo), backend.n, backend.name)
    attempts = {it.key: 1 for it in todo}
    pending: deque[WorkItem] = deque(todo)
    deferred: list[WorkItem] = []
    waiting_noted: set[str] = set()
    last_look = time.monotonic()
    t0 = time.perf_counter()
    bar = None

    def finish(fail: Failure | None = None) -> None:
        assert bar is not None
        bar.update(1)
        if fail is not None:
            report.failed.append(fail)
            bar.write(f"failed: {fail.error if fail.video in fail.error else f'{fail.video}: {fail.error}'}",
                      file=sys.stderr)
            report.failures_file = failures_file
            _update_failures(failures_file, [fail], set())
        elapsed = time.perf_counter() - t0
        bar.set_postfix_str(f"{report.frames / max(elapsed, 1e-9):.1f} frames/s"
                            + (f", {len(report.failed)} failed" if report.failed else ""), refresh=False)

    try:
        backend.start()  # workers load their models before the clock of the progress display starts
        t0 = time.perf_counter()
        bar = tqdm(total=len(todo), desc=job.label, unit="video", disable=not progress, dynamic_ncols=True)
        free = list(range(backend.n))
        running: dict[int, WorkItem] = {}
        while pending or deferred or len(free) < backend.n:
            if not pending and deferred and time.monotonic() - last_look >= options.wait_poll:
                pending.extend(deferred)  # look again at videos another process was computing
                deferred.clear()
                last_look = time.monotonic()
            while free and pending:
                slot = free.pop(0)
                running[slot] = pending.popleft()
                backend.submit(slot, running[slot])
            if len(free) == backend.n:  # nothing running: only videos held by others remain
                time.sleep(min(options.wait_poll, 0.2))
                continue
            for event in backend.wait(timeout=0.5):
                kind, slot = event[0], event[1]
                free.append(slot)
                item = running.pop(slot, None)
                if item is None:
                    continue
                if kind == "died":
                    if attempts[item.key] <= options.retries:
                        log.warning("%s: %s on %s; retrying (attempt %d of %d)", job.label, event[2],
                                    item.source, attempts[item.key] + 1, options.retries + 1)
                        attempts[item.key] += 1
                        pending.appendleft(item)
                    else:
                        finish(Failure(item.key, item.source, f"{event[2]} on every attempt",
                                       f"{backend.name} worker {slot}", attempts[item.key]))
                    continue
                out: Outcome = event[2]
                if out.status == "busy":
                    if out.key not in waiting_noted:
                        waiting_noted.add(out.key)
                        log.info("%s: %s is being computed by %s; waiting for it", job.label, item.source,
                                 out.holder)
                    deferred.append(item)
                elif out.status == "failed":
                    finish(Failure(item.key, item.source, out.error, out.worker, attempts[item.key]))
                else:
                    if out.status == "done":
                        report.computed.append(out.key)
                        report.frames += out.frames
                    else:
                        report.skipped.append(out.key)
                    finish()
    finally:
        report.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        backend.close()
    ok = set(report.computed) | set(report.skipped)
    if _update_failures(failures_file, [], ok):
        report.failures_file = failures_file
    if report.failed:
        log.warning("%s: %d videos failed: %s", job.label, len(report.failed),
                    ", ".join(f.key for f in report.failed[:5]) + (", ..." if len(report.failed) > 5 else ""))
    return report
