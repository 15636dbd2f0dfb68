"""The parameterized classifier ensemble as a ratio model: accuracy against the oracle, κ modes, the fast
path, θ gradients and range checks, persistence, zfit integration and the off-grid fit."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import zfit

from gbi_zfit.data.convert import feature_space, to_zfit_data
from gbi_zfit.errors import ConfigError, InputError, ModelFileError, ParameterRangeError
from gbi_zfit.inference import SignalFitter
from gbi_zfit.inference.engine import RatioNLL
from gbi_zfit.models.classifier import ClassifierConfig, ClassifierEnsemble, train_classifier_ensemble
from gbi_zfit.pdf.ratio import RatioPDF, log_mixture_ratio

# A local training grid around the off-grid test point (325, 175), 50 GeV steps as in the paper; the true
# SR background (not the CFM) so that only the classifier is tested here.
LOCAL_GRID = {"mx_grid": (250.0, 300.0, 350.0, 400.0), "my_grid": (100.0, 150.0, 200.0, 250.0)}
OFF_GRID = (325.0, 175.0)


@pytest.fixture(scope="module")
def ensemble(sim):
    background = sim.sample_background_sr(24_000, seed=31).features("paws")
    cfg = ClassifierConfig.preset(
        "test",
        **LOCAL_GRID,
        hidden=(64, 64, 32),
        n_members=3,
        n_signal_per_point=1500,
        n_background=None,
        epochs=20,
        patience=3,
        batch_size=512,
        learning_rate=2e-3,
        kappa_step=25.0,
    )
    reference = sim.sample_background_sr(60_000, seed=35).features("paws")  # independent of training
    return train_classifier_ensemble(background, cfg, seed=1, kappa_reference=reference)


@pytest.fixture(scope="module")
def background_test(sim):
    """Independent SR background (never seen in training or κ calibration)."""
    return sim.sample_background_sr(100_000, seed=32).features("paws")


@pytest.fixture(scope="module")
def mixed_events(sim, background_test):
    """Background plus signal at the off-grid point: the events a fit sees."""
    sig = sim.sample_signal(1000, *OFF_GRID, seed=33).features("paws")
    return np.concatenate([background_test[:4000], sig])


# ----------------------------------------------------------------------------------------------------
# configuration


def test_config_presets_and_validation():
    paper = ClassifierConfig.preset("paper")
    assert paper.hidden == (256, 128, 64)
    assert paper.n_members == 10
    assert paper.grid.shape == (144, 2)
    assert paper.theta_bounds == ((50.0, 600.0), (50.0, 600.0))
    quick = ClassifierConfig.preset("quick")
    assert ClassifierConfig.from_dict(quick.to_dict()) == quick
    standard = ClassifierConfig.preset("standard")
    assert standard.hidden == quick.hidden
    assert (standard.epochs, standard.patience, standard.n_background) == (40, 8, 160_000)
    assert standard.n_signal_per_point == 2500
    assert quick.kappa_mode == standard.kappa_mode == "sampled"
    with pytest.raises(ConfigError, match="kappa_mode"):
        ClassifierConfig(kappa_mode="learned")
    with pytest.raises(ConfigError, match="kappa_step"):
        ClassifierConfig(kappa_step=0.0)
    with pytest.raises(ConfigError, match="kappa_reference_size"):
        ClassifierConfig(kappa_reference_size=1)
    with pytest.raises(ConfigError, match="mx_grid"):
        ClassifierConfig(mx_grid=(10.0, 100.0))
    with pytest.raises(ConfigError, match="unknown preset"):
        ClassifierConfig.preset("big")


# ----------------------------------------------------------------------------------------------------
# accuracy against the oracle


@pytest.mark.parametrize("theta", [(300.0, 150.0), OFF_GRID])
def test_log_ratio_correlates_with_oracle(ensemble, sim, background_test, theta):
    """Measured Pearson r = 0.977 (on the grid) and 0.975 (off) for this small ensemble; require 0.9."""
    sig = sim.sample_signal(1000, *theta, seed=34).features("paws")
    x = np.concatenate([background_test[:4000], sig])
    learned = ensemble.log_ratio_numpy(x, *theta)
    oracle = sim.log_ratio(x, *theta)
    assert learned.shape == (len(x),)
    assert np.corrcoef(learned, oracle)[0, 1] > 0.9


def test_kappa_modes(ensemble, background_test):
    meta = ensemble.metadata
    n_b = 24_000  # all of it: the κ reference was given
    n_s = 1500 * 16
    assert ensemble.log_kappa_fixed == pytest.approx(np.log(n_b / n_s))  # N_B / N_S of the balanced set
    assert meta["kappa_fixed_per_member"] == pytest.approx([n_b / n_s] * 3)
    assert ensemble.kappa_mode == "sampled"  # the default
    fixed = ensemble.with_kappa("fixed")
    assert ensemble.kappa_mode == "sampled"  # with_kappa returns a copy
    assert fixed.log_kappa(300.0, 150.0) == ensemble.log_kappa_fixed
    surface = ensemble.kappa_surface
    assert surface.n_reference == 60_000
    assert surface.mc_error < 0.07  # heavy tails: sd(Λ)/E[Λ] ≈ 12 here
    assert len(surface.mx_nodes) == len(surface.my_nodes) == 7  # 250 … 400 every 25 GeV
    assert surface.n_check == 36
    assert surface.check_rms < 0.02
    # on an independent sample (100k events) E_B[Λ] = 1 holds to the Monte Carlo accuracy of the 60k
    # reference and of this heavy-tailed mean (3σ); the fixed κ of this small ensemble gives 0.62–0.76
    for theta in [(300.0, 150.0), OFF_GRID, (400.0, 100.0)]:
        lam = np.exp(ensemble.log_ratio_numpy(background_test, *theta))
        error = np.hypot(surface.mc_error, lam.std() / lam.mean() / np.sqrt(len(lam)))
        assert abs(np.log(lam.mean())) < 3 * error, (theta, lam.mean(), error)
        assert np.mean(np.exp(fixed.log_ratio_numpy(background_test, *theta))) < 0.85
    # κ(θ) is smooth between grid points
    grid = np.linspace(250.0, 400.0, 31)
    lk = np.array([ensemble.log_kappa(m, 175.0) for m in grid])
    assert np.abs(np.diff(lk, 2)).max() < 0.05
    with pytest.raises(InputError, match="kappa_mode"):
        ensemble.with_kappa("learned")


# ----------------------------------------------------------------------------------------------------
# fast path, gradients, ranges


@pytest.mark.parametrize("fast_dtype", ["float64", "float32"])
@pytest.mark.parametrize("kappa", ["fixed", "sampled"])
def test_fast_path_equals_exact_path(ensemble, mixed_events, fast_dtype, kappa):
    model = ensemble.with_kappa(kappa)
    model.fast_dtype = fast_dtype
    model.chunk_size = 1500  # several chunks, the last one padded
    x = tf.constant(mixed_events)
    mx, my = tf.constant(OFF_GRID[0], tf.float64), tf.constant(OFF_GRID[1], tf.float64)
    aux = model.precompute(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([mx, my])
        exact = model.log_ratio(x, mx, my)
        fast = model.log_ratio_precomputed(aux, mx, my)
        mu = tf.constant(0.05, tf.float64)
        nll_exact = -tf.reduce_sum(log_mixture_ratio(exact, mu))
        nll_fast = -tf.reduce_sum(log_mixture_ratio(fast, mu))
    scale = np.abs(exact.numpy()).max()
    g_exact = np.array(tape.gradient(nll_exact, [mx, my]))
    g_fast = np.array(tape.gradient(nll_fast, [mx, my]))
    assert fast.dtype == tf.float64
    if fast_dtype == "float64":  # same arithmetic: equal to rounding
        np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=1e-12, atol=1e-12 * scale)
        np.testing.assert_allclose(g_fast, g_exact, rtol=1e-10)
    else:  # float32 network, float64 combination: 1e-6 relative to the scale of log Λ
        np.testing.assert_allclose(fast.numpy(), exact.numpy(), rtol=0, atol=1e-6 * scale)
        assert float(nll_fast) == pytest.approx(float(nll_exact), rel=1e-6)
        np.testing.assert_allclose(g_fast, g_exact, rtol=1e-4)


def test_theta_gradient_exists_and_matches_finite_differences(ensemble, mixed_events):
    x = tf.constant(mixed_events[:2000])
    mx, my = tf.Variable(OFF_GRID[0], dtype=tf.float64), tf.Variable(OFF_GRID[1], dtype=tf.float64)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(ensemble.log_ratio(x, mx, my))
    grad = np.array(tape.gradient(total, [mx, my]))
    assert np.isfinite(grad).all()
    assert np.abs(grad).max() > 0

    def f(a, b):
        return float(tf.reduce_sum(ensemble.log_ratio(x, a, b)))

    h = 1e-4  # small: the ReLU kinks make the sum only piecewise smooth
    numeric = [(f(325 + h, 175) - f(325 - h, 175)) / (2 * h), (f(325, 175 + h) - f(325, 175 - h)) / (2 * h)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-4)
    # second derivatives (exact path, plain autodiff) exist too
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            total = tf.reduce_sum(ensemble.log_ratio(x, mx, my))
        g = inner.gradient(total, mx)
    assert np.isfinite(float(outer.gradient(g, mx)))


def test_engine_gradient_through_fast_path(ensemble, mixed_events):
    """The fit engine's exact gradient (fast path): finite differences in float64, float32 agrees."""
    exact = RatioNLL(ensemble.with_kappa("fixed"), mixed_events)
    exact.ratio_model.fast_dtype = "float64"
    p = np.array([0.05, *OFF_GRID])
    value, grad = exact.value_and_grad(p)
    assert np.isfinite(value)
    for i, h in enumerate((1e-6, 1e-4, 1e-4)):
        up, dn = p.copy(), p.copy()
        up[i] += h
        dn[i] -= h
        assert grad[i] == pytest.approx((exact(up) - exact(dn)) / (2 * h), rel=1e-4, abs=1e-4)
    value32, grad32 = RatioNLL(ensemble.with_kappa("fixed"), mixed_events).value_and_grad(p)
    assert value32 == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(grad32, grad, rtol=1e-4)


