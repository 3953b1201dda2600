"""Frame-centric Hiera features: one embedding per frame from the 16-frame clip around it.

MULDE's frame-centric results use Hiera video models (Ryali et al., ICML 2023) fine-tuned on
Kinetics-400 (checkpoint ``mae_k400_ft_k400``) with the classifier head replaced by identity,
so the feature is the mean-pooled, layer-normed last-stage embedding:

    hiera_base_16x224 768-d, hiera_base_plus_16x224 896-d,
    hiera_large_16x224 1152-d (the paper's default), hiera_huge_16x224 2048-d.

Clips follow :mod:`mulde.extractors.clips` (frames c-8 .. c+7 around centre c at stride 1).
Preprocessing is the Hiera authors' Kinetics recipe: short side resized to 224, centre crop
224x224, scale to [0, 1], normalise with mean 0.45 / std 0.225 per channel. (Their K400 models
were trained on 16 frames at temporal stride 4; ``frame_stride`` defaults to 1 so a clip
covers 0.64 s at 25 fps, set it to 4 to match their sampling.)

Frames are decoded and resized once, in order, by a background thread (``num_workers``
resize threads) while the model runs; clips are gathered from a rolling buffer.

Weights: the table and lookup of :mod:`mulde.extractors.weights` (``weights=PATH``, else
``<cache>/weights/<model>.pth``, else the torch hub cache, else a download from the Hiera
authors' URL unless offline, else a :class:`WeightsError` saying what to do).
"""

from __future__ import annotations

import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mulde.device import resolve_device
from mulde.errors import InputError, VideoError, WeightsError
from mulde.extractors import weights as wt
from mulde.extractors.base import FeatureTable, check_options, put_unless_stopped
from mulde.extractors.clips import assign_nearest, clip_centres, clip_indices

DEFAULT_MODEL = "hiera_large_16x224"
DEFAULT_CHECKPOINT = "mae_k400_ft_k400"
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)

# Shared by every Hiera video model (as in hiera.hiera_base_16x224).
_VIDEO_KWARGS: dict[str, Any] = {
    "input_size": (16, 224, 224),
    "q_stride": (1, 2, 2),
    "mask_unit_size": (1, 8, 8),
    "patch_kernel": (3, 7, 7),
    "patch_stride": (2, 4, 4),
    "patch_padding": (1, 3, 3),
    "sep_pos_embed": True,
}

# Architecture of each model (keyword arguments of hiera.Hiera on top of _VIDEO_KWARGS).
# "hiera_tiny_test" is a random-init toy (64-d, 32x32 input) for tests; it has no weights.
HIERA_MODELS: dict[str, dict[str, Any]] = {
    "hiera_base_16x224": {"embed_dim": 96, "num_heads": 1, "stages": (2, 3, 16, 3)},
    "hiera_base_plus_16x224": {"embed_dim": 112, "num_heads": 2, "stages": (2, 3, 16, 3)},
    "hiera_large_16x224": {"embed_dim": 144, "num_heads": 2, "stages": (2, 6, 36, 4)},
    "hiera_huge_16x224": {"embed_dim": 256, "num_heads": 4, "stages": (2, 6, 36, 4)},
    "hiera_tiny_test": {
        "embed_dim": 8, "num_heads": 1, "stages": (1, 1, 1, 1), "input_size": (16, 32, 32),
    },
}

WEIGHTS: dict[str, str] = {n: spec.description for n, spec in wt.weights_for("hiera").items()}

# Ready-made option sets: the paper's settings, and a faster one for CPU-only machines.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {"model": "hiera_base_16x224", "clip_step": 8, "batch_size": 4},
}

# Keys in MAE-only checkpoints that the encoder does not use.
_MAE_ONLY_PREFIXES = ("decoder", "mask_token", "encoder_norm", "multi_scale_fusion_heads", "pred")


def _import_hiera():
    with warnings.catch_warnings():  # hiera imports timm.models.layers (deprecated alias)
        warnings.simplefilter("ignore", FutureWarning)
        import hiera
    return hiera


