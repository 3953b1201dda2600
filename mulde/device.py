"""The one place that turns a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a
``torch.device``, so every detector and extractor accepts the same words and fails the same way.
"""

from __future__ import annotations

import torch

from mulde.errors import InputError

CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> cuda when available else cpu; ``cpu``, ``cuda`` and ``cuda:N`` are checked.

    An unknown word, a GPU index that does not exist, or cuda on a machine without CUDA raise
    one-line :class:`InputError` messages that say what to use instead.
    """
    name = "auto" if spec is None else str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {str(spec)!r}; use {CHOICES}") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise InputError(f"unsupported device {str(spec)!r}; use {CHOICES}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {str(spec)!r} requested but CUDA is not available; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"device {str(spec)!r} does not exist ({count} GPU(s) visible); use cuda:0..cuda:{count - 1}")
    return dev
