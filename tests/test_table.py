"""θ-fast fits: log Λ tabulated per event on a θ grid (inference.table) and its use by SignalFitter."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from gbi_zfit.errors import InputError, ParameterRangeError
from gbi_zfit.inference import SignalFitter
from gbi_zfit.inference.engine import RatioNLL
from gbi_zfit.inference.table import FixedThetaNLL, TabulatedNLL
from gbi_zfit.models.base import RatioModel
from gbi_zfit.models.classifier import ClassifierConfig, train_classifier_ensemble


class QuadraticRatio(RatioModel):
    """log Λ quadratic in θ (a Gaussian peak at the jet masses): the bicubic Hermite table is exact."""

    theta_bounds = ((50.0, 600.0), (50.0, 600.0))
    theta_fast_preferred = True

    def __init__(self, width: float = 40.0, offset: float = 3.0):
        self.width, self.offset = width, offset
        self.calls = 0

    def log_ratio(self, x, mx, my):
        self.calls += 1
        x = tf.convert_to_tensor(x, tf.float64)
        d = tf.square(x[:, 0] - mx) + tf.square(x[:, 1] - my)
        return self.offset - d / (2 * self.width**2) - 0.1 * x[:, 2]


@pytest.fixture(scope="module")
def events(sim):
    bkg = sim.sample_background_sr(20_000, seed=5).features("paws")
    sig = sim.sample_signal(150, 300.0, 150.0, seed=6, region="sr").features("paws")
    return np.concatenate([bkg, sig])


@pytest.fixture(scope="module")
def small_ensemble(sim, background_sr):
    cfg = ClassifierConfig.preset("test", n_background=4000, epochs=2)
    return train_classifier_ensemble(background_sr.features("paws")[:6000], cfg, seed=3)


def test_table_is_exact_for_log_ratio_quadratic_in_theta(events):
    """Bicubic Hermite reproduces cubics: table NLL and gradient equal the exact ones between nodes."""
    engine = RatioNLL(QuadraticRatio(), events, penalty_threshold=None)
    table = TabulatedNLL(engine, step=25.0)
    rng = np.random.default_rng(1)
    pts = zip(rng.uniform(0.001, 0.05, 5), rng.uniform(75, 575, 5), rng.uniform(75, 575, 5), strict=True)
    for mu, mx, my in pts:
        v_tab, g_tab = table.value_and_grad([mu, mx, my])
        v_ex, g_ex = engine.value_and_grad([mu, mx, my])
        assert v_tab == pytest.approx(v_ex, abs=1e-7)
        np.testing.assert_allclose(g_tab, g_ex, rtol=1e-7, atol=1e-7)
    # also in the first and last cells
    for mx, my in ((52.0, 598.0), (599.0, 51.0)):
        assert table([0.01, mx, my]) == pytest.approx(engine([0.01, mx, my]), abs=1e-7)
    assert table.summary()["cells"] == 7


def test_table_nodes_computed_once_and_only_near_the_fit(events):
    model = QuadraticRatio()
    engine = RatioNLL(model, events, penalty_threshold=None)
    table = TabulatedNLL(engine, step=25.0)
    table([0.01, 301.0, 151.0])
    assert table.summary()["nodes"] == 4
    n_calls = model.calls
    table([0.01, 310.0, 160.0])  # same cell: nothing new
    assert model.calls == n_calls
    table([0.01, 330.0, 160.0])  # the neighbouring cell: two new nodes
    assert table.summary()["nodes"] == 6


def test_table_notices_new_weights_and_refuses_bad_input(events):
    engine = RatioNLL(QuadraticRatio(), events, penalty_threshold=None)
    table = TabulatedNLL(engine, step=25.0)
    assert not table.stale
    v0 = table([0.01, 301.0, 151.0])
    engine.set_weights(np.full(len(events), 2.0))  # new weights: same nodes, read live
    assert not table.stale
    assert table([0.01, 301.0, 151.0]) == pytest.approx(engine([0.01, 301.0, 151.0]), abs=1e-7)
    assert table([0.01, 301.0, 151.0]) == pytest.approx(2 * v0, rel=1e-9)
    engine.set_data(events[:100])
    assert table.stale
    with pytest.raises(ParameterRangeError, match="outside"):
        table([0.01, 700.0, 100.0])
    with pytest.raises(InputError, match="parameters"):
        table([0.01, 300.0])
    with pytest.raises(InputError, match="step"):
        TabulatedNLL(engine, step=0.0)


def test_node_nll_and_exact_nll_are_exact(events):
    engine = RatioNLL(QuadraticRatio(), events)
    table = TabulatedNLL(engine, step=25.0)
    grid = np.array([[300.0, 150.0], [400.0, 100.0]])
    np.testing.assert_allclose(
        table.node_nll(0.01, grid), [engine([0.01, a, b]) for a, b in grid], rtol=1e-10
    )
    assert table.exact_nll([0.02, 311.0, 123.0]) == pytest.approx(engine([0.02, 311.0, 123.0]), rel=1e-10)


def test_fixed_theta_nll_matches_engine(events):
    engine = RatioNLL(QuadraticRatio(), events)
    fixed = FixedThetaNLL(engine, 300.0, 150.0)
    v, g = fixed.value_and_grad([0.01, 300.0, 150.0])
    v_ex, g_ex = engine.value_and_grad([0.01, 300.0, 150.0])
    assert v == pytest.approx(v_ex, rel=1e-12)
    assert g[0] == pytest.approx(g_ex[0], rel=1e-10)
    with pytest.raises(InputError, match="fixed"):
        fixed([0.01, 301.0, 150.0])


def test_tabulated_fit_equals_exact_fit(events):
    """Same minimum, errors and MINOS interval as the exact fit when the table is exact."""
    model = QuadraticRatio()
    start = {"mu": 0.01, "mx": 320.0, "my": 140.0}
    tab = SignalFitter(model, events).fit(start, minos=("mu",))
    exact = SignalFitter(model, events, theta_table=False).fit(start, minos=("mu",))
    assert "table" in tab.info
    assert "table" not in exact.info
    assert tab.valid
    assert tab.info["table"]["accurate"]
    assert abs(tab.info["table"]["check"]["delta_nll"]) < 1e-6
    assert tab.nll == pytest.approx(exact.nll, abs=1e-4)
    for n in ("mu", "mx", "my"):
        assert abs(tab.values[n] - exact.values[n]) < 0.01 * exact.errors[n]
        assert tab.errors[n] == pytest.approx(exact.errors[n], rel=1e-3)
    ends = [tab.values["mu"] + e for e in tab.minos["mu"]]
    ends_ex = [exact.values["mu"] + e for e in exact.minos["mu"]]
    np.testing.assert_allclose(ends, ends_ex, atol=0.01 * exact.errors["mu"])
    # θ fixed: Λ evaluated once, μ fitted exactly
    fixed = SignalFitter(model, events).fit(start, fix=("mx", "my"))
    fixed_ex = SignalFitter(model, events, theta_table=False).fit(start, fix=("mx", "my"))
    assert fixed.values["mu"] == pytest.approx(fixed_ex.values["mu"], rel=1e-6)


def test_tabulated_multistart_equals_exact_multistart(events):
    """The probe on table nodes ranks the starts as the exact NLL does; same best fit."""
    tab = SignalFitter(QuadraticRatio(), events).fit_multistart()
    exact = SignalFitter(QuadraticRatio(), events, theta_table=False).fit_multistart()
    assert tab.valid
    assert [s["start"] for s in tab.info["starts"]] == [s["start"] for s in exact.info["starts"]]
    for n in ("mu", "mx", "my"):
        assert abs(tab.values[n] - exact.values[n]) < 0.01 * exact.errors[n]
    assert tab.info["probe_time_s"] >= 0


def test_classifier_nodes_equal_fast_path(small_ensemble, events):
    """log_ratio_nodes (forward only, batched θ) equals log_ratio_precomputed of the fit engine."""
    engine = RatioNLL(small_ensemble, events[:3000])
    theta = np.array([[300.0, 150.0], [212.5, 187.5]])
    nodes = small_ensemble.log_ratio_nodes(engine.precomputed, theta)
    for row, (a, b) in zip(nodes, theta, strict=True):
        np.testing.assert_allclose(row, engine.log_ratio(a, b), rtol=1e-6, atol=1e-6)
    assert small_ensemble.theta_fast_preferred
    fitter = SignalFitter(small_ensemble, events[:3000])
    assert fitter.theta_table
    res = fitter.fit({"mu": 0.01, "mx": 300.0, "my": 150.0})
    assert np.isfinite(res.nll)
    check = res.info["table"]["check"]
    assert abs(check["delta_nll"]) < 1.0  # a coarse, briefly trained net: the check is reported, not perfect
    assert res.nll == pytest.approx(res.info["table"]["exact_nll"])


def test_table_options_are_checked(events):
    with pytest.raises(InputError, match="table_steps"):
        SignalFitter(QuadraticRatio(), events, table_steps=(0.0,))
    with pytest.raises(InputError, match="table_tol"):
        SignalFitter(QuadraticRatio(), events, table_tol=-1.0)


def test_classifier_node_derivatives_match_finite_differences(small_ensemble, events):
    """∂/∂mX, ∂/∂mY and ∂²/∂mX∂mY of log Λ (network + κ spline) against central differences (float64)."""
    ens = small_ensemble.with_kappa("sampled")
    ens.fast_dtype = "float64"
    try:
        engine = RatioNLL(ens, events[:2000])
        a, b, h = 312.3, 187.9, 1e-3
        d = ens.log_ratio_nodes(engine.precomputed, np.array([[a, b]]), derivatives=True)[0]
        v = {
            (i, j): ens.log_ratio_nodes(engine.precomputed, np.array([[a + i * h, b + j * h]]))[0]
            for i in (-1, 0, 1)
            for j in (-1, 0, 1)
        }
        np.testing.assert_allclose(d[0], v[(0, 0)], rtol=1e-12, atol=1e-12)
        fd = [
            (v[(1, 0)] - v[(-1, 0)]) / (2 * h),
            (v[(0, 1)] - v[(0, -1)]) / (2 * h),
            (v[(1, 1)] - v[(1, -1)] - v[(-1, 1)] + v[(-1, -1)]) / (4 * h * h),
        ]
        for k, approx in enumerate(fd, start=1):
            # a ReLU kink within ±h of θ spoils the difference quotient for a few events only
            close = np.isclose(d[k], approx, rtol=1e-4, atol=1e-6)
            assert close.mean() > 0.98, k
    finally:
        ens.fast_dtype = "float32"


class CauchyRatio(QuadraticRatio):
    """A peak in θ that no cubic reproduces: the table is approximate and the fit must check it."""

    def log_ratio(self, x, mx, my):
        x = tf.convert_to_tensor(x, tf.float64)
        d = tf.square(x[:, 0] - mx) + tf.square(x[:, 1] - my)
        return self.offset - 2.0 * tf.math.log1p(d / (2 * self.width**2)) - 0.1 * x[:, 2]


def test_inexact_table_is_checked_and_refined(events):
    """A coarse final table misses the tolerance, is refined once, and then agrees with the exact fit."""
    model = CauchyRatio(width=25.0)
    start = {"mu": 0.01, "mx": 320.0, "my": 140.0}
    exact = SignalFitter(model, events, theta_table=False).fit(start)
    coarse = SignalFitter(model, events, table_steps=(25.0, 25.0), table_tol=1e9).fit(start)
    assert coarse.info["table"]["step"] == 25.0  # nothing to refine with a huge tolerance
    assert abs(coarse.info["table"]["check"]["delta_nll"]) > 1e-3
    fine = SignalFitter(model, events, table_steps=(25.0, 12.5), table_tol=2e-3).fit(start)
    table = fine.info["table"]
    assert table["step"] in (12.5, 6.25)
    assert table["accurate"] == (abs(table["check"]["delta_nll"]) <= 2e-3 and table["exact_gain"] <= 2e-3)
    assert abs(table["check"]["delta_nll"]) < abs(coarse.info["table"]["check"]["delta_nll"])
    for n in ("mu", "mx", "my"):
        assert abs(fine.values[n] - exact.values[n]) < 0.1 * exact.errors[n]


def test_toys_fitted_with_a_learned_model(small_ensemble, tmp_path):
    """ToyConfig(model=...): generator toys fitted with the learned ratio on its θ table."""
    from gbi_zfit.inference.toys import ToyConfig, build_toy_state, run_one_toy

    small_ensemble.save(tmp_path / "paws")
    config = ToyConfig(s_over_sqrt_b=3.0, n_background_sr=3000, minos_toys=0, model=str(tmp_path / "paws"))
    assert config.to_dict()["model"] == str(tmp_path / "paws")
    assert "model" not in ToyConfig().to_dict()  # stores of oracle toys keep their old identity
    state = build_toy_state(config)
    assert state.fitter.ratio_model.n_members == small_ensemble.n_members
    assert state.fitter.theta_table
    out = run_one_toy(state, np.random.SeedSequence(4).spawn(1)[0])
    assert out["ok"], out.get("error")
    assert np.isfinite(out["t_mu"])
    assert out["t_mu"] >= -1e-6
    with pytest.raises(InputError, match="model"):
        ToyConfig(model=3)


def test_classifier_with_compiled_nodes_pickles(small_ensemble, events):
    """Dask ships models by pickle: the compiled node functions are dropped and rebuilt."""
    import pickle

    engine = RatioNLL(small_ensemble, events[:500])
    before = small_ensemble.log_ratio_nodes(engine.precomputed, np.array([[300.0, 150.0]]))
    clone = pickle.loads(pickle.dumps(small_ensemble))
    np.testing.assert_array_equal(
        clone.log_ratio_nodes(engine.precomputed, np.array([[300.0, 150.0]])), before
    )