def model_kwargs_for(model: str, model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Full hiera.Hiera keyword arguments for ``model`` (a name in HIERA_MODELS)."""
    if model not in HIERA_MODELS:
        raise InputError(f"unknown Hiera model {model!r}; choose one of {', '.join(HIERA_MODELS)}")
    kwargs = {**_VIDEO_KWARGS, **HIERA_MODELS[model], **(model_kwargs or {})}
    kwargs["input_size"] = tuple(kwargs["input_size"])
    kwargs["stages"] = tuple(kwargs["stages"])
    return kwargs


def model_dim(model: str, model_kwargs: dict[str, Any] | None = None) -> int:
    """Feature dimension of ``model`` read from its config (no model is built)."""
    kw = model_kwargs_for(model, model_kwargs)
    return int(kw["embed_dim"] * kw.get("dim_mul", 2.0) ** (len(kw["stages"]) - 1))


def build_hiera(model: str, model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A randomly initialised Hiera video model with its classifier head replaced by identity."""
    hiera = _import_hiera()
    net = hiera.Hiera(num_classes=1, **model_kwargs_for(model, model_kwargs))
    net.head = nn.Identity()
    return net.eval()


def checkpoint_url(model: str, checkpoint: str = DEFAULT_CHECKPOINT) -> str:
    """The Hiera authors' download URL of ``model``'s ``checkpoint`` (from the hiera package)."""
    model_kwargs_for(model)
    fn = getattr(_import_hiera(), model, None)
    urls = getattr(fn, "checkpoints", None) or {}
    if not urls:
        raise WeightsError(f"{model} has no published weights; pass --weights PATH or random_init")
    if checkpoint not in urls:
        raise InputError(
            f"unknown checkpoint {checkpoint!r} for {model}; choose one of {', '.join(urls)}"
        )
    return urls[checkpoint]


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a Hiera checkpoint: a raw state dict or the hub format ``{"model_state": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass an existing checkpoint path")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}); "
            "download it again or pass another --weights file"
        ) from exc
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: no state dict of tensors found; expected a Hiera checkpoint")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def apply_state_dict(net: nn.Module, state: dict[str, torch.Tensor], model: str, source: str) -> None:
    """Load encoder weights into ``net`` (head and MAE decoder keys are ignored)."""
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    mae_only = any(k.startswith(_MAE_ONLY_PREFIXES) for k in state)
    state = {k: v for k, v in state.items() if not k.startswith(_MAE_ONLY_PREFIXES)}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch: a checkpoint of another model
        raise WeightsError(
            f"{source} does not fit {model} (tensor shapes differ); pass the checkpoint of {model}"
        ) from exc
    if mae_only and set(missing) <= {"norm.weight", "norm.bias"}:
        # MAE-only checkpoints have no final norm: use a plain (identity-affine) LayerNorm.
        nn.init.ones_(net.norm.weight)
        nn.init.zeros_(net.norm.bias)
        missing = []
    if missing or unexpected:
        example = (list(missing) + list(unexpected))[0]
        raise WeightsError(
            f"{source} does not fit {model} ({len(missing)} missing, {len(unexpected)} unexpected "
            f"keys, e.g. {example!r}); pass the checkpoint of {model}"
        )


def load_hiera(
    model: str = DEFAULT_MODEL,
    checkpoint: str = DEFAULT_CHECKPOINT,
    weights: str | os.PathLike | None = None,
    random_init: bool = False,
    cache: str | os.PathLike | None = None,
    model_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> nn.Module:
    """Hiera model with pretrained weights (order: weights, local file, hub cache, download).

    ``random_init=True`` (tests, benchmarks) skips weights and seeds the initialisation so
    the features are reproducible.
    """
    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return build_hiera(model, model_kwargs)
    path = resolve_weights(model, checkpoint, weights, cache, progress)
    state = load_state_dict_file(path)
    net = build_hiera(model, model_kwargs)
    apply_state_dict(net, state, model, str(path))
    return net


def checkpoint_spec(model: str, checkpoint: str = DEFAULT_CHECKPOINT) -> wt.WeightSpec:
    """The weights-table entry of ``model``; other checkpoints get their own file and URL."""
    if model not in WEIGHTS:
        model_kwargs_for(model)
        raise WeightsError(
            f"{model} has no published weights; pass --weights PATH or use random_init=True"
        )
    if checkpoint == DEFAULT_CHECKPOINT:
        return wt.get_spec(model)
    return wt.variant(model, file=f"{model}.{checkpoint}.pth", source=checkpoint_url(model, checkpoint))


def resolve_weights(
    model: str = DEFAULT_MODEL,
    checkpoint: str = DEFAULT_CHECKPOINT,
    weights: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """The checkpoint file to load (the lookup order of :mod:`mulde.extractors.weights`)."""
    if weights is not None:
        return wt.explicit_file(weights, "Hiera", "--weights")
    return wt.resolve_weights(checkpoint_spec(model, checkpoint), cache=cache, progress=progress)


def preprocess_frames(frames: np.ndarray, size: int, spatial: str = "crop") -> np.ndarray:
    """RGB uint8 (T, H, W, 3) -> (T, size, size, 3) uint8.

    ``crop``: short side to ``size`` then centre crop (Hiera's Kinetics evaluation);
    ``full``: the whole frame squashed to size x size (keeps events at the frame edges).
    """
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for t, frame in enumerate(frames):
        h, w = frame.shape[:2]
        if spatial == "full":
            nh, nw = size, size
        else:
            scale = size / min(h, w)
            nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        interp = cv2.INTER_AREA if nh * nw < h * w else cv2.INTER_LINEAR
        img = cv2.resize(frame, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else frame
        y0, x0 = (nh - size) // 2, (nw - size) // 2
        out[t] = img[y0 : y0 + size, x0 : x0 + size]
    return out


def prefetch_chunks(
    reader: Any,
    fn: Callable[[np.ndarray], np.ndarray],
    stop: int,
    chunk_size: int = 64,
    num_workers: int = 2,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, fn(frames))`` for the video's chunks in order, decoding ahead.

    With ``num_workers > 0`` a background thread decodes chunks and ``num_workers`` threads
    run ``fn`` on them (OpenCV and decord release the GIL), at most 2 * num_workers + 1
    chunks ahead of the consumer.
    """
    chunks = reader.iter_chunks(chunk_size=chunk_size, start=0, stop=stop)
    if num_workers <= 0:
        for start, frames in chunks:
            yield start, fn(frames)
        return
    done = object()
    ahead: queue.Queue = queue.Queue(maxsize=2 * num_workers + 1)
    halt = threading.Event()
    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="mulde-prep")

    def put(item: Any) -> bool:
        return put_unless_stopped(ahead, item, halt)

    def produce() -> None:
        try:
            for start, frames in chunks:
                if not put((start, pool.submit(fn, frames))):
                    return
        except BaseException as exc:  # re-raised in the consumer thread
            put(exc)
        finally:
            put(done)

    thread = threading.Thread(target=produce, name="mulde-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            start, future = item
            yield start, future.result()
    finally:
        halt.set()
        thread.join(timeout=5)
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class HieraConfig:
    """Options of :class:`HieraExtractor`; the defaults are the paper's settings.

    model/checkpoint: Hiera video model and its published checkpoint; weights: a local
    checkpoint file instead; random_init: no weights (tests only); model_kwargs: overrides
    for hiera.Hiera (custom architectures). clip_len/frame_stride/clip_step/pad: see
    :mod:`mulde.extractors.clips`. spatial: ``crop`` (short side + centre crop, the authors'
    recipe) or ``full`` (whole frame squashed). batch_size clips per forward pass; device
    auto|cpu|cuda[:N]; amp: bf16 autocast on CUDA; num_workers: resize threads decoding
    ahead; chunk_size: frames decoded at a time; cache: folder holding ``weights/``.
    """

    model: str = DEFAULT_MODEL
    checkpoint: str = DEFAULT_CHECKPOINT
    weights: str | None = None
    random_init: bool = False
    model_kwargs: dict[str, Any] | None = None
    clip_len: int = 16
    frame_stride: int = 1
    clip_step: int = 1
    pad: bool = True
    spatial: str = "crop"
    batch_size: int = 8
    device: str = "auto"
    amp: bool = True
    num_workers: int = 2
    chunk_size: int = 64
    cache: str | None = field(default=None)


class HieraExtractor:
    """Extractor ``hiera``: one Hiera clip embedding per frame (FeatureTable "hiera")."""

    name = "hiera"
    config_class = HieraConfig
    feature_types = ("hiera",)

    def __init__(self, **options: Any) -> None:
        check_options("hiera", options, HieraConfig)
        self.cfg = HieraConfig(**options)
        cfg = self.cfg
        kwargs = model_kwargs_for(cfg.model, cfg.model_kwargs)
        if cfg.spatial not in ("crop", "full"):
            raise InputError(f"unknown spatial mode {cfg.spatial!r}; use crop or full")
        if kwargs["input_size"][0] != cfg.clip_len:
            raise InputError(
                f"{cfg.model} takes clips of {kwargs['input_size'][0]} frames, not clip_len={cfg.clip_len}"
            )
        if kwargs["input_size"][1] != kwargs["input_size"][2]:
            raise InputError(f"{cfg.model}: only square inputs are supported")
        for name in ("frame_stride", "clip_step", "batch_size", "chunk_size"):
            if int(getattr(cfg, name)) < 1:
                raise InputError(f"hiera option {name} must be >= 1, got {getattr(cfg, name)}")
        self.size = int(kwargs["input_size"][1])
        self.dim = model_dim(cfg.model, cfg.model_kwargs)
        self.device = resolve_device(cfg.device)
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self._model: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        """Settings that change the features (the cache key); runtime knobs are left out."""
        cfg = self.cfg
        return {
            "model": cfg.model,
            "checkpoint": None if cfg.random_init or cfg.weights else cfg.checkpoint,
            "weights": wt.weights_digest(cfg.weights) if cfg.weights else None,  # content, not path
            "random_init": cfg.random_init,
            "model_kwargs": cfg.model_kwargs,
            "clip_len": cfg.clip_len,
            "frame_stride": cfg.frame_stride,
            "clip_step": cfg.clip_step,
            "pad": cfg.pad,
            "spatial": cfg.spatial,
            "precision": "bf16" if self.use_amp else "fp32",
        }

    def load(self, progress: bool = True) -> nn.Module:
        """Build the model and load its weights (once)."""
        if self._model is None:
            cfg = self.cfg
            net = load_hiera(cfg.model, cfg.checkpoint, cfg.weights, cfg.random_init,
                             cfg.cache, cfg.model_kwargs, progress)
            self._model = net.to(self.device).eval()
            shape = (1, 3, 1, 1, 1)
            self._mean = torch.tensor(KINETICS_MEAN, device=self.device).view(shape)
            self._std = torch.tensor(KINETICS_STD, device=self.device).view(shape)
        return self._model

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """Features (B, dim) of preprocessed clips (B, clip_len, size, size, 3) uint8."""
        net = self.load(progress=False)
        x = torch.from_numpy(np.ascontiguousarray(clips))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)
        x = (x - self._mean) / self._std
        with torch.inference_mode(), torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp
        ):
            out = net(x)
        return out.float().cpu().numpy()

    def extract(self, reader: Any, progress: bool = True) -> dict[str, FeatureTable]:
        """One row per frame: the embedding of the clip nearest to it (see module doc)."""
        cfg = self.cfg
        self.load(progress)
        n_header = int(reader.n_frames)
        if n_header < 1:
            raise VideoError(f"{getattr(reader, 'path', '<video>')}: video has no frames")
        n = n_header
        L, s, step = cfg.clip_len, cfg.frame_stride, cfg.clip_step
        centres = clip_centres(n, step, L, s, cfg.pad)
        idx = clip_indices(centres, n, L, s, cfg.pad)

        def prep(frames: np.ndarray) -> np.ndarray:
            return preprocess_frames(frames, self.size, cfg.spatial)

        stream = prefetch_chunks(reader, prep, n, cfg.chunk_size, cfg.num_workers)
        buf = np.zeros((0, self.size, self.size, 3), np.uint8)
        base = received = done = 0
        feats: list[np.ndarray] = []
        bar = tqdm(total=len(centres), desc="hiera", unit="clip", disable=not progress)
        try:
            while done < len(centres):
                stop = min(done + cfg.batch_size, len(centres))
                need = int(idx[done:stop].max())
                while received <= need:
                    chunk = next(stream, None)
                    if chunk is None:
                        break
                    buf = np.concatenate([buf, chunk[1]]) if len(buf) else chunk[1]
                    received += len(chunk[1])
                if received <= need:  # the file holds fewer frames than its header says
                    if received == 0:
                        raise VideoError(f"{getattr(reader, 'path', '<video>')}: no frame could be decoded")
                    n = received
                    centres = clip_centres(n, step, L, s, cfg.pad)
                    idx = clip_indices(centres, n, L, s, cfg.pad)
                    bar.total = len(centres)
                    continue
                feats.append(self.embed_clips(buf[idx[done:stop] - base]))
                bar.update(stop - done)
                done = stop
                keep = int(idx[done:].min()) if done < len(centres) else received
                if keep > base:
                    buf, base = buf[keep - base :], keep
        finally:
            bar.close()
            stream.close()
        values = np.concatenate(feats)[assign_nearest(n, centres)]
        meta = {"n_frames": n, "feature_type": "hiera", "dim": self.dim, "model": self.cfg.model,
                **{k: v for k, v in self.config().items() if k != "model"}}
        if n != n_header:
            meta["n_frames_header"] = n_header
        return {"hiera": FeatureTable(frame_idx=np.arange(n), values=values, meta=meta)}


__all__ = [
    "DEFAULT_CHECKPOINT", "DEFAULT_MODEL", "HIERA_MODELS", "KINETICS_MEAN", "KINETICS_STD",
    "PRESETS", "WEIGHTS", "HieraConfig", "HieraExtractor", "build_hiera", "checkpoint_spec", "checkpoint_url",
    "load_hiera", "resolve_weights", "load_state_dict_file", "model_dim", "preprocess_frames", "prefetch_chunks",
]
