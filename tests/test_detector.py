"""MULDE: exact loss gradients, density quality on the 2-D toy, manifold data, files, errors."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

from mulde.detector import MULDE, MULDEConfig, make_toy, mulde_preset, true_neg_log_q
from mulde.detector.dsm import MuldeLossGrad, mulde_loss_autograd
from mulde.detector.network import init_network
from mulde.errors import InputError, ModelFileError

torch.set_num_threads(1)  # small nets: one thread avoids stalls on a shared CPU

TOY = dict(hidden=(128, 128), batch_size=512, lr=1e-3, device="cpu", log_every=25)


@pytest.fixture(scope="module")
def toy():
    return make_toy(seed=0, n_train=4000, n_test_normal=2000, n_anomalies=2000)


@pytest.fixture(scope="module")
def toy_model(toy):
    train, _, _ = toy
    return MULDE(steps=1000, holdout=0.1, **TOY).fit(train, progress=False)


def _small_problem(beta, hidden=(7, 6), d=3, n=5, seed=1, conditioning="log_sigma"):
    net = init_network(d, hidden, 1, seed=0, conditioning=conditioning).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(n, d, generator=g, dtype=torch.float64)
    sigma = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.1
    return net, x, eps, sigma


# ----------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_gradient_term_matches_finite_differences(beta):
    """The loss uses ∇ₓ̃f; rebuild it from central differences of f and compare."""
    net, x, eps, sigma = _small_problem(beta)
    x_noisy = x + sigma[:, None] * eps
    h = 1e-6
    fd = torch.zeros_like(x)
    with torch.no_grad():
        for j in range(x.shape[1]):
            step = torch.zeros_like(x)
            step[:, j] = h
            fd[:, j] = (net(x_noisy + step, sigma) - net(x_noisy - step, sigma)) / (2 * h)
        expected = ((sigma[:, None] * fd - eps) ** 2).sum(1).mean()
        expected += beta * (net(x, sigma) ** 2).mean()
    got = MuldeLossGrad(net, beta)(x, eps, sigma)
    assert abs(got.item() - expected.item()) < 1e-7 * max(1.0, expected.item())
    assert abs(mulde_loss_autograd(net, x, eps, sigma, beta).item() - expected.item()) < 1e-7


@pytest.mark.parametrize("hidden", [(8,), (7, 6), (5, 6, 4)])
@pytest.mark.parametrize("beta", [0.0, 0.3])
@pytest.mark.parametrize("conditioning", ["log_sigma", "sigma"])
def test_analytic_parameter_gradients_equal_autograd(hidden, beta, conditioning):
    net, x, eps, sigma = _small_problem(beta, hidden, conditioning=conditioning)
    mulde_loss_autograd(net, x, eps, sigma, beta).backward()
    ref = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
           for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = None
    MuldeLossGrad(net, beta)(x, eps, sigma)
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, ref[name], rtol=1e-9, atol=1e-12, msg=name)


def test_analytic_parameter_gradient_matches_finite_difference_of_loss():
    """Independent of autograd: perturb single weights and difference the loss."""
    net, x, eps, sigma = _small_problem(0.2)
    loss_fn = MuldeLossGrad(net, 0.2)
    loss_fn(x, eps, sigma)
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    h = 1e-6
    for name, p in net.named_parameters():
        flat = p.data.view(-1)
        i = int(torch.argmax(grads[name].abs().view(-1)))
        old = flat[i].item()
        flat[i] = old + h
        up = loss_fn(x, eps, sigma).item()
        flat[i] = old - h
        down = loss_fn(x, eps, sigma).item()
        flat[i] = old
        assert abs((up - down) / (2 * h) - grads[name].view(-1)[i].item()) < 1e-6, name


@pytest.mark.parametrize("conditioning", ["log_sigma", "sigma"])
def test_forward_levels_shares_input_product_and_matches_forward(conditioning):
    net = init_network(4, (16, 16), 1, seed=3, conditioning=conditioning)
    x = torch.randn(6, 4)
    sigmas = torch.tensor([0.001, 0.2, 1.0])
    out = net.forward_levels(x, sigmas)
    assert out.shape == (6, 3)
    for i, s in enumerate(sigmas):
        torch.testing.assert_close(out[:, i], net(x, s.repeat(6)), rtol=1e-5, atol=1e-6)
    # the σ column really is log σ or σ: only the first layer's last weight column sees it
    first = net.first.weight[:, 4]
    z = net.first.bias + x[:1] @ net.first.weight[:, :4].t()
    c = torch.log(sigmas[1]) if conditioning == "log_sigma" else sigmas[1]
    want = net.head(torch.nn.functional.gelu(net.layers[0](torch.nn.functional.gelu(z + c * first))))
    torch.testing.assert_close(out[0, 1], want[0, 0], rtol=1e-5, atol=1e-6)


def test_level_grid_spacings():
    from mulde.detector.neural import level_grid

    lin = level_grid(1e-3, 1.0, 16, "linear")
    geo = level_grid(1e-3, 1.0, 16, "geometric")
    np.testing.assert_allclose(lin, np.linspace(1e-3, 1.0, 16))
    assert geo[0] == pytest.approx(1e-3) and geo[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(np.log(geo)), np.log(1000) / 15)
    # the paper's grid puts one level below 0.067; the log-uniform training draws put half below 0.032
    assert (lin < 0.067).sum() == 1 and (geo < 0.032).sum() == 8



def test_pairwise_scale_is_the_median_distance_between_distinct_rows():
    from scipy.spatial.distance import pdist

    from mulde.detector.neural import pairwise_scale

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 40))
    assert pairwise_scale(x, seed=0) == pytest.approx(np.median(pdist(x)), rel=1e-9)
    # standard normal rows are sqrt(2d) apart; a subsample estimates it; duplicates do not count
    big = rng.normal(size=(5000, 40))
    assert pairwise_scale(big, seed=1, n=800) == pytest.approx(np.sqrt(80), rel=0.03)
    assert pairwise_scale(np.repeat(x, 3, axis=0), seed=0, n=900) == pytest.approx(np.median(pdist(x)), rel=0.05)
    assert pairwise_scale(np.ones((50, 3)), seed=0) == 1.0


def test_sigma_high_auto_sets_the_grid_the_training_draws_and_survives_save_load(tmp_path):
    from mulde.detector.neural import pairwise_scale

    rng = np.random.default_rng(3)
    train = rng.normal(size=(1500, 24)) * rng.uniform(0.1, 10, size=24)  # columns of different units
    m = MULDE(steps=20, sigma_high="auto", **TOY).fit(train, progress=False)
    expected = pairwise_scale(m.standardizer_.transform(train.astype(np.float32)), seed=0)
    assert m.sigma_high_ == pytest.approx(expected) and m.sigma_high_ == pytest.approx(np.sqrt(48), rel=0.05)
    assert m.sigmas_[-1] == pytest.approx(m.sigma_high_) and m.sigmas_[0] == pytest.approx(1e-3)
    assert m._train_settings(len(train)).sigma_high == m.sigma_high_
    back = MULDE.load(m.save(tmp_path / "auto.safetensors"))
    assert back.config.sigma_high == "auto" and back.sigma_high_ == pytest.approx(m.sigma_high_)
    np.testing.assert_array_equal(back.score_samples(train[:20]), m.score_samples(train[:20]))
    fixed = MULDE(steps=5, **TOY).fit(train[:300], progress=False)
    assert fixed.sigma_high_ == 1.0 and fixed.sigmas_[-1] == pytest.approx(1.0)
    with pytest.raises(InputError, match="sigma_high must be a number or 'auto'"):
        MULDEConfig(sigma_high="max")

def test_options_fit_save_load_and_old_files_keep_log_sigma(tmp_path, toy):
    train, test, _ = toy
    m = MULDE(steps=30, level_spacing="geometric", conditioning="sigma", readout="mean", **TOY).fit(
        train[:800], progress=False)
    assert m.net_.conditioning == "sigma"
    # the mean readout: levels standardised on the training rows, averaged
    levels = m.log_density(test[:20])
    z = (levels - m.level_mean_) / m.level_std_
    np.testing.assert_allclose(m.score_samples(test[:20]), z.mean(axis=1))
    np.testing.assert_allclose(m.level_mean_, m.log_density(train[:800]).mean(0), rtol=1e-10)
    np.testing.assert_allclose(m.sigmas_, np.geomspace(1e-3, 1.0, 16))
    path = m.save(tmp_path / "opt.safetensors")
    back = MULDE.load(path)
    assert back.config.conditioning == "sigma" and back.net_.conditioning == "sigma"
    assert back.config.readout == "mean"
    np.testing.assert_array_equal(back.score_samples(test[:20]), m.score_samples(test[:20]))
    # a file from before the options existed has neither key: it was trained on log σ
    old = MULDE(steps=5, **TOY).fit(train[:300], progress=False)
    path = old.save(tmp_path / "old.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["mulde"])
    for key in ("conditioning", "level_spacing", "readout"):
        header["config"].pop(key)
    _rewrite_header(path, config=header["config"])
    back = MULDE.load(path)
    assert back.net_.conditioning == "log_sigma" and back.config.level_spacing == "linear"
    assert back.config.readout == "gmm"
    np.testing.assert_array_equal(back.score_samples(test[:20]), old.score_samples(test[:20]))


# ----------------------------------------------------------------------------- the toy


def test_toy_single_sigma_separates_and_tracks_true_density(toy, toy_model):
    """f(·, σ≈0.33) alone detects the toy anomalies and ranks like the true −log q_σ."""
    _, test, y = toy
    sigma = 0.33
    f = toy_model.log_density(test, sigmas=[sigma])[:, 0]
    auc = roc_auc_score(y, f)
    truth = true_neg_log_q(test, sigma * toy_model.standardizer_.std)
    rho = spearmanr(f, truth).statistic
    assert auc >= 0.99, auc
    assert rho >= 0.9, rho


def test_fitted_attributes_and_shapes(toy, toy_model):
    _, test, _ = toy
    m = toy_model
    assert m.n_features_in_ == 2
    np.testing.assert_allclose(m.sigmas_, np.linspace(1e-3, 1.0, 16))
    assert len(m.history_) == 1000 and np.isfinite(m.history_).all()
    assert m.holdout_loss_ is not None and np.isfinite(m.holdout_loss_)
    assert m.log_density(test[:7]).shape == (7, 16)
    scores = m.score_samples(test[:7])
    assert scores.shape == (7,) and np.isfinite(scores).all()
    agg = m.score_aggregates(test[:7])
    assert set(agg) == {"max", "mean", "median"}
    assert all(v.shape == (7,) for v in agg.values())


def test_dsm_loss_sees_rows_off_the_training_distribution(toy, toy_model):
    """The training objective on given rows: reproducible, the training loss's level on fresh
    normal rows, far above it on anomalies and shifted rows, and scoring is unchanged afterwards."""
    train, test, y = toy
    m = toy_model
    before = m.score_samples(test[:50])
    normal = m.dsm_loss(test[y == 0], draws=2)
    assert normal == m.dsm_loss(test[y == 0], draws=2)
    assert abs(normal - m.dsm_loss(train, draws=2)) < 0.1 * normal
    assert m.dsm_loss(test[y == 1], draws=2) > 2 * normal
    assert m.dsm_loss(test[y == 0] + 3 * train.std(axis=0)) > 10 * normal
    np.testing.assert_array_equal(m.score_samples(test[:50]), before)
    assert all(not p.requires_grad and p.grad is None for p in m.net_.parameters())
    with pytest.raises(InputError, match="draws"):
        m.dsm_loss(test, draws=0)
    with pytest.raises(InputError):
        m.dsm_loss(test[:, :1])


@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_training_decreases_loss(toy, beta):
    """Same rows, same noise, σ = 0.5: the Eq. 6 loss falls well below the untrained one.

    (The raw per-step history is dominated by small σ, where the loss floor is ≈ d.)
    """
    train, _, _ = toy
    m = MULDE(beta=beta, steps=300, **TOY).fit(train, progress=False)
    x = torch.from_numpy(m.standardizer_.transform(train[:1000]))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((len(x),), 0.5)
    untrained = init_network(2, TOY["hidden"], 1, seed=m.config.seed)
    trained = copy.deepcopy(m.net_).requires_grad_(True)
    before = MuldeLossGrad(untrained, beta)(x, eps, sigma).item()
    after = MuldeLossGrad(trained, beta)(x, eps, sigma).item()
    assert after < 0.7 * before, (before, after)
    assert len(m.history_) == 300 and np.isfinite(m.history_).all()


def test_seeded_fit_is_deterministic_on_cpu(toy):
    train, test, _ = toy
    a = MULDE(steps=20, seed=5, **TOY).fit(train[:1000], progress=False).score_samples(test[:50])
    b = MULDE(steps=20, seed=5, **TOY).fit(train[:1000], progress=False).score_samples(test[:50])
    c = MULDE(steps=20, seed=6, **TOY).fit(train[:1000], progress=False).score_samples(test[:50])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("schedule,decay", [("constant", 0.0), ("cosine", 0.0), ("cosine", 0.9)])
def test_lr_schedule_and_weight_average_follow_their_formulas(schedule, decay):
    """A constant unit gradient under Adam(β=0) moves p by -lr_t per step: the end point is the
    sum of the schedule, and with ema_decay the warmed-up moving average of that path."""
    import math

    from mulde.detector.training import TrainSettings, train_dsm

    p = torch.nn.Parameter(torch.zeros(3))

    def step(x, eps, sigma):
        p.grad = torch.ones(3)
        return torch.tensor(1.0)

    steps, lr = 40, 0.1
    settings = TrainSettings(steps=steps, batch_size=4, lr=lr, adam_betas=(0.0, 0.0), sigma_low=0.1,
                             sigma_high=1.0, lr_schedule=schedule, ema_decay=decay)
    train_dsm([p], step, torch.zeros(8, 2), settings, torch.Generator().manual_seed(0), progress=False)
    rates = [lr * (0.5 * (1 + math.cos(math.pi * t / steps)) if schedule == "cosine" else 1.0)
             for t in range(steps)]
    path = -np.cumsum(rates)
    expected = path[-1]
    if decay:
        expected = 0.0
        for t, value in enumerate(path):
            expected += max(1 - decay, 9 / (t + 10)) * (value - expected)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-5)
    if schedule == "cosine":
        assert rates[-1] < 0.01 * lr and abs(expected) < lr * steps * 0.6  # annealed to ~0


def test_constant_columns_do_not_produce_nan(toy):
    train, test, _ = toy
    X = np.hstack([train[:500], np.full((500, 1), 3.0, np.float32)])
    m = MULDE(steps=10, **TOY).fit(X, progress=False)
    Xt = np.hstack([test[:20], np.full((20, 1), 3.0, np.float32)])
    assert np.isfinite(m.score_samples(Xt)).all()


# ----------------------------------------------------------------------------- manifold data


def test_manifold_mulde_beats_gmm_on_curved_data():
    """Noisy circle in a random 2-D plane of R^32; anomalies sit just inside the circle."""
    rng = np.random.default_rng(0)
    dim = 32
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))

    def embed(radius, n):
        angle = rng.uniform(0, 2 * np.pi, n)
        r = radius + 0.03 * rng.standard_normal(n)
        plane = np.stack([r * np.cos(angle), r * np.sin(angle)], 1)
        x = np.zeros((n, dim))
        x[:, :2] = plane
        x[:, 2:] = 0.01 * rng.standard_normal((n, dim - 2))
        return (x @ basis.T).astype(np.float32)

    train = embed(1.0, 3000)
    test = np.concatenate([embed(1.0, 500), embed(0.75, 500)])
    y = np.r_[np.zeros(500), np.ones(500)]
    m = MULDE(hidden=(128, 128), steps=400, batch_size=512, lr=1e-3, device="cpu")
    auc_mulde = roc_auc_score(y, m.fit(train, progress=False).score_samples(test))
    gmm = GaussianMixture(5, covariance_type="full", random_state=0).fit(train)
    auc_gmm = roc_auc_score(y, -gmm.score_samples(test))
    print(f"manifold AUC: MULDE {auc_mulde:.3f}  GMM {auc_gmm:.3f}  margin {auc_mulde - auc_gmm:+.3f}")
    assert auc_mulde > auc_gmm + 0.05, (auc_mulde, auc_gmm)


# ----------------------------------------------------------------------------- files


def test_save_load_round_trip_reproduces_scores(tmp_path, toy, toy_model):
    _, test, _ = toy
    path = toy_model.save(tmp_path / "m.safetensors")
    loaded = MULDE.load(path)
    np.testing.assert_array_equal(loaded.score_samples(test), toy_model.score_samples(test))
    np.testing.assert_array_equal(loaded.log_density(test[:9]), toy_model.log_density(test[:9]))
    assert loaded.config == toy_model.config
    assert loaded.history_ == pytest.approx(toy_model.history_)
    with safe_open(str(path), framework="pt") as fh:
        header = json.loads(fh.metadata()["mulde"])
    assert header["kind"] == "mulde" and header["n_features"] == 2
    assert "package_version" in header and header["config"]["beta"] == 0.1


def _rewrite_header(path, drop=(), **changes):
    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if k not in drop}
        header = json.loads(fh.metadata()["mulde"])
    header.update(changes)
    save_file(tensors, str(path), metadata={"mulde": json.dumps(header)})


def test_wrong_format_version_and_corrupt_files_fail_clearly(tmp_path, toy_model):
    path = toy_model.save(tmp_path / "m.safetensors")
    _rewrite_header(path, format_version=999)
    with pytest.raises(ModelFileError, match="format version 999"):
        MULDE.load(path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01 this is not a model")
    with pytest.raises(ModelFileError, match="not a readable mulde model file"):
        MULDE.load(bad)
    with pytest.raises(ModelFileError, match="not found"):
        MULDE.load(tmp_path / "missing.safetensors")
    other = toy_model.save(tmp_path / "k.safetensors")
    _rewrite_header(other, kind="knn")
    with pytest.raises(ModelFileError, match="'knn'"):
        MULDE.load(other)
    partial_file = toy_model.save(tmp_path / "p.safetensors")
    _rewrite_header(partial_file, drop=("sigmas",))
    with pytest.raises(ModelFileError, match="incomplete"):
        MULDE.load(partial_file)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors(toy_model):
    m = MULDE(steps=1, **TOY)
    with pytest.raises(InputError, match="empty"):
        m.fit(np.zeros((0, 2)))
    with pytest.raises(InputError, match="2-D"):
        m.fit(np.zeros(10))
    X = np.random.default_rng(0).standard_normal((20, 2))
    X[[3, 7], 1] = np.nan
    X[9, 0] = np.inf
    with pytest.raises(InputError, match="3 row"):
        m.fit(X)
    with pytest.raises(InputError, match="at least 3"):
        MULDE(steps=1, gmm_components=3, **TOY).fit(np.ones((2, 2)))
    with pytest.raises(InputError, match="expected 2, got 5"):
        toy_model.score_samples(np.zeros((3, 5)))
    with pytest.raises(InputError, match="not fitted"):
        MULDE().score_samples(np.zeros((3, 2)))
    with pytest.raises(InputError, match="unknown parameter"):
        MULDE(n_layers=3)
    with pytest.raises(InputError, match="sigma_low"):
        MULDEConfig(sigma_low=2.0)
    with pytest.raises(InputError, match="level_spacing must be one of linear, geometric"):
        MULDEConfig(level_spacing="log")
    with pytest.raises(InputError, match="conditioning must be one of log_sigma, sigma"):
        MULDE(conditioning="sqrt")
    with pytest.raises(InputError, match=r"ema_decay must be in \[0, 1\)"):
        MULDE(ema_decay=1.0)
    with pytest.raises(InputError, match="readout must be one of gmm, mean, max, median"):
        MULDE(readout="nll")
    with pytest.raises(InputError, match="lr_schedule must be one of constant, cosine"):
        MULDEConfig(lr_schedule="step")
    with pytest.raises(InputError, match="unknown MULDE preset"):
        mulde_preset("huge")
    assert issubclass(InputError, ValueError)


def test_config_defaults_are_the_papers():
    c = MULDEConfig()
    assert c.hidden == (4096, 4096) and c.beta == 0.1 and c.n_levels == 16
    assert (c.sigma_low, c.sigma_high, c.lr, c.adam_betas, c.batch_size) == (
        1e-3, 1.0, 1e-4, (0.5, 0.9), 2048)
    assert (c.lr_schedule, c.ema_decay) == ("constant", 0.0)  # the paper: fixed lr, last weights
    assert c.readout == "gmm"  # the paper: GMM negative log-likelihood of the L-vector
    assert mulde_preset("cpu").hidden == (512, 512)


def test_bf16_autocast_path_runs_and_tracks_fp32_loss():
    """The amp path (autograd under bf16 autocast, used on CUDA) checked on CPU's autocast."""
    from functools import partial

    from mulde.detector.dsm import autograd_step

    net = init_network(4, (32, 32), 1, seed=0)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(256, 4, generator=g), torch.randn(256, 4, generator=g)
    sigma = torch.rand(256, generator=g) * 0.9 + 0.1
    loss_fn = partial(mulde_loss_autograd, beta=0.1)
    fp32 = autograd_step(net, loss_fn, autocast=False)(x, eps, sigma).item()
    bf16 = autograd_step(net, loss_fn, autocast=True)(x, eps, sigma).item()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert abs(bf16 - fp32) < 0.05 * fp32, (fp32, bf16)


def test_tf32_switch_is_scoped_and_restored():
    from mulde.detector.base import tf32_enabled

    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
    with tf32_enabled(True, torch.device("cuda")):
        now = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
        assert now in ("tf32", True)
    after = matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32
    assert after == before


def test_a_column_constant_in_training_cannot_decide_the_score():
    # Flow-grid cells where nothing moved in training have std 0; a change there at test time
    # must stay within a few std of the columns' typical spread, not 1e6 std.
    from mulde.detector.base import SPREAD_FLOOR, Standardizer

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(0, 2.0, 500), rng.normal(5, 1.0, 500), np.zeros(500)])
    st = Standardizer.fit(X)
    np.testing.assert_allclose(st.std[:2], X[:, :2].std(0), rtol=1e-5)  # ordinary columns: their own std
    rms = np.sqrt(np.mean(X.std(0) ** 2))
    assert st.std[2] == pytest.approx(SPREAD_FLOOR * rms, rel=1e-5)
    z = st.transform(np.array([[0.0, 5.0, 1.0]], np.float32))
    assert abs(z[0, 2]) == pytest.approx(1.0 / (SPREAD_FLOOR * rms), rel=1e-4) and abs(z[0, 2]) < 10
