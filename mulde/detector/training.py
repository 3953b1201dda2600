"""The training loop shared by MULDE and MSMA: noisy batches, Adam, loss history.

Everything per step stays on the device: batch indices (``torch.randint``), noise and σ are
drawn there from one seeded generator, and per-step losses are written into a device
buffer that is copied to the host only every ``log_every`` steps (no sync per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from mulde.detector.dsm import StepFn
from mulde.errors import MuldeError


class TrainingDiverged(MuldeError, RuntimeError):
    """The loss became NaN/inf; the message suggests a lower learning rate."""


@dataclass
class TrainSettings:
    """How long and how fast to train (filled from a detector config)."""

    steps: int
    batch_size: int
    lr: float
    adam_betas: tuple[float, float]
    sigma_low: float
    sigma_high: float
    log_every: int = 50
    lr_schedule: str = "constant"
    ema_decay: float = 0.0


LR_SCHEDULES = ("constant", "cosine")
"""Learning rate over training: fixed (the paper) or cosine-annealed to zero."""


def sample_sigma(
    n: int, low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """σ ~ log-uniform[low, high] (the paper's emphasis on small noise levels)."""
    u = torch.rand(n, generator=generator, device=device)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def resolve_steps(steps: int, epochs: float | None, n_samples: int, batch_size: int) -> int:
    """``epochs`` (passes over the data), when given, overrides ``steps``."""
    if epochs is None:
        return int(steps)
    return max(1, math.ceil(epochs * n_samples / min(batch_size, n_samples)))


def train_dsm(
    params: list[torch.nn.Parameter],
    step_fn: StepFn,
    X: torch.Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
    progress: bool = True,
    desc: str = "train",
) -> list[float]:
    """Run ``settings.steps`` Adam steps of ``step_fn`` on random batches of ``X``.

    Returns the per-step losses. Raises :class:`TrainingDiverged` on a NaN/inf loss.
    With ``ema_decay`` > 0 the parameters end as the exponential moving average of their
    trajectory (as in diffusion models), which averages out where the last Adam step landed.
    """
    device = X.device
    n, d = X.shape
    batch = min(settings.batch_size, n)
    fused = device.type in ("cpu", "cuda")
    opt = torch.optim.Adam(params, lr=settings.lr, betas=settings.adam_betas, fused=fused)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps)
             if settings.lr_schedule == "cosine" else None)
    live = [p.detach() for p in params]  # views: they follow every optimizer step
    ema = [p.clone() for p in live] if settings.ema_decay > 0 else None
    losses = torch.zeros(settings.steps, device=device)
    history: list[float] = []
    bar = tqdm(total=settings.steps, desc=desc, disable=not progress, leave=False)
    try:
        for step in range(settings.steps):
            idx = torch.randint(n, (batch,), generator=generator, device=device)
            x = X[idx]
            eps = torch.randn(batch, d, generator=generator, device=device)
            sigma = sample_sigma(batch, settings.sigma_low, settings.sigma_high, generator, device)
            losses[step] = step_fn(x, eps, sigma)
            opt.step()
            if sched is not None:
                sched.step()
            if ema is not None:
                # Warm-up (decay min(d, (1+t)/(10+t))): short runs do not keep the init's weights.
                weight = max(1.0 - settings.ema_decay, 9.0 / (step + 10))
                torch._foreach_lerp_(ema, live, weight)
            done = step + 1
            if done % settings.log_every == 0 or done == settings.steps:
                chunk = losses[len(history):done].tolist()  # the only host sync
                history.extend(chunk)
                if not all(math.isfinite(v) for v in chunk):
                    raise TrainingDiverged(
                        f"training diverged: loss is {chunk[-1]} at step {done}; "
                        f"lower the learning rate (lr={settings.lr})"
                    )
                bar.update(len(chunk))
                bar.set_postfix(loss=f"{sum(chunk) / len(chunk):.4g}")
    finally:
        bar.close()
    if ema is not None:
        torch._foreach_copy_(live, ema)
    return history


def evaluate_loss(
    step_fn: StepFn,
    X: torch.Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
) -> float:
    """Mean loss over ``X`` (e.g. a held-out split) with one fixed noise draw per row."""
    n, d = X.shape
    batch = min(settings.batch_size, n)
    total = torch.zeros((), device=X.device)
    for start in range(0, n, batch):
        x = X[start:start + batch]
        eps = torch.randn(x.shape[0], d, generator=generator, device=X.device)
        sigma = sample_sigma(x.shape[0], settings.sigma_low, settings.sigma_high, generator,
                             X.device)
        total += step_fn(x, eps, sigma) * x.shape[0]
    return float(total) / n
