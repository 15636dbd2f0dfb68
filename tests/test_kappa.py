"""The κ(θ) table and its spline (gbi_zfit.models.kappa)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from gbi_zfit.errors import InputError
from gbi_zfit.models.kappa import KappaSurface, build_kappa_surface, regular_nodes

BOUNDS = ((50.0, 600.0), (50.0, 600.0))


def _smooth(mx, my):
    return 0.3 * np.sin(mx / 90.0) + 0.2 * np.cos(my / 70.0) + 1e-6 * mx * my


def _surface(fn=_smooth, step=25.0) -> KappaSurface:
    mx, my = regular_nodes(*BOUNDS[0], step), regular_nodes(*BOUNDS[1], step)
    return KappaSurface(mx.tolist(), my.tolist(), fn(mx[:, None], my[None, :]).tolist())


def test_nodes():
    assert regular_nodes(50.0, 600.0, 25.0).tolist() == list(np.arange(50.0, 601.0, 25.0))
    assert len(regular_nodes(50.0, 600.0, 40.0)) == 15  # spacing ≤ step
    assert len(regular_nodes(100.0, 110.0, 50.0)) == 2


def test_spline_is_exact_at_nodes_and_accurate_between():
    s = _surface()
    mx, my = np.meshgrid(s.mx_nodes, s.my_nodes, indexing="ij")
    np.testing.assert_allclose(s(mx, my), _smooth(mx, my), atol=1e-12)
    rng = np.random.default_rng(1)
    u, v = rng.uniform(50, 600, 500), rng.uniform(50, 600, 500)
    assert np.abs(s(u, v) - _smooth(u, v)).max() < 2e-3  # third-order accurate for 25 GeV cells
    # linear functions are reproduced exactly, also in the end cells (linear extrapolation of the pads)
    lin = _surface(lambda a, b: 0.01 * a - 0.003 * b + 2.0)
    np.testing.assert_allclose(lin(u, v), 0.01 * u - 0.003 * v + 2.0, atol=1e-12)


def test_tensorflow_value_and_gradient_match_numpy():
    s = _surface()
    for mx0, my0 in [(312.3, 148.9), (50.0, 600.0), (599.9, 51.2), (300.0, 150.0)]:
        mx, my = tf.Variable(mx0, dtype=tf.float64), tf.Variable(my0, dtype=tf.float64)
        with tf.GradientTape() as tape:
            val = s.tf_log_kappa(mx, my)
        g = tape.gradient(val, [mx, my])
        assert float(val) == pytest.approx(float(s(mx0, my0)), abs=1e-12)
        h = 1e-4
        fd = [(s(mx0 + h, my0) - s(mx0 - h, my0)) / (2 * h), (s(mx0, my0 + h) - s(mx0, my0 - h)) / (2 * h)]
        np.testing.assert_allclose([float(x) for x in g], fd, rtol=1e-5, atol=1e-8)

    @tf.function
    def in_graph(a, b):  # the table constant is created eagerly, so graphs can use it later
        return s.tf_log_kappa(a, b)

    assert float(in_graph(tf.constant(200.0, tf.float64), tf.constant(100.0, tf.float64))) == pytest.approx(
        float(s(200.0, 100.0))
    )


def test_round_trip_and_bad_tables():
    s = _surface()
    s.check_rms = 0.01
    d = json.loads(json.dumps(s.to_dict()))  # NaN fields become null, and back
    t = KappaSurface.from_dict(d)
    assert t.check_rms == 0.01
    assert np.isnan(t.check_max)
    assert t(333.0, 222.0) == s(333.0, 222.0)
    with pytest.raises(InputError, match="does not match"):
        KappaSurface([1.0, 2.0, 3.0], [1.0, 2.0], [[0.0, 0.0]] * 2)
    with pytest.raises(InputError, match="equally spaced"):
        KappaSurface([1.0, 2.0, 4.0], [1.0, 2.0], [[0.0, 0.0]] * 3)
    with pytest.raises(InputError, match="non-finite"):
        KappaSurface([1.0, 2.0], [1.0, 2.0], [[0.0, np.nan], [0.0, 0.0]])


def test_build_from_log_odds_measures_errors():
    """κ = 1/E[odds] on a 'reference' whose odds are exp(f(θ) + noise): log κ = −f − log E[exp(noise)]."""
    rng = np.random.default_rng(2)
    noise = rng.normal(0.0, 0.5, 20_000)

    def log_odds(theta):
        return _smooth(theta[:, 0], theta[:, 1])[:, None] + noise[None, :]

    s = build_kappa_surface(log_odds, BOUNDS, step=25.0, n_check=30, seed=3, n_reference=20_000)
    offset = np.log(np.mean(np.exp(noise)))
    assert s(321.0, 123.0) == pytest.approx(-_smooth(321.0, 123.0) - offset, abs=2e-3)
    assert s.n_check == 30
    assert s.check_max < 2e-3
    # MC error of log E[exp(N(0, 0.5²))] on 20k events: sqrt(e^{0.25} − 1)/√20k ≈ 0.0038
    assert s.mc_error == pytest.approx(np.sqrt(np.exp(0.25) - 1) / np.sqrt(20_000), rel=0.1)
    with pytest.raises(InputError, match="step"):
        build_kappa_surface(log_odds, BOUNDS, step=0.0)


def test_old_chebyshev_sidecar_is_tabulated():
    """Bundles written before the κ table stored Σ c_ij T_i(u) T_j(v) in the scaled masses u, v ∈ [−1, 1]."""
    from gbi_zfit.models.classifier import _surface_from_sidecar

    coef = [[0.1, 0.2, 0.0], [0.3, 0.0, -0.1], [0.0, 0.05, 0.0]]
    s = _surface_from_sidecar({"coef": coef, "grid": [], "log_kappa": [], "n_reference": 7}, BOUNDS)
    u, v = (333.0 - 325.0) / 275.0, (222.0 - 325.0) / 275.0
    expected = np.polynomial.chebyshev.chebval2d(u, v, np.array(coef))
    assert s(333.0, 222.0) == pytest.approx(expected, abs=1e-4)
    assert s.n_reference == 7


def test_weighted_kappa_means():
    """Equal weights are the plain mean; an integer weight k is the event counted k times."""
    from gbi_zfit.models.kappa import _log_mean_odds

    rng = np.random.default_rng(0)
    lo = rng.normal(0.0, 2.0, size=(3, 50))
    theta = np.zeros((3, 2))
    plain = _log_mean_odds(lambda t: lo, theta)
    equal = _log_mean_odds(lambda t: lo, theta, np.full(50, 0.7))
    np.testing.assert_allclose(equal[0], plain[0], rtol=1e-12)
    np.testing.assert_allclose(equal[1], plain[1], rtol=1e-12)
    k = rng.integers(1, 4, size=50)
    dup = _log_mean_odds(lambda t: np.repeat(lo, k, axis=1), theta)
    weighted = _log_mean_odds(lambda t: lo, theta, np.log(k))
    np.testing.assert_allclose(weighted[0], dup[0], rtol=1e-12)