def test_theta_out_of_range_raises(ensemble, mixed_events):
    assert ensemble.theta_bounds == ((250.0, 400.0), (100.0, 250.0))
    x = mixed_events[:10]
    with pytest.raises(ParameterRangeError, match="mX = 450"):
        ensemble.log_ratio_numpy(x, 450.0, 150.0)
    with pytest.raises(ParameterRangeError, match="mY = 50"):
        ensemble.log_ratio(tf.constant(x), 300.0, 50.0)  # eager call: checked at the boundary
    with pytest.raises(ParameterRangeError):
        ensemble.log_ratio_precomputed(ensemble.precompute(tf.constant(x)), 300.0, np.nan)
    with pytest.raises(ParameterRangeError):
        RatioNLL(ensemble, x).log_ratio(300.0, 700.0)
    with pytest.raises(ParameterRangeError):
        ensemble.predict(x, 200.0, 150.0)


# ----------------------------------------------------------------------------------------------------
# persistence and zfit


@pytest.mark.parametrize("keras_members", [True, False])
def test_save_load_round_trip(ensemble, mixed_events, tmp_path, keras_members):
    path = ensemble.save(tmp_path / "cls", keras_members=keras_members)
    loaded = ClassifierEnsemble.load(path)
    assert loaded.kappa_mode == "sampled"
    assert loaded.theta_bounds == ensemble.theta_bounds
    assert loaded.metadata["config"] == ensemble.metadata["config"]
    for mode in ("fixed", "sampled"):
        np.testing.assert_allclose(
            loaded.with_kappa(mode).log_ratio_numpy(mixed_events, *OFF_GRID),
            ensemble.with_kappa(mode).log_ratio_numpy(mixed_events, *OFF_GRID),
            rtol=1e-12,
            atol=1e-12,
        )
    with pytest.raises(ModelFileError, match="feature mismatch"):
        ClassifierEnsemble.load(path, feature_set="ranode")
    member = next(path.glob("member_00.*"))
    raw = bytearray(member.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    member.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match=r"checksum|bytes"):
        ClassifierEnsemble.load(path)


