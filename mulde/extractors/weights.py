"""Where pretrained weights come from, and the error when they are missing offline.

Weights live under ``<cache>/weights`` (the cache is ``--cache DIR``, else ``$MULDE_CACHE``,
else ``~/.cache/mulde``). Hub downloads use the libraries' own caches, which honour
``TORCH_HOME`` (torch hub: Hiera, RAFT) and ``HF_HOME`` (Hugging Face: CLIP via timm).
"""

from __future__ import annotations

import os
from pathlib import Path

from mulde.errors import WeightsError


def default_cache_dir() -> Path:
    """``$MULDE_CACHE`` if set, else ``~/.cache/mulde``."""
    env = os.environ.get("MULDE_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/mulde").expanduser()


def weights_dir(cache: str | os.PathLike | None = None) -> Path:
    """Folder holding local weight files (created on demand)."""
    path = Path(cache).expanduser() if cache else default_cache_dir()
    path = path / "weights"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE, YOLO_OFFLINE or MULDE_OFFLINE)."""
    return any(os.environ.get(k, "").strip() not in ("", "0", "false", "False")
               for k in ("HF_HUB_OFFLINE", "MULDE_OFFLINE", "YOLO_OFFLINE"))


def missing_weights(model: str, flag: str, source: str, cause: BaseException | None = None) -> WeightsError:
    """The one-line error for weights that could not be found or fetched."""
    why = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:160]})" if cause else ""
    return WeightsError(
        f"pretrained weights for {model} are not available{why}; run `vad weights download {model}` "
        f"with internet, or pass {flag} PATH to a local checkpoint ({source})"
    )
