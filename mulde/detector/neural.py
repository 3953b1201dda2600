"""Shared machinery of the noise-conditioned network detectors (MULDE and MSMA).

Fit: standardise features, train the network by multiscale denoising score matching, evaluate
it at L noise levels on the training set (evenly spaced as in the paper, or geometrically),
fit a GMM to those L-vectors.
Score: GMM negative log-likelihood of a sample's L-vector. Subclasses say what the network
outputs, which loss trains it, and how its outputs become the L-vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from mulde.detector.base import (
    Detector,
    Standardizer,
    check_features,
    check_min_samples,
    config_from_dict,
    fit_gmm,
    gmm_from_tensors,
    gmm_nll,
    gmm_to_tensors,
    model_file_errors,
    read_model_file,
    tf32_enabled,
    write_model_file,
)
from mulde.detector.dsm import StepFn
from mulde.detector.network import CONDITIONINGS, NoiseConditionedMLP, init_network
from mulde.detector.training import (
    LR_SCHEDULES,
    TrainSettings,
    evaluate_loss,
    resolve_steps,
    train_dsm,
)
from mulde.device import resolve_device
from mulde.errors import InputError

SIGMA_AUTO = "auto"
"""``sigma_high: auto``: the median distance between two standardised training rows (see
:func:`pairwise_scale`)."""


def check_noise_config(cfg: Any) -> None:
    """Validate the fields every noise-conditioned detector config has (InputError)."""
    if isinstance(cfg.sigma_high, str) and cfg.sigma_high != SIGMA_AUTO:
        raise InputError(f"sigma_high must be a number or {SIGMA_AUTO!r}, got {cfg.sigma_high!r}")
    if not 0 < cfg.sigma_low < (math.inf if cfg.sigma_high == SIGMA_AUTO else cfg.sigma_high):
        raise InputError(
            f"need 0 < sigma_low < sigma_high, got sigma_low={cfg.sigma_low}, "
            f"sigma_high={cfg.sigma_high}"
        )
    for name in ("n_levels", "batch_size", "steps", "gmm_components", "score_batch_size"):
        if int(getattr(cfg, name)) < 1:
            raise InputError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not cfg.hidden or min(cfg.hidden) < 1:
        raise InputError(f"hidden must be a non-empty list of positive widths, got {cfg.hidden}")
    if not 0 <= cfg.holdout < 1:
        raise InputError(f"holdout must be a fraction in [0, 1), got {cfg.holdout}")
    if cfg.epochs is not None and cfg.epochs <= 0:
        raise InputError(f"epochs must be > 0 (or None to use steps), got {cfg.epochs}")
    if cfg.lr <= 0:
        raise InputError(f"lr must be > 0, got {cfg.lr}")
    if not 0 <= cfg.ema_decay < 1:
        raise InputError(f"ema_decay must be in [0, 1) (0 = off), got {cfg.ema_decay}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise InputError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
    if cfg.level_spacing not in LEVEL_SPACINGS:
        raise InputError(f"level_spacing must be one of {', '.join(LEVEL_SPACINGS)}, "
                         f"got {cfg.level_spacing!r}")
    if cfg.readout not in READOUTS:
        raise InputError(f"readout must be one of {', '.join(READOUTS)}, got {cfg.readout!r}")
    if cfg.conditioning not in CONDITIONINGS:
        raise InputError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, "
                         f"got {cfg.conditioning!r}")


_AGGREGATES = {
    "mean": lambda z: z.mean(axis=1),
    "max": lambda z: z.max(axis=1),
    "median": lambda z: np.median(z, axis=1),
}

READOUTS = ("gmm", *_AGGREGATES)
"""How the L-vector becomes one score: the paper's GMM negative log-likelihood, or the mean / max /
median of the levels standardised on the training rows (the paper's supp. 7.3 alternatives)."""

LEVEL_SPACINGS = ("linear", "geometric")
"""How the L scoring levels fill [σ_low, σ_high]: evenly (the paper) or evenly in log σ."""


def pairwise_scale(x: np.ndarray, seed: int, n: int = 1000) -> float:
    """Median Euclidean distance between two distinct rows of ``x`` (a seeded subsample of ``n``).

    The largest noise scale should reach across the data, so that the model describes the space
    between training rows and not only their neighbourhoods (Song & Ermon 2020 take the largest
    pairwise distance; the median ignores outliers). In standardised units it grows like
    sqrt(2·d): 2.8 for Ped2's 10-d velocity rows, 7 for its 208-d flow grid (whose low-variance
    columns the standardiser floors), where the paper's fixed 1.0 covers only the neighbourhood
    of a training frame."""
    from scipy.spatial.distance import pdist

    x = np.asarray(x, np.float64)
    if len(x) > n:
        x = x[np.random.default_rng(seed).choice(len(x), n, replace=False)]
    d = pdist(x)
    d = d[d > 1e-9]
    return float(np.median(d)) if len(d) else 1.0


def level_grid(low: float, high: float, n: int, spacing: str = "linear") -> np.ndarray:
    """The L noise levels the GMM sees, from ``low`` to ``high`` inclusive.

    ``linear`` is the paper's evenly spaced grid; with [1e-3, 1] and L = 16 only its first level
    lies below 0.067, although training draws σ log-uniformly (half of all draws are below
    0.032). ``geometric`` spaces the levels evenly in log σ, matching the training distribution.
    """
    if spacing == "geometric":
        return np.geomspace(low, high, n)
    return np.linspace(low, high, n)


@dataclass
class NoiseModelConfig:
    """Fields shared by the noise-conditioned detectors (MULDE, MSMA); defaults are the paper's.

    See :class:`mulde.detector.mulde.MULDEConfig` for what each field means.
    """

    hidden: tuple[int, ...] = (4096, 4096)
    sigma_low: float = 1e-3
    sigma_high: float | Literal["auto"] = 1.0
    n_levels: int = 16
    lr: float = 1e-4
    adam_betas: tuple[float, float] = (0.5, 0.9)
    batch_size: int = 2048
    steps: int = 5000
    epochs: float | None = None
    gmm_components: int = 1
    gmm_covariance: str = "full"
    gmm_reg_covar: float = 1e-6
    level_spacing: str = "linear"
    conditioning: str = "log_sigma"
    device: str = "auto"
    seed: int = 0
    amp: bool = False
    tf32: bool = True
    compile: bool = False
    holdout: float = 0.0
    lr_schedule: str = "constant"
    ema_decay: float = 0.0
    readout: str = "gmm"
    score_batch_size: int = 256
    log_every: int = 50

    def __post_init__(self) -> None:
        check_noise_config(self)


class NoiseConditionedDetector(Detector):
    """Base for MULDE / MSMA: a network f(x, σ) read out at L noise levels plus a GMM."""

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.n_features_in_: int | None = None
        self.sigmas_: np.ndarray | None = None
        self.sigma_high_: float | None = None
        self.history_: list[float] = []
        self.holdout_loss_: float | None = None
        self.net_: NoiseConditionedMLP | None = None
        self.gmm_ = None
        self.standardizer_: Standardizer | None = None
        self.level_mean_: np.ndarray | None = None
        self.level_std_: np.ndarray | None = None
        self.device_: torch.device | None = None

    # -- what subclasses define ------------------------------------------------------------

    def _out_features(self, n_features: int) -> int:
        raise NotImplementedError

    def _make_step(self, net: NoiseConditionedMLP, device: torch.device) -> StepFn:
        raise NotImplementedError

    def _level_values(self, out: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """Network output at all levels (n, L[, d]) -> the per-level L-vector (n, L)."""
        raise NotImplementedError

    # -- fitting -----------------------------------------------------------------------------

    def fit(self, X: Any, progress: bool = True) -> NoiseConditionedDetector:
        """Train the network on normal features ``X`` (n, d), then fit the GMM."""
        cfg = self.config
        X = check_features(X)
        check_min_samples(len(X), max(2, cfg.gmm_components),
                          f"{type(self).__name__} (gmm_components={cfg.gmm_components})")
        device = resolve_device(cfg.device)
        train, held = _split_holdout(X, cfg.holdout, cfg.seed)
        check_min_samples(len(train), max(2, cfg.gmm_components), "training after the holdout")
        self.standardizer_ = Standardizer.fit(train)
        x_np = self.standardizer_.transform(train)
        self.sigma_high_ = (max(pairwise_scale(x_np, cfg.seed), 10.0 * cfg.sigma_low)
                            if cfg.sigma_high == SIGMA_AUTO else float(cfg.sigma_high))
        x_train = torch.from_numpy(x_np).to(device)
        net = init_network(X.shape[1], cfg.hidden, self._out_features(X.shape[1]), cfg.seed,
                           cfg.conditioning)
        net = net.to(device)
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        settings = self._train_settings(len(train))
        self.device_ = device
        self.n_features_in_ = int(X.shape[1])
        self.sigmas_ = level_grid(cfg.sigma_low, self.sigma_high_, cfg.n_levels, cfg.level_spacing)
        with tf32_enabled(cfg.tf32, device):
            step = self._make_step(net, device)
            if cfg.compile:
                step = torch.compile(step)
            self.history_ = train_dsm(list(net.parameters()), step, x_train, settings,
                                      generator, progress, desc=type(self).__name__)
            for p in net.parameters():
                p.grad = None
                p.requires_grad_(False)
            self.net_ = net.eval()
            levels = self._levels(x_train, self.sigmas_)
        self.gmm_ = fit_gmm(levels, cfg.gmm_components, cfg.gmm_covariance, cfg.gmm_reg_covar,
                            cfg.seed)
        self.level_mean_ = levels.mean(axis=0)
        self.level_std_ = np.maximum(levels.std(axis=0), 1e-12)
        if held is not None:
            self.holdout_loss_ = self.dsm_loss(held)
        return self

    def _train_settings(self, n_rows: int) -> TrainSettings:
        cfg = self.config
        return TrainSettings(
            steps=resolve_steps(cfg.steps, cfg.epochs, n_rows, cfg.batch_size),
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            adam_betas=tuple(cfg.adam_betas),
            sigma_low=cfg.sigma_low,
            sigma_high=self.sigma_high_,
            log_every=cfg.log_every,
            lr_schedule=cfg.lr_schedule,
            ema_decay=cfg.ema_decay,
        )

    def dsm_loss(self, X: Any, draws: int = 1) -> float:
        """The training objective on rows ``X``, averaged over ``draws`` noise draws per row (fixed
        by the seed). On videos left out of training it says whether the model describes the
        scene or memorises its training videos (``benchmarks/video_holdout.py``)."""
        if not isinstance(draws, int) or draws < 1:
            raise InputError(f"draws must be a positive integer, got {draws!r}")
        x = self._standardised(X).to(self.device_)
        settings = self._train_settings(len(x))
        generator = torch.Generator(device=self.device_).manual_seed(self.config.seed)
        params = list(self.net_.parameters())
        try:
            for p in params:  # the step functions compute parameter gradients as training does
                p.requires_grad_(True)
            with tf32_enabled(self.config.tf32, self.device_):
                step = self._make_step(self.net_, self.device_)
                return float(np.mean([evaluate_loss(step, x, settings, generator) for _ in range(draws)]))
        finally:
            for p in params:
                p.grad = None
                p.requires_grad_(False)

    # -- scoring -----------------------------------------------------------------------------

    def _levels(self, x_std: torch.Tensor, sigmas: np.ndarray) -> np.ndarray:
        """L-vectors (n, L) float64 for standardised features, batched, without autograd."""
        cfg = self.config
        device = self.device_
        sig = torch.as_tensor(np.asarray(sigmas, dtype=np.float32), device=device)
        amp = cfg.amp and device.type == "cuda"
        out = []
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
            for start in range(0, len(x_std), cfg.score_batch_size):
                chunk = x_std[start:start + cfg.score_batch_size].to(device)
                vals = self._level_values(self.net_.forward_levels(chunk, sig), sig)
                out.append(vals.float().cpu())
        return torch.cat(out).numpy().astype(np.float64)

    def _standardised(self, X: Any) -> torch.Tensor:
        self._check_fitted()
        X = check_features(X, self.n_features_in_)
        return torch.from_numpy(self.standardizer_.transform(X))

    def log_density(self, X: Any, sigmas: Any = None) -> np.ndarray:
        """Per-level values (n, L) at the fitted σ grid, or at ``sigmas`` (standardised units)."""
        self._check_fitted()
        grid = self.sigmas_ if sigmas is None else np.atleast_1d(np.asarray(sigmas, float))
        if np.any(grid <= 0) or not np.all(np.isfinite(grid)):
            raise InputError(f"noise levels must be positive and finite, got {grid}")
        with tf32_enabled(self.config.tf32, self.device_ or torch.device("cpu")):
            return self._levels(self._standardised(X), grid)

    def score_samples(self, X: Any) -> np.ndarray:
        """Anomaly score (n,), higher = anomalous: the configured ``readout`` of the L-vectors."""
        return self.score_levels(self.log_density(X))

    def score_levels(self, levels: np.ndarray, readout: str | None = None) -> np.ndarray:
        """L-vectors (n, L) at the fitted grid -> scores: the GMM negative log-likelihood (``gmm``)
        or the mean / max / median of the levels standardised on the training rows."""
        readout = readout or self.config.readout
        if readout == "gmm":
            return gmm_nll(self.gmm_, levels)
        if readout not in _AGGREGATES:
            raise InputError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        return _AGGREGATES[readout]((np.asarray(levels, np.float64) - self.level_mean_) / self.level_std_)

    def score_aggregates(self, X: Any) -> dict[str, np.ndarray]:
        """Max / mean / median over levels of per-level values standardised on training data."""
        levels = self.log_density(X)
        return {name: self.score_levels(levels, name) for name in _AGGREGATES}

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to one safetensors file (no pickle)."""
        self._check_fitted()
        tensors: dict[str, Any] = {f"net.{k}": v for k, v in self.net_.state_dict().items()}
        tensors.update(gmm_to_tensors(self.gmm_))
        tensors.update({
            "standardizer.mean": self.standardizer_.mean,
            "standardizer.std": self.standardizer_.std,
            "sigmas": self.sigmas_,
            "level_mean": self.level_mean_,
            "level_std": self.level_std_,
            "history": np.asarray(self.history_, dtype=np.float32),
        })
        extra = {"n_features": self.n_features_in_, "holdout_loss": self.holdout_loss_}
        return write_model_file(path, self.kind, self.config, tensors, extra)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> NoiseConditionedDetector:
        """Read a file written by :meth:`save`; ``device`` overrides the saved one."""
        header, t = read_model_file(path, cls.kind)
        with model_file_errors(path):
            # files written before these options existed used log σ, the linear grid and the GMM readout
            saved = {"conditioning": "log_sigma", "level_spacing": "linear", "readout": "gmm", **header["config"]}
            cfg = config_from_dict(cls.config_class, saved)
            self = cls(cfg)
            d = int(header["n_features"])
            self.device_ = resolve_device(device or cfg.device)
            net = NoiseConditionedMLP(d, cfg.hidden, self._out_features(d), cfg.conditioning)
            net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
            for p in net.parameters():
                p.requires_grad_(False)
            self.net_ = net.to(self.device_).eval()
            self.gmm_ = gmm_from_tensors(t, cfg.gmm_covariance)
            self.standardizer_ = Standardizer(t["standardizer.mean"].numpy(),
                                              t["standardizer.std"].numpy())
            self.sigmas_ = t["sigmas"].numpy()
            self.sigma_high_ = float(self.sigmas_.max())
            self.level_mean_ = t["level_mean"].numpy()
            self.level_std_ = t["level_std"].numpy()
            self.history_ = t["history"].tolist()
            self.holdout_loss_ = header.get("holdout_loss")
            self.n_features_in_ = d
        return self


def _split_holdout(X: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, Any]:
    """Random (train, held-out) split; held-out is None for fraction 0."""
    n_held = int(round(fraction * len(X)))
    if n_held == 0:
        return X, None
    perm = np.random.default_rng(seed).permutation(len(X))
    return X[perm[n_held:]], X[perm[:n_held]]
