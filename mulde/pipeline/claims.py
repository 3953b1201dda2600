"""Coordination through files, so many processes (or machines) can share one output folder.

* :func:`file_lock` - an exclusive ``flock`` on a lock file, for short read-modify-write steps.
* :func:`merge_json` - read a JSON file, change it, write it back atomically, under that lock:
  concurrent writers merge instead of clobbering each other.
* :class:`Claims` - one claim file per work item (``<folder>/<key>.claim``), created with
  ``O_CREAT | O_EXCL`` so only one worker gets it. It holds host, pid, worker and time and is
  touched by a heartbeat while the work runs. A claim whose owner is gone (a dead pid on this
  host, or no heartbeat for ``stale_after`` seconds on any host) is taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mulde.atomic import atomic_write

log = logging.getLogger(__name__)

HOST = socket.gethostname()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_json(path: Path, default: Any) -> Any:
    """The JSON content of ``path``, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def merge_json(path: str | os.PathLike, update: Callable[[Any], Any], default: Any = None) -> Any:
    """Apply ``update(old) -> new`` to the JSON file ``path`` under a lock; ``None`` removes it."""
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")):
        new = update(read_json(path, default))
        if new is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, json.dumps(new, indent=2, sort_keys=True, default=str))
    return new


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    """A claim this process holds; :meth:`Claims.release` gives it back."""

    key: str
    path: Path
    token: str
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None


class Claims:
    """Per-item claim files in one folder (see the module doc)."""

    def __init__(self, folder: str | os.PathLike, stale_after: float = 600.0,
                 heartbeat: float = 30.0) -> None:
        self.folder = Path(folder)
        self.stale_after = float(stale_after)
        self.heartbeat = float(heartbeat)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.claim"

    def _lock(self):
        return file_lock(self.folder / ".claims.lock")

    def _create(self, path: Path, record: dict[str, Any]) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh)
        return True

    def holder(self, key: str) -> dict[str, Any] | None:
        """The record of the claim on ``key`` (None when unclaimed)."""
        path = self.path(key)
        rec = read_json(path, None)
        if rec is None and path.exists():
            return {"host": "?", "pid": -1, "token": "", "partial": True}
        return rec

    def is_stale(self, key: str) -> bool:
        """A claim whose owner died (dead pid here) or stopped its heartbeat (any host)."""
        path = self.path(key)
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > self.stale_after:
            return True
        rec = self.holder(key) or {}
        if rec.get("partial"):
            return age > 5.0  # a claim being written right now is complete within milliseconds
        return rec.get("host") == HOST and not pid_alive(int(rec.get("pid", -1)))

    def acquire(self, key: str, worker: str = "") -> Claim | None:
        """Claim ``key`` for this process, taking over a stale claim; None when someone holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        token = uuid.uuid4().hex
        record = {"host": HOST, "pid": os.getpid(), "worker": worker, "token": token,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if not self._create(path, record):
            with self._lock():
                if path.exists() and not self.is_stale(key):
                    return None
                old = self.holder(key)
                if old is not None:
                    log.info("%s: taking over the stale claim of %s pid %s", key, old.get("host"), old.get("pid"))
                    path.unlink(missing_ok=True)
                if not self._create(path, record):
                    return None
        claim = Claim(key, path, token)
        if self.heartbeat > 0:
            claim._stop = threading.Event()
            claim._thread = threading.Thread(target=self._beat, args=(claim,), daemon=True,
                                             name=f"claim-heartbeat-{key}")
            claim._thread.start()
        return claim

    def _beat(self, claim: Claim) -> None:
        assert claim._stop is not None
        while not claim._stop.wait(self.heartbeat):
            with contextlib.suppress(OSError):
                os.utime(claim.path)

    def release(self, claim: Claim) -> None:
        """Stop the heartbeat and remove the claim file if it is still this claim."""
        if claim._stop is not None:
            claim._stop.set()
            if claim._thread is not None:
                claim._thread.join()
        with self._lock():
            rec = self.holder(claim.key)
            if rec is not None and rec.get("token") == claim.token:
                claim.path.unlink(missing_ok=True)


__all__ = ["Claim", "Claims", "file_lock", "merge_json", "pid_alive", "read_json"]
