"""The flow generator of the PAWS features and the per-θ normalisation checks against the exact benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gbi_zfit.data.regions import DEFAULT_SR
from gbi_zfit.errors import ConfigError, InputError, ModelFileError
from gbi_zfit.models.fidelity import generator_normalisation, ratio_normalisation, theta_grid
from gbi_zfit.models.flowgen import FlowGenerator, GeneratorConfig, swap_jets
from gbi_zfit.models.flows import BackgroundFlowEnsemble
from gbi_zfit.models.oracle import OracleRatio


@pytest.fixture(scope="module")
def sideband(sim):
    return DEFAULT_SR.sidebands(sim.sample_background(40_000, seed=3))


@pytest.fixture(scope="module")
def tiny_generator(sideband):
    return FlowGenerator.train_sidebands(sideband, GeneratorConfig.preset("test"), seed=4)


def test_samples_are_ordered_reproducible_and_finite(tiny_generator):
    mjj = np.linspace(3300.0, 3700.0, 500)
    a = tiny_generator.sample(mjj, seed=1)
    b = tiny_generator.sample(mjj, seed=1)
    assert a.shape == (500, 6)
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert np.all(a[:, 0] >= a[:, 1])
    assert np.all((a[:, 2:] >= 0) & (a[:, 2:] <= 1))
    assert not np.array_equal(a, tiny_generator.sample(mjj, seed=2))


def test_ordered_density_is_the_sum_over_both_assignments(tiny_generator):
    x = tiny_generator.sample(np.full(200, 3500.0), seed=5)
    lp = tiny_generator.log_prob(x, 3500.0).numpy()
    base = BackgroundFlowEnsemble.log_prob  # the members' density of an unordered pair
    q = base(tiny_generator, x, 3500.0).numpy()
    q_swapped = base(tiny_generator, swap_jets(x, np.ones(len(x), bool)), 3500.0).numpy()
    np.testing.assert_allclose(lp, np.logaddexp(q, q_swapped), rtol=1e-10)
    # below the diagonal the ordered density is zero
    assert np.all(np.isneginf(tiny_generator.log_prob(swap_jets(x, x[:, 0] > x[:, 1]), 3500.0).numpy()))


def test_ordered_density_integrates_to_one(tiny_generator, sim):
    """Importance sampling with the exact benchmark density as proposal: ∫ p_gen(x | mjj) dx = 1."""
    t = sim.sample_background_sr(40_000, seed=8)
    x, mjj = t.features("paws"), np.full(len(t), 3500.0)
    log_w = tiny_generator.log_prob(x, mjj).numpy() - sim.log_pb_x_given_mjj(x, mjj)
    w = np.exp(log_w)
    assert abs(w.mean() - 1.0) < 4 * w.std() / np.sqrt(len(w)) + 0.02


def test_save_load_round_trip_and_kind_check(tiny_generator, tmp_path, sideband):
    path = tiny_generator.save(tmp_path / "gen")
    loaded = FlowGenerator.load(path)
    x = tiny_generator.sample(np.full(50, 3400.0), seed=2)
    np.testing.assert_allclose(loaded.log_prob(x, 3400.0).numpy(), tiny_generator.log_prob(x, 3400.0).numpy())
    np.testing.assert_array_equal(loaded.sample(np.full(50, 3400.0), seed=2), x)
    assert loaded.generator_config == GeneratorConfig.preset("test")
    # a background flow of the same features is another kind of model
    with pytest.raises(ModelFileError, match="flow_generator"):
        BackgroundFlowEnsemble.load(path)
    flow = BackgroundFlowEnsemble.train(
        sideband.features("paws")[:2000],
        sideband.mjj[:2000],
        config=GeneratorConfig.preset("test").flow,
        n_members=1,
        feature_set="paws",
        progress=False,
    )
    with pytest.raises(ModelFileError, match="background_flow"):
        FlowGenerator.load(flow.save(tmp_path / "flow"))


def test_bad_input(tiny_generator, sim):
    with pytest.raises(InputError, match="signal region"):
        FlowGenerator.train_sidebands(sim.sample_background_sr(2000, seed=1), GeneratorConfig.preset("test"))
    with pytest.raises(InputError):
        tiny_generator.sample([3500.0, np.nan])
    with pytest.raises(InputError):
        tiny_generator.sample([])
    with pytest.raises(ConfigError):
        GeneratorConfig.preset("huge")
    with pytest.raises(ConfigError):
        GeneratorConfig(n_members=0)


def test_preset_epochs_override():
    cfg = GeneratorConfig.preset("standard", epochs=3)
    assert cfg.flow.max_epochs == 3
    assert cfg.epochs == 3
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg


# ------------------------------------------------------------------------------------------------
# normalisation checks


class _ExactGenerator:
    """The benchmark's exact p_B(x | mjj), optionally scaled by e^offset (a known mismodelling)."""

    def __init__(self, sim, offset=0.0):
        self.sim, self.offset = sim, offset

    def log_prob(self, x, mjj):
        return tf.constant(self.sim.log_pb_x_given_mjj(np.asarray(x), np.asarray(mjj)) + self.offset)


THETA = [(300.0, 150.0), (500.0, 100.0), (100.0, 100.0)]


def test_oracle_ratio_is_normalised_on_the_true_background(sim):
    check = ratio_normalisation(OracleRatio(sim), sim=sim, theta=THETA, n_background=20_000, n_signal=5000)
    eps, err = np.array(check.epsilon), np.array(check.error)
    assert np.all(np.abs(eps) < 4 * err + 1e-3), (eps, err)
    assert np.all(err < 0.01)
    assert check.passed


