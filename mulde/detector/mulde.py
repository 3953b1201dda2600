"""MULDE (CVPR 2024): multiscale log-density estimation by denoising score matching.

A scalar network f(x, σ) is trained with Eq. 6 of the paper,
σ²‖∇ₓ̃f(x̃, σ) − (x̃ − x)/σ²‖² + β f(x, σ)², σ ~ log-uniform[σ_low, σ_high],
so f(·, σ) ≈ −log q_σ (up to a constant) of the standardised normal features noised at
scale σ. The anomaly score is the GMM negative log-likelihood of [f(x, σ_1) … f(x, σ_L)].
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from mulde.detector.base import make_config
from mulde.detector.dsm import MuldeLossGrad, StepFn, autograd_step, mulde_loss_autograd
from mulde.detector.network import NoiseConditionedMLP
from mulde.detector.neural import NoiseConditionedDetector, NoiseModelConfig
from mulde.errors import InputError


@dataclass
class MULDEConfig(NoiseModelConfig):
    """MULDE hyper-parameters; defaults are the paper's (Sec. 4, supp. 7.3, Table 4).

    lr: the paper uses 5e-4 for object-centric and 1e-4 for frame-centric features.
    steps: the paper does not state a training length; 5000 steps of 2048 samples (about
        100 epochs of a 100k-row feature set) is our default. ``epochs``, when set,
        overrides ``steps`` (steps = ceil(epochs · n / batch_size)).
    gmm_components: the paper tries 1, 3 and 5; we default to 1, whose EM is deterministic
        and which needs the fewest samples (the L-vectors of normal data are close to
        one-dimensional, so one full-covariance Gaussian already describes them well).
    amp: bf16 autocast on CUDA only (training then uses the autograd path, with the loss
        residual in fp32); ignored on CPU. tf32: allow TF32 matmuls on CUDA.
    compile: wrap the training step in torch.compile (first step compiles; off by default).
    holdout: fraction of the rows kept out of training to report ``holdout_loss_``.
    level_spacing: ``linear`` (the paper: L levels evenly spaced in [σ_low, σ_high]) or
        ``geometric`` (evenly spaced in log σ, like the training draws); see ``level_grid``.
    sigma_high: the largest noise scale in standardised units: 1.0 (the paper's) or ``auto``,
        the median distance between two training rows (``neural.pairwise_scale``; fitted value in
        ``sigma_high_``). On Ped2 ``auto`` raised MULDE on the 208-d flow grid from 85.0 to 88.7
        micro AUC and each object type by 0.5-2.4 points, but lowered the synthetic scenes by 0.5-2.6
        (benchmarks/RESULTS.md, session 15), so the paper's value stays the default.
    conditioning: how σ enters the network: ``log_sigma`` (the default, and the ``cpu`` preset's)
        or ``sigma`` (the authors' released code, and the ``paper`` preset's: at 2 x 4096 it
        measured better on a 64-d manifold and on Ped2, at 2 x 512 worse; benchmarks/RESULTS.md).
    lr_schedule: ``constant`` (the paper) or ``cosine`` (annealed to zero by the last step).
    ema_decay: > 0 ends training on the exponential moving average of the weights (as in
        diffusion models); 0 keeps the last step's weights (the paper). Both are off in every
        preset: measured in benchmarks/RESULTS.md (Ped2 seed spread down, synthetic scenes down).
    readout: ``gmm`` (the paper: negative log-likelihood of the L-vector under the fitted GMM) or
        ``mean`` / ``max`` / ``median`` of the levels standardised on the training rows.
    score_batch_size: features per scoring batch (each evaluated at all L levels).
    log_every: steps between host syncs that record losses and update the progress bar.
    """

    beta: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta < 0:
            raise InputError(f"beta must be >= 0, got {self.beta}")


def mulde_preset(name: str, **overrides: object) -> MULDEConfig:
    """A named configuration (``paper``, ``cpu`` or ``test``; see ``mulde.config.PRESETS``)."""
    from mulde.config import PRESETS

    if name not in PRESETS:
        raise InputError(f"unknown MULDE preset {name!r}; choose from {', '.join(PRESETS)}")
    return make_config(MULDEConfig, make_config(MULDEConfig, None, PRESETS[name]), overrides)


class MULDE(NoiseConditionedDetector):
    """MULDE detector: ``fit(X)``, ``score_samples(X)`` (GMM NLL, higher = more anomalous).

    ``log_density(X)`` gives the per-level f values (n, L); ``score_aggregates(X)`` the
    max / mean / median alternatives to the GMM (supp. 7.3). β = 0 is the paper's ablation.
    """

    kind = "mulde"
    config_class = MULDEConfig

    def _out_features(self, n_features: int) -> int:
        return 1

    def _make_step(self, net: NoiseConditionedMLP, device: torch.device) -> StepFn:
        if self.config.amp and device.type == "cuda":
            loss = partial(mulde_loss_autograd, beta=self.config.beta)
            return autograd_step(net, loss, autocast=True)
        return MuldeLossGrad(net, self.config.beta)

    def _level_values(self, out: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        return out

