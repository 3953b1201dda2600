"""Synthetic density-estimation problems for the detector benchmarks (not a test).

``make_manifold`` draws normal data on a curved k-dimensional manifold embedded in R^D, the
situation the MULDE paper argues for (video features concentrate near a low-dimensional, curved
set). The map u -> x is a fixed random sum of sinusoids of the latent u in [0, 2π)^k, so the
manifold is smooth, closed and bends in every ambient direction. Two anomaly kinds:

* ``off``: a normal point moved off the manifold by ``off_distance`` (in units of the data's
  per-dimension std) along a random direction orthogonal to the local tangent space but
  inside the manifold's linear span (so no linear model finds it for free);
* ``hole``: a point on the manifold, in a latent region training never visits (the first
  latent coordinate's arc [π - hole, π + hole] is excluded from normal data).

Returns standardisation-free float32 arrays; the detectors standardise themselves.
"""

from __future__ import annotations

import numpy as np


def _embed(u: np.ndarray, freqs: np.ndarray, phase: np.ndarray, mix: np.ndarray) -> np.ndarray:
    return np.cos(u @ freqs.T + phase) @ mix  # (n, m) sinusoids -> (n, D)


def _tangent(u: np.ndarray, freqs: np.ndarray, phase: np.ndarray, mix: np.ndarray) -> np.ndarray:
    s = -np.sin(u @ freqs.T + phase)  # (n, m)
    return np.einsum("nm,mk,md->nkd", s, freqs, mix)  # (n, k, D): ∂x/∂u_k


def make_manifold(dim: int = 64, intrinsic: int = 3, n_train: int = 6000, n_test: int = 1000,
                  off_distance: float = 1.0, hole: float = 0.5, noise: float = 0.02,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, X_test, y_test, kind_test): kind 0 normal, 1 off-manifold, 2 latent hole.

    ``n_test`` rows of each kind. ``off_distance`` (Euclidean) is in units of the typical
    per-dimension spread of the normal data, ``noise`` the isotropic jitter added to every point (same units).
    """
    rng = np.random.default_rng(seed)
    m = 8 * intrinsic
    freqs = rng.integers(1, 3, size=(m, intrinsic)) * rng.choice([-1, 1], size=(m, intrinsic))
    freqs = freqs * (rng.random((m, intrinsic)) < 0.7)  # each sinusoid sees a subset of the latents
    freqs[np.arange(m), rng.integers(0, intrinsic, m)] = rng.choice([1, 2], m)
    phase = rng.uniform(0, 2 * np.pi, m)
    mix = rng.standard_normal((m, dim)) / np.sqrt(m)

    def latent(n: int, in_hole: bool) -> np.ndarray:
        u = rng.uniform(0, 2 * np.pi, (n, intrinsic))
        width = 2 * np.pi - 2 * hole
        u[:, 0] = (np.pi + hole + rng.uniform(0, width, n)) % (2 * np.pi)  # outside the hole
        if in_hole:
            u[:, 0] = np.pi + rng.uniform(-0.8 * hole, 0.8 * hole, n)
        return u

    def points(u: np.ndarray) -> np.ndarray:
        return _embed(u, freqs, phase, mix)

    train = points(latent(n_train, False))
    scale = train.std(0).mean()
    jitter = lambda n: noise * scale * rng.standard_normal((n, dim))  # noqa: E731
    train = train + jitter(n_train)
    normal = points(latent(n_test, False)) + jitter(n_test)
    u = latent(n_test, False)
    base = points(u)
    tang = _tangent(u, freqs, phase, mix)  # (n, k, D)
    # a direction inside the linear span of the manifold (a direction out of that span would
    # be trivial for any Gaussian model), orthogonal to the local tangent space
    direction = rng.standard_normal((n_test, m)) @ mix
    for i in range(n_test):  # project out the tangent space
        q, _ = np.linalg.qr(tang[i].T)
        direction[i] -= q @ (q.T @ direction[i])
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    off = base + off_distance * scale * direction + jitter(n_test)
    holes = points(latent(n_test, True)) + jitter(n_test)
    test = np.concatenate([normal, off, holes])
    kind = np.repeat([0, 1, 2], n_test)
    return (train.astype(np.float32), test.astype(np.float32), (kind > 0).astype(int), kind)