def test_generator_check_measures_a_known_mismodelling(sim):
    exact = generator_normalisation(
        _ExactGenerator(sim), sim=sim, theta=THETA, n_background=20_000, n_signal=5000
    )
    eps, err = np.array(exact.epsilon), np.array(exact.error)
    assert np.all(np.abs(eps) < 4 * err + 1e-3), exact  # unbiased: within its MC error
    assert exact.max_abs < 0.015
    off = generator_normalisation(
        _ExactGenerator(sim, 0.1), sim=sim, theta=THETA, n_background=20_000, n_signal=5000
    )
    # ρ = e^0.1 everywhere: ε = e^0.1 − 1, within the (scaled) MC error of the same events
    dev = np.abs(np.array(off.epsilon) - (np.exp(0.1) - 1.0))
    assert np.all(dev < 4 * np.exp(0.1) * err + 1e-3), off
    assert not off.passed
    assert "FAILED" in str(off)


def test_generator_check_needs_a_density(sim):
    with pytest.raises(InputError, match="no density"):
        generator_normalisation(object(), sim=sim, theta=THETA)


def test_theta_grid():
    g = theta_grid()
    assert len(g) == 78
    assert np.all(g[:, 0] >= g[:, 1])
    assert g.min() == 50
    assert g.max() == 600
    with pytest.raises(InputError):
        theta_grid(step=0)


# ------------------------------------------------------------------------------------------------
# the importance-weighted κ reference (tempered flows)


def test_tempered_sample_is_an_exact_importance_sample(tiny_generator, sideband):
    """E_q[w h] = E_p[h]: the weighted tempered sample reproduces plain-sample expectations, tails included."""
    from gbi_zfit.data.mjj import fit_sidebands

    fit = fit_sidebands(sideband.mjj, DEFAULT_SR)
    plain = tiny_generator.sample_sr_background(fit, n=200_000, seed=1).features
    sample, log_w = tiny_generator.sample_sr_reference(fit, 200_000, seed=2)
    w = np.exp(log_w)
    assert len(w) == len(sample.features) >= 199_000
    assert np.all(sample.features[:, 0] >= sample.features[:, 1])
    assert w.max() <= 2.0 + 1e-12  # defensive mixture with half the events at T = 1: w ≤ 1/α = 2
    assert w.mean() == pytest.approx(1.0, abs=0.01)
    for h in (
        lambda x: x[:, 0],  # mean heavier-jet mass
        lambda x: (x[:, 1] > np.quantile(plain[:, 1], 0.99)).astype(float),  # a 1 % tail
    ):
        hp, hq = h(plain), h(sample.features)
        est = np.sum(w * hq) / np.sum(w)
        err = np.hypot(hp.std() / np.sqrt(len(hp)), np.sqrt(np.sum(w**2 * (hq - est) ** 2)) / np.sum(w))
        assert abs(est - hp.mean()) < 4 * err
    # the tail is better populated: more events beyond the plain sample's 99.9 % quantile of mJ2
    cut = np.quantile(plain[:, 1], 0.999)
    assert (sample.features[:, 1] > cut).mean() > 3 * (plain[:, 1] > cut).mean()


def test_one_temperature_gives_unit_weights(tiny_generator):
    x, log_w = BackgroundFlowEnsemble.sample_tempered(tiny_generator, np.full(100, 3500.0), (1.0,), seed=3)
    assert x.shape == (100, 6)
    np.testing.assert_allclose(log_w, 0.0, atol=1e-12)
    with pytest.raises(InputError, match="temperatures"):
        BackgroundFlowEnsemble.sample_tempered(tiny_generator, np.full(10, 3500.0), (0.0,))


class _PoweredOracle(OracleRatio):
    """Λ*^a, renormalised on the background: a 'compressed' (a < 1) ratio with E_B[Λ] = 1."""

    def __init__(self, sim, a, log_norm):
        super().__init__(sim)
        self.a, self.log_norm = a, log_norm

    def log_ratio_numpy(self, x, mx, my):
        return self.a * super().log_ratio_numpy(x, mx, my) - self.log_norm


def test_signal_response_is_one_for_the_oracle_and_above_for_a_compressed_ratio(sim):
    from gbi_zfit.models.fidelity import ratio_response

    kw = {"sim": sim, "theta": THETA[:2], "n_background": 40_000, "n_signal": 10_000, "seed": 2}
    exact = ratio_response(OracleRatio(sim), **kw)
    np.testing.assert_allclose(exact.response, 1.0, rtol=1e-3)  # = 1 up to the MC error of E_B[Λ*] − 1
    assert np.all(np.abs(exact.spurious) < 1e-3)
    xb = sim.sample_background_sr(200_000, seed=9).features("paws")
    log_norm = np.log(np.mean(np.exp(0.7 * sim.log_ratio(xb, *THETA[0]))))
    compressed = ratio_response(_PoweredOracle(sim, 0.7, log_norm), **{**kw, "theta": THETA[:1]})
    assert compressed.response[0] > 1.1  # μ̂ biased high
    assert "median" in str(compressed)


def test_default_check_grid_follows_the_model_range():
    from gbi_zfit.models.fidelity import _grid

    class Narrow:
        theta_bounds = ((100.0, 500.0), (100.0, 500.0))

    class Odd:
        theta_bounds = ((75.0, 700.0), (25.0, 700.0))

    g = _grid(None, Narrow())
    assert (g.min(), g.max(), len(g)) == (100.0, 500.0, 45)
    g = _grid(None, Odd())  # starts on the 50-GeV grid, never beyond 50…600
    assert (g.min(), g.max()) == (100.0, 600.0)
    assert len(_grid(None)) == 78
