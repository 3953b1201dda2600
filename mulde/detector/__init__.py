"""Density models over video features: MULDE and the GMM / kNN / MSMA baselines."""

from mulde.detector.base import Detector
from mulde.detector.baselines import (
    GMMConfig,
    GMMDetector,
    KNNConfig,
    KNNDetector,
    MSMAConfig,
    MSMADetector,
)
from mulde.detector.mulde import MULDE, MULDEConfig, mulde_preset
from mulde.detector.network import NoiseConditionedMLP
from mulde.detector.registry import DETECTORS, load_detector, make_detector
from mulde.detector.toy import make_toy, run_toy, true_neg_log_q

__all__ = [
    "DETECTORS",
    "Detector",
    "GMMConfig",
    "GMMDetector",
    "KNNConfig",
    "KNNDetector",
    "MSMAConfig",
    "MSMADetector",
    "MULDE",
    "MULDEConfig",
    "NoiseConditionedMLP",
    "load_detector",
    "make_detector",
    "make_toy",
    "mulde_preset",
    "run_toy",
    "true_neg_log_q",
]
