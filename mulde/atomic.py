"""Atomic file writes: a file either appears complete under its final name or not at all.

Every writer in the package goes through :func:`atomic_path` (or :func:`atomic_write` for data
already in memory). The temporary file sits in the target's folder (so the final rename never
crosses file systems), is hidden (``.`` prefix, so frame-folder and dataset listings skip it),
and carries the process id and a random part, so two concurrent writers of the same file never
share one. It keeps the target's suffix at the end because some writers (matplotlib, OpenCV's
VideoWriter) choose the format from it. The final file gets the mode an ordinary ``open()``
would give (0o666 minus the umask, usually 0644), not the 0600 of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    """The process umask: from /proc on Linux (no side effect), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_path_for(path: Path) -> Path:
    """A unique hidden temporary name next to ``path`` (same folder, same suffix)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def commit(tmp: str | os.PathLike, path: str | os.PathLike, mode: int = 0o666) -> Path:
    """Give a finished temporary file (from :func:`temp_path_for`) its final mode and rename it
    over ``path``. For writers that keep a file open across calls (a streaming CSV); everything
    else uses :func:`atomic_path`, which calls this."""
    os.chmod(tmp, mode & ~_umask())
    os.replace(tmp, path)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int = 0o666) -> Iterator[Path]:
    """Yield a unique temporary path; on success it replaces ``path``, on any exception
    (KeyboardInterrupt included) it is removed and ``path`` is left as it was.

    The caller writes the whole file to the yielded path (any writer that takes a path or
    opens it itself). Parent folders are created. ``mode`` (minus the umask) is the final
    file's permission.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: the writer did not create the temporary file for {path}")
        commit(tmp, path, mode)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text is encoded with ``encoding``) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path
