"""What every detector shares: input checks, standardisation, the GMM, devices, model files.

Detectors follow the scikit-learn / PyOD shape: ``fit(X) -> self``, ``score_samples(X)``
(higher = more anomalous), ``save(path)`` and ``Cls.load(path)``. Model files are safetensors:
arrays as tensors plus one JSON header, so loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from mulde.atomic import atomic_path
from mulde.errors import InputError, ModelFileError, MuldeError

FORMAT_VERSION = 1
"""Version of the model-file layout; bump when a saved file can no longer be read as is."""

HEADER_KEY = "mulde"
STD_FLOOR = 1e-6
"""Relative floor on per-column std so constant columns standardise to 0, not NaN/inf."""
SPREAD_FLOOR = 0.1
"""Floor on a column's std as a fraction of the columns' RMS std (see :class:`Standardizer`)."""

C = TypeVar("C")


# ----------------------------------------------------------------------------- input checks


def check_features(X: Any, n_features: int | None = None, what: str = "X") -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 (n, d) array or raise one clear InputError."""
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a numeric 2-D array of features ({exc})") from None
    if arr.ndim != 2:
        raise InputError(
            f"{what} must be 2-D (samples, features), got shape {arr.shape}; "
            "reshape a single sample with X.reshape(1, -1)"
        )
    if arr.shape[0] == 0:
        raise InputError(f"{what} is empty (0 samples); pass at least one feature row")
    if arr.shape[1] == 0:
        raise InputError(f"{what} has 0 feature columns")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(
            f"{what} has {arr.shape[1]} features but the detector was fitted on "
            f"{n_features}; expected {n_features}, got {arr.shape[1]}"
        )
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(np.flatnonzero(~finite)[0])
        raise InputError(
            f"{what} has {bad} row(s) with NaN or inf values (first at row {first}); "
            "drop or impute them before fitting/scoring"
        )
    return np.ascontiguousarray(arr)


def check_min_samples(n: int, needed: int, why: str) -> None:
    """Raise InputError when fewer than ``needed`` samples are available."""
    if n < needed:
        raise InputError(f"need at least {needed} training samples for {why}, got {n}")


# ----------------------------------------------------------------------------- configs


def make_config(config_cls: type[C], config: C | None, overrides: Mapping[str, Any]) -> C:
    """Copy ``config`` (or the defaults) with ``overrides``; unknown names raise InputError."""
    base = config if config is not None else config_cls()
    if not isinstance(base, config_cls):
        raise InputError(f"config must be a {config_cls.__name__}, got {type(base).__name__}")
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(
            f"unknown parameter(s) {', '.join(unknown)} for {config_cls.__name__}; "
            f"valid: {', '.join(sorted(names))}"
        )
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(base, **fixed)


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON-friendly dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(config_cls: type[C], data: Mapping[str, Any]) -> C:
    """Rebuild a config saved by :func:`config_to_dict`; keys unknown to this version are dropped."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    kept = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return config_cls(**kept)


# ----------------------------------------------------------------------------- devices


@contextlib.contextmanager
def tf32_enabled(enabled: bool, device: torch.device) -> Iterator[None]:
    """Allow TF32 matmuls on CUDA inside the block only, restoring the global flags after.

    Uses the ``fp32_precision`` API where torch has it (2.9+), else the legacy flags.
    """
    if device.type != "cuda":
        yield
        return
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    if hasattr(matmul, "fp32_precision"):
        old = (matmul.fp32_precision, conv.conv.fp32_precision)
        matmul.fp32_precision = conv.conv.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.conv.fp32_precision = old
        return
    old = (matmul.allow_tf32, conv.allow_tf32)
    matmul.allow_tf32 = conv.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32, conv.allow_tf32 = old


# ----------------------------------------------------------------------------- standardisation


@dataclasses.dataclass
class Standardizer:
    """Component-wise standardisation with training statistics (floored std, never NaN).

    A column's std is floored at :data:`SPREAD_FLOOR` of the RMS std of all columns: a column
    that (nearly) never varies in training, such as a flow-grid cell where nothing moved, would
    otherwise turn any change at test time into 1e6-1e9 std, and that one column would decide
    the score (measured on Ped2's flow grid: 25% of its 208 cells are constant in training).
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> Standardizer:
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        floor = max(STD_FLOOR * max(float(np.abs(mean).max()), float(std.max()), 1.0),
                    SPREAD_FLOOR * float(np.sqrt(np.mean(std ** 2))))
        return cls(mean.astype(np.float32), np.maximum(std, floor).astype(np.float32))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.std).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- GMM


