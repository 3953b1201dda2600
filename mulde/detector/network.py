"""The noise-conditioned MLP f(x, σ) (MULDE) and s(x, σ) (MSMA's vector-valued score).

The noise level enters as one extra input column c(σ), so the first layer computes
``W_x x + w_σ c(σ) + b``; c is ``log σ`` (``conditioning="log_sigma"``, the default) or σ itself
(``"sigma"``, as the authors' released code does). At scoring time ``W_x x`` is computed once
per feature and shared by all L noise levels; only the cheap rank-one σ term differs.
GELU activations keep f twice differentiable (the training loss uses ∇ₓf); the output layer
has no nonlinearity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

CONDITIONINGS = ("log_sigma", "sigma")
"""How σ enters the network: as log σ, or as σ (the authors' code)."""


class NoiseConditionedMLP(nn.Module):
    """MLP on ``[x, c(σ)]`` with GELU hidden layers and a linear head.

    ``first`` has weight (H₁, d + 1): columns ``[:d]`` act on x, column ``d`` on c(σ), which is
    log σ or σ (``conditioning``). ``out_features=1`` gives MULDE's scalar f;
    ``out_features=d`` gives MSMA's score s.
    """

    def __init__(
        self, n_features: int, hidden: Sequence[int] = (4096, 4096), out_features: int = 1,
        conditioning: str = "log_sigma",
    ) -> None:
        super().__init__()
        if n_features < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"bad network shape: n_features={n_features}, hidden={hidden}")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        self.conditioning = conditioning
        self.n_features = int(n_features)
        self.hidden = tuple(int(h) for h in hidden)
        self.out_features = int(out_features)
        self.first = nn.Linear(n_features + 1, self.hidden[0])
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(self.hidden[:-1], self.hidden[1:])
        )
        self.head = nn.Linear(self.hidden[-1], out_features)

    def condition(self, sigma: torch.Tensor) -> torch.Tensor:
        """The network's σ input column: log σ or σ."""
        return sigma.log() if self.conditioning == "log_sigma" else sigma

    @property
    def linears(self) -> list[nn.Linear]:
        """All linear layers in order: first, hidden-to-hidden, head."""
        return [self.first, *self.layers, self.head]

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """f(x, σ) for paired rows: x (n, d), σ (n,) -> (n,) or (n, out_features)."""
        d = self.n_features
        w = self.first.weight
        z = torch.addmm(self.first.bias, x, w[:, :d].t())
        z = z + self.condition(sigma).unsqueeze(1).to(z.dtype) * w[:, d]
        out = self._trunk(z)
        return out.squeeze(-1) if self.out_features == 1 else out

    def forward_levels(self, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        """f at every noise level in one pass: x (n, d), σ (L,) -> (n, L) or (n, L, out).

        The input product ``W_x x`` is computed once and broadcast over the L levels.
        """
        d = self.n_features
        w = self.first.weight
        hx = x @ w[:, :d].t()  # (n, H1), shared across levels
        level = self.first.bias + self.condition(sigmas).unsqueeze(1).to(hx.dtype) * w[:, d]  # (L, H1)
        z = (hx.unsqueeze(1) + level.unsqueeze(0)).reshape(-1, hx.shape[1])
        out = self._trunk(z).reshape(x.shape[0], len(sigmas), self.out_features)
        return out.squeeze(-1) if self.out_features == 1 else out

    def _trunk(self, z: torch.Tensor) -> torch.Tensor:
        h = F.gelu(z)
        for layer in self.layers:
            h = F.gelu(layer(h))
        return self.head(h)


def init_network(
    n_features: int, hidden: Sequence[int], out_features: int, seed: int,
    conditioning: str = "log_sigma",
) -> NoiseConditionedMLP:
    """Build the network with a seeded initialisation that leaves the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NoiseConditionedMLP(n_features, hidden, out_features, conditioning)


def gelu_parts(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact GELU φ(z) = zΦ(z) with its first and second derivatives (reference helper)."""
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return z * cdf, cdf + z * pdf, pdf * (2.0 - z * z)