def test_ratio_pdf_uses_ensemble_unchanged(ensemble, mixed_events):
    """zfit's RatioPDF / UnbinnedNLL evaluate the ensemble inside their graphs and agree with the engine."""
    obs = feature_space("paws")
    mu = zfit.Parameter("mu_cls", 0.05, 0.0, 1.0)
    mx = zfit.Parameter("mx_cls", OFF_GRID[0], 250.0, 400.0)
    my = zfit.Parameter("my_cls", OFF_GRID[1], 100.0, 250.0)
    pdf = RatioPDF(obs, ensemble, mu, mx, my, reference=mixed_events[:3000])
    data = to_zfit_data(mixed_events, obs)
    log_pdf = pdf.log_pdf(data).numpy()
    mu64 = tf.constant(0.05, tf.float64)
    expected = log_mixture_ratio(ensemble.log_ratio(tf.constant(mixed_events), *OFF_GRID), mu64).numpy()
    np.testing.assert_allclose(log_pdf, expected, rtol=1e-10)
    loss = zfit.loss.UnbinnedNLL(pdf, data)
    engine = RatioNLL(ensemble, mixed_events, penalty_threshold=None)
    assert float(loss.value()) == pytest.approx(engine([0.05, *OFF_GRID]), rel=1e-6)
    assert pdf.sample(50).value().shape == (50, 6)


