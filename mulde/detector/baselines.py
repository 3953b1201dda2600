"""Baseline density models with MULDE's API: GMM (AccI-VAD), kNN distance, MSMA.

All standardise features with training statistics, score with higher = more anomalous and
save to the same safetensors model-file format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    write_model_file,
)
from mulde.detector.dsm import StepFn, autograd_step, msma_loss
from mulde.detector.network import NoiseConditionedMLP
from mulde.detector.neural import NoiseConditionedDetector, NoiseModelConfig
from mulde.device import resolve_device
from mulde.errors import InputError

# ----------------------------------------------------------------------------- GMM


@dataclass
class GMMConfig:
    """Gaussian mixture on standardised features (AccI-VAD's density model).

    n_components=5 with full covariances is our choice of a flexible but stable default.
    """

    n_components: int = 5
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    max_iter: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_components < 1:
            raise InputError(f"n_components must be >= 1, got {self.n_components}")


class GMMDetector(Detector):
    """Score = negative log-likelihood under a GaussianMixture fitted to normal features."""

    kind = "gmm"
    config_class = GMMConfig

    def __init__(self, config: GMMConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.n_features_in_: int | None = None
        self.gmm_ = None
        self.standardizer_: Standardizer | None = None

    def fit(self, X: Any, progress: bool = True) -> GMMDetector:
        """Fit the mixture by EM on standardised ``X`` (n, d)."""
        cfg = self.config
        X = check_features(X)
        self.standardizer_ = Standardizer.fit(X)
        self.gmm_ = fit_gmm(self.standardizer_.transform(X), cfg.n_components,
                            cfg.covariance_type, cfg.reg_covar, cfg.seed, cfg.max_iter)
        self.n_features_in_ = int(X.shape[1])
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Negative log-likelihood (n,); higher = more anomalous."""
        self._check_fitted()
        X = check_features(X, self.n_features_in_)
        return gmm_nll(self.gmm_, self.standardizer_.transform(X))

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        tensors = {**gmm_to_tensors(self.gmm_), "standardizer.mean": self.standardizer_.mean,
                   "standardizer.std": self.standardizer_.std}
        return write_model_file(path, self.kind, self.config, tensors,
                                {"n_features": self.n_features_in_})

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> GMMDetector:
        header, t = read_model_file(path, cls.kind)
        with model_file_errors(path):
            self = cls(config_from_dict(GMMConfig, header["config"]))
            self.gmm_ = gmm_from_tensors(t, self.config.covariance_type)
            self.standardizer_ = Standardizer(t["standardizer.mean"].numpy(),
                                              t["standardizer.std"].numpy())
            self.n_features_in_ = int(header["n_features"])
        return self


# ----------------------------------------------------------------------------- kNN


@dataclass
class KNNConfig:
    """Distance to the k-th nearest training feature (exact search, standardised features).

    query_chunk x train_chunk bounds the distance block held in memory (default 1024 x 16384
    floats = 64 MiB).
    """

    k: int = 1
    query_chunk: int = 1024
    train_chunk: int = 16384
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("k", "query_chunk", "train_chunk"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")


class KNNDetector(Detector):
    """Score = Euclidean distance to the k-th nearest training sample (standardised space).

    Candidates come from a batched matrix-product distance (torch); the best candidates are
    re-ranked with distances computed directly from differences, so the result is exact.
    Scoring a training sample returns 0 for k=1 (it is its own nearest neighbour).
    """

    kind = "knn"
    config_class = KNNConfig

    def __init__(self, config: KNNConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.n_features_in_: int | None = None
        self.train_: torch.Tensor | None = None
        self.standardizer_: Standardizer | None = None
        self.device_ = resolve_device(self.config.device)

    def fit(self, X: Any, progress: bool = True) -> KNNDetector:
        """Store the standardised training features (they are the model)."""
        X = check_features(X)
        check_min_samples(len(X), self.config.k, f"kNN with k={self.config.k}")
        self.standardizer_ = Standardizer.fit(X)
        self.train_ = torch.from_numpy(self.standardizer_.transform(X)).to(self.device_)
        self.n_features_in_ = int(X.shape[1])
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Distance to the k-th nearest training feature (n,)."""
        self._check_fitted()
        X = check_features(X, self.n_features_in_)
        q_all = torch.from_numpy(self.standardizer_.transform(X)).to(self.device_)
        return kth_neighbour_distance(q_all, self.train_, self.config.k,
                                      self.config.query_chunk, self.config.train_chunk)

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        tensors = {"train": self.train_, "standardizer.mean": self.standardizer_.mean,
                   "standardizer.std": self.standardizer_.std}
        return write_model_file(path, self.kind, self.config, tensors,
                                {"n_features": self.n_features_in_})

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> KNNDetector:
        header, t = read_model_file(path, cls.kind)
        with model_file_errors(path):
            cfg = config_from_dict(KNNConfig, header["config"])
            if device is not None:
                cfg.device = device
            self = cls(cfg)
            self.train_ = t["train"].to(self.device_)
            self.standardizer_ = Standardizer(t["standardizer.mean"].numpy(),
                                              t["standardizer.std"].numpy())
            self.n_features_in_ = int(header["n_features"])
        return self


KNN_EXTRA_CANDIDATES = 8
"""Extra neighbours re-ranked exactly, covering rounding near-ties of the fast distances."""


@torch.inference_mode()
def kth_neighbour_distance(
    queries: torch.Tensor, train: torch.Tensor, k: int, query_chunk: int, train_chunk: int
) -> np.ndarray:
    """Exact distance from each query to its k-th nearest row of ``train``, chunked.

    A matrix-product distance (‖q‖² + ‖t‖² − 2q·t, fast but subject to cancellation) keeps
    the k + 8 best candidates per query; their distances are then recomputed from the
    differences and re-ranked, so the result equals brute force.
    """
    n_cand = min(k + KNN_EXTRA_CANDIDATES, len(train))
    train_sq = train.square().sum(1)
    out = []
    for qs in range(0, len(queries), query_chunk):
        q = queries[qs:qs + query_chunk]
        q_sq = q.square().sum(1, keepdim=True)
        best_d = best_i = None
        for ts in range(0, len(train), train_chunk):
            t = train[ts:ts + train_chunk]
            d2 = (q_sq + train_sq[ts:ts + train_chunk]).addmm_(q, t.t(), alpha=-2.0)
            idx = torch.arange(ts, ts + len(t), device=q.device).expand(len(q), -1)
            if best_d is not None:
                d2, idx = torch.cat([best_d, d2], 1), torch.cat([best_i, idx], 1)
            best_d, pos = d2.topk(min(n_cand, d2.shape[1]), dim=1, largest=False)
            best_i = idx.gather(1, pos)
        exact = (train[best_i] - q.unsqueeze(1)).norm(dim=2)  # (q, n_cand)
        out.append(exact.kthvalue(k, dim=1).values.cpu())
    return torch.cat(out).numpy().astype(np.float64)


# ----------------------------------------------------------------------------- MSMA


@dataclass
class MSMAConfig(NoiseModelConfig):
    """Multiscale score matching analysis (Mahmood et al., ICLR 2021) adapted to features.

    Same network, noise range, optimiser and GMM defaults as :class:`MULDEConfig`; the
    network outputs a d-dimensional score s(x, σ) trained with standard multiscale DSM.
    """


class MSMADetector(NoiseConditionedDetector):
    """Score = GMM NLL of the L-vector of σ-scaled score norms ‖σ_i s(x, σ_i)‖."""

    kind = "msma"
    config_class = MSMAConfig

    def _out_features(self, n_features: int) -> int:
        return n_features

    def _make_step(self, net: NoiseConditionedMLP, device: torch.device) -> StepFn:
        return autograd_step(net, msma_loss, autocast=self.config.amp and device.type == "cuda")

    def _level_values(self, out: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return out.float().norm(dim=-1) * sigmas

