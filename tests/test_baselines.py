"""Baselines (GMM, kNN, MSMA) and the detector registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mulde.detector import (
    DETECTORS,
    MULDE,
    GMMDetector,
    KNNDetector,
    MSMADetector,
    load_detector,
    make_detector,
    make_toy,
)
from mulde.detector.toy import ANOMALY_CENTRES, sample_blobs
from mulde.errors import InputError, ModelFileError

torch.set_num_threads(1)  # small nets: one thread avoids stalls on a shared CPU


@pytest.fixture(scope="module")
def toy():
    return make_toy(seed=1, n_train=3000, n_test_normal=1000, n_anomalies=1000)


@pytest.fixture(scope="module")
def msma(toy):
    return MSMADetector(hidden=(128, 128), steps=600, batch_size=512, lr=1e-3,
                        device="cpu").fit(toy[0], progress=False)


def test_gmm_fits_scores_and_separates_toy(toy):
    train, test, y = toy
    det = GMMDetector(n_components=4).fit(train)
    scores = det.score_samples(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert roc_auc_score(y, scores) > 0.95


def test_knn_k1_equals_brute_force_numpy(toy):
    train, test, _ = toy
    det = KNNDetector(k=1, query_chunk=97, train_chunk=500, device="cpu").fit(train[:1500])
    got = det.score_samples(test[:300])
    a = det.standardizer_.transform(test[:300]).astype(np.float64)
    b = det.standardizer_.transform(train[:1500]).astype(np.float64)
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(got, dist.min(1), rtol=1e-5, atol=1e-6)


def test_knn_kth_neighbour_and_self_distance(toy):
    train, test, _ = toy
    X = train[:400]
    det = KNNDetector(k=3, train_chunk=64, device="cpu").fit(X)
    a = det.standardizer_.transform(test[:50]).astype(np.float64)
    b = det.standardizer_.transform(X).astype(np.float64)
    dist = np.sort(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)), axis=1)
    np.testing.assert_allclose(det.score_samples(test[:50]), dist[:, 2], rtol=1e-5, atol=1e-6)
    assert np.allclose(KNNDetector(k=1, device="cpu").fit(X).score_samples(X), 0.0, atol=1e-6)


def test_msma_far_anomalies_score_higher(toy, msma):
    """Points around the outer centres (±6.8, 0), (0, ±6.8) lie far from all normal data."""
    _, test, y = toy
    far = sample_blobs(ANOMALY_CENTRES[5:], 500, np.random.default_rng(3))
    normal = test[y == 0][:500]
    s_far, s_normal = msma.score_samples(far), msma.score_samples(normal)
    auc = roc_auc_score(np.r_[np.zeros(500), np.ones(500)], np.r_[s_normal, s_far])
    assert auc > 0.95, auc
    norms_far = msma.log_density(far).mean(0)
    norms_normal = msma.log_density(normal).mean(0)
    assert (norms_far > norms_normal).all()  # larger score norms at every level
    assert msma.log_density(normal).shape == (500, 16)


@pytest.mark.parametrize("name", ["gmm", "knn", "msma"])
def test_baselines_round_trip_exactly(tmp_path, toy, msma, name):
    train, test, _ = toy
    det = msma if name == "msma" else make_detector(name).fit(train[:800])
    path = det.save(tmp_path / f"{name}.safetensors")
    for loaded in (type(det).load(path), load_detector(path)):
        assert type(loaded) is type(det)
        np.testing.assert_array_equal(loaded.score_samples(test), det.score_samples(test))


def test_registry_names_and_errors(tmp_path, toy):
    assert set(DETECTORS) == {"mulde", "gmm", "knn", "msma"}
    assert isinstance(make_detector("mulde", steps=3), MULDE)
    assert make_detector("knn", k=4).config.k == 4
    with pytest.raises(InputError, match="choose from mulde, gmm, knn, msma"):
        make_detector("isolation_forest")
    with pytest.raises(InputError, match="unknown parameter"):
        make_detector("gmm", k=3)
    with pytest.raises(ModelFileError, match="not found"):
        load_detector(tmp_path / "nope.safetensors")
    det = GMMDetector(n_components=2).fit(toy[0][:200])
    with pytest.raises(ModelFileError, match="'gmm'"):
        KNNDetector.load(det.save(tmp_path / "g.safetensors"))


def test_baseline_bad_inputs(toy):
    train, _, _ = toy
    with pytest.raises(InputError, match="at least 5"):
        KNNDetector(k=5).fit(train[:3])
    with pytest.raises(InputError, match="at least 5"):
        GMMDetector(n_components=5).fit(train[:3])
    knn = KNNDetector(device="cpu").fit(train[:50])
    with pytest.raises(InputError, match="expected 2, got 3"):
        knn.score_samples(np.zeros((4, 3)))
    with pytest.raises(InputError, match="NaN"):
        GMMDetector().fit(np.full((10, 2), np.nan))
    with pytest.raises(InputError, match="not fitted"):
        GMMDetector().score_samples(train[:3])