# ----------------------------------------------------------------------------------------------------
# off-grid fit


def _offgrid_fit(model, sim, *, s_over_sqrt_b, n_background, seed, start, hesse=False):
    bkg = sim.sample_background_sr(n_background, seed=seed).features("paws")
    n_s = int(round(s_over_sqrt_b * np.sqrt(n_background)))
    sig = sim.sample_signal(n_s, *OFF_GRID, seed=seed + 1, region="sr").features("paws")
    fitter = SignalFitter(model, np.concatenate([bkg, sig]))
    truth = {"mu": n_s / (n_s + n_background), "mx": OFF_GRID[0], "my": OFF_GRID[1]}
    return fitter.fit(start, hesse=hesse, truth=truth), truth


def test_offgrid_fit_recovers_theta(ensemble, sim):
    """θ = (325, 175) lies between grid points; S/√B = 5 on 20k SR background events; the fit starts at
    the nearest grid point. With the sampled κ (E_B[Λ] = 1 at every θ) both masses come out within 10 %
    (measured: mX +6 %, mY +5 %; HESSE errors ≈ 3 GeV, so this is the model's interpolation bias). The
    fixed κ needs a better-trained model for that (this small one puts mY 15 % high, because its
    E_B[Λ_fixed] drifts with θ): see the slow test below."""
    res, truth = _offgrid_fit(
        ensemble.with_kappa("sampled"),
        sim,
        s_over_sqrt_b=5.0,
        n_background=20_000,
        seed=40,
        start={"mu": 0.02, "mx": 300.0, "my": 150.0},
    )
    assert res.valid
    assert res.values["mx"] == pytest.approx(truth["mx"], rel=0.10)
    assert res.values["my"] == pytest.approx(truth["my"], rel=0.10)
    assert res.values["mu"] == pytest.approx(truth["mu"], rel=0.5)


@pytest.mark.slow
def test_offgrid_fit_quick_preset_full_grid(sim):
    """The quick preset on the paper's full 50…600 GeV grid (true background): θ = (325, 175) within 10 %.

    Measured (≈100 s): κ fixed (324.0, 179.4), κ sampled (331.5, 180.1); μ̂ 0.0182 for a true 0.0156.
    """
    background = sim.sample_background_sr(90_000, seed=50).features("paws")
    model = train_classifier_ensemble(background, ClassifierConfig.preset("quick"), seed=2)
    assert model.theta_bounds == ((50.0, 600.0), (50.0, 600.0))
    for kappa in ("fixed", "sampled"):
        res, truth = _offgrid_fit(
            model.with_kappa(kappa),
            sim,
            s_over_sqrt_b=5.0,
            n_background=100_000,
            seed=60,
            start={"mu": 0.01, "mx": 300.0, "my": 150.0},
            hesse=True,
        )
        assert res.valid
        assert res.values["mx"] == pytest.approx(truth["mx"], rel=0.10)
        assert res.values["my"] == pytest.approx(truth["my"], rel=0.10)