def fit_gmm(
    Z: np.ndarray,
    n_components: int,
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    seed: int = 0,
    max_iter: int = 200,
) -> GaussianMixture:
    """Fit a GaussianMixture by EM (float64) with a clear error for too few samples."""
    check_min_samples(len(Z), n_components, f"a GMM with {n_components} components")
    if covariance_type not in ("full", "tied", "diag", "spherical"):
        raise InputError(
            f"unknown covariance_type {covariance_type!r}; use full, tied, diag or spherical"
        )
    gmm = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        max_iter=max_iter,
        random_state=seed,
    )
    gmm.fit(np.asarray(Z, dtype=np.float64))
    return gmm


def gmm_nll(gmm: GaussianMixture, Z: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each row under the mixture (the anomaly score)."""
    return -gmm.score_samples(np.asarray(Z, dtype=np.float64))


GMM_ARRAYS = ("weights_", "means_", "covariances_", "precisions_cholesky_")


def gmm_to_tensors(gmm: GaussianMixture, prefix: str = "gmm.") -> dict[str, torch.Tensor]:
    """The fitted mixture's parameters as float64 tensors for a model file."""
    return {prefix + k.rstrip("_"): torch.from_numpy(np.asarray(getattr(gmm, k), np.float64))
            for k in GMM_ARRAYS}


def gmm_from_tensors(
    tensors: Mapping[str, torch.Tensor], covariance_type: str, prefix: str = "gmm."
) -> GaussianMixture:
    """Rebuild a fitted GaussianMixture from :func:`gmm_to_tensors` (scores reproduce exactly)."""
    arrays = {k: tensors[prefix + k.rstrip("_")].numpy() for k in GMM_ARRAYS}
    gmm = GaussianMixture(n_components=len(arrays["weights_"]), covariance_type=covariance_type)
    for k, v in arrays.items():
        setattr(gmm, k, v)
    chol = arrays["precisions_cholesky_"]
    if covariance_type == "full":
        gmm.precisions_ = np.einsum("kij,klj->kil", chol, chol)
    elif covariance_type == "tied":
        gmm.precisions_ = chol @ chol.T
    else:
        gmm.precisions_ = chol**2
    gmm.converged_ = True
    gmm.n_iter_ = 0
    gmm.lower_bound_ = float("nan")
    gmm.n_features_in_ = arrays["means_"].shape[1]
    return gmm


# ----------------------------------------------------------------------------- model files


def write_model_file(
    path: str | Path,
    kind: str,
    config: Any,
    tensors: Mapping[str, torch.Tensor | np.ndarray],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write tensors + a JSON header (kind, versions, config) as safetensors."""
    from safetensors.torch import save_file

    import mulde

    path = Path(path)
    header = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "package_version": mulde.__version__,
        "config": config_to_dict(config),
        **(extra or {}),
    }
    data = {
        k: (torch.from_numpy(np.asarray(v)) if isinstance(v, np.ndarray) else v)
        .detach().cpu().contiguous()
        for k, v in tensors.items()
    }
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata={HEADER_KEY: json.dumps(header)})
    return path


def read_model_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a model file; ModelFileError when missing, corrupt or incompatible."""
    header, _ = _open_model_file(path, with_tensors=False)
    return header


def read_model_file(path: str | Path, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Header and tensors of a model file that must hold a detector of ``kind``."""
    header, tensors = _open_model_file(path, with_tensors=True)
    if header.get("kind") != kind:
        raise ModelFileError(
            f"{path}: holds a {header.get('kind')!r} detector, not {kind!r}; "
            "open it with mulde.detector.load_detector"
        )
    return header, tensors


@contextlib.contextmanager
def model_file_errors(path: str | Path) -> Iterator[None]:
    """Turn missing keys or bad shapes met while rebuilding a model into one ModelFileError."""
    try:
        yield
    except MuldeError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ModelFileError(
            f"{path}: incomplete or inconsistent model file ({reason}); re-save or re-train it"
        ) from None


def _open_model_file(
    path: str | Path, with_tensors: bool
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}; check the path or train a model first")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            header = json.loads(meta[HEADER_KEY])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()} if with_tensors else {}
    except Exception as exc:  # safetensors raises several unrelated types for corrupt files
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        raise ModelFileError(
            f"{path}: not a readable mulde model file ({reason}); re-save or re-train it"
        ) from None
    if not isinstance(header, dict) or "kind" not in header:
        raise ModelFileError(f"{path}: model file header lacks 'kind'; re-save or re-train it")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format version {version} is not supported by this mulde "
            f"(reads version {FORMAT_VERSION}, file written by mulde "
            f"{header.get('package_version', '?')}); re-train the model with this version"
        )
    return header, tensors


# ----------------------------------------------------------------------------- base class


class Detector:
    """Base of all detectors: config handling and the fitted-state check."""

    kind: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        self.config = make_config(self.config_class, config, overrides)

    def _check_fitted(self) -> None:
        if getattr(self, "n_features_in_", None) is None:
            raise InputError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    def fit(self, X: Any, progress: bool = True) -> Detector:  # pragma: no cover - interface
        raise NotImplementedError

    def score_samples(self, X: Any) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
