"""Feature preprocessing, the fixed-step ODE solver and the conditional flow-matching generator."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy.linalg import expm

from gbi_zfit.data.events import PAWS_FEATURES, RANODE_FEATURES
from gbi_zfit.errors import ConfigError, InputError, ModelFileError
from gbi_zfit.models.cfm import (
    CFMConfig,
    CFMGenerator,
    generator_quality,
    integrate_ode,
    train_cfm,
)
from gbi_zfit.models.preprocessing import FeatureTransform

# ----------------------------------------------------------------------------------------------------
# preprocessing


@pytest.fixture(scope="module")
def paws_sample(sim):
    return sim.sample_background_sr(2000, seed=3).features("paws")


def test_default_kinds_and_round_trip(paws_sample):
    t = FeatureTransform.fit(paws_sample, PAWS_FEATURES.names)
    assert t.kinds == ("log", "log", "logit", "logit", "logit", "logit")
    y = t.forward(paws_sample)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(t.inverse(y), paws_sample, rtol=1e-9, atol=1e-12)
    # the closed interval of τ is mapped invertibly (the ε squeeze)
    edge = paws_sample[:2].copy()
    edge[0, 2:] = 0.0
    edge[1, 2:] = 1.0
    assert np.isfinite(t.forward(edge)).all()
    np.testing.assert_allclose(t.inverse(t.forward(edge)), edge, atol=1e-9)


def test_ranode_feature_kinds(sim):
    x = sim.sample_background_sr(500, seed=4).features("ranode")
    t = FeatureTransform.fit(x, RANODE_FEATURES.names)
    assert t.kinds == ("log", "log", "logit", "logit")
    np.testing.assert_allclose(t.inverse(t.forward(x)), x, rtol=1e-9)


def _numeric_log_det(f, x, h=1e-6):
    """log |det J| of f at each row of x by central differences (full d × d Jacobian)."""
    out = []
    for row in x:
        d = len(row)
        jac = np.empty((d, d))
        for j in range(d):
            step = h * max(1.0, abs(row[j]))
            up, dn = row.copy(), row.copy()
            up[j] += step
            dn[j] -= step
            jac[:, j] = (f(up[None])[0] - f(dn[None])[0]) / (2 * step)
        out.append(np.linalg.slogdet(jac)[1])
    return np.array(out)


def test_log_jacobian_matches_finite_differences(paws_sample):
    t = FeatureTransform.fit(paws_sample, PAWS_FEATURES.names)
    x = paws_sample[:20]
    x = x[(x[:, 2:] > 1e-3).all(axis=1) & (x[:, 2:] < 1 - 1e-3).all(axis=1)]
    np.testing.assert_allclose(t.log_det_jacobian(x), _numeric_log_det(t.forward, x), rtol=1e-6, atol=1e-6)
    y = t.forward(x)
    np.testing.assert_allclose(t.inverse_log_det_jacobian(y), -t.log_det_jacobian(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(
        t.inverse_log_det_jacobian(y), _numeric_log_det(t.inverse, y), rtol=1e-5, atol=1e-5
    )


def test_tensorflow_path_matches_numpy_and_autodiff(paws_sample):
    t = FeatureTransform.fit(paws_sample, PAWS_FEATURES.names)
    x = tf.constant(paws_sample[:50])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = t.forward(x)
    jac = tape.batch_jacobian(y, x).numpy()
    np.testing.assert_allclose(y.numpy(), t.forward(paws_sample[:50]), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.slogdet(jac)[1], t.log_det_jacobian(x).numpy(), rtol=1e-10)
    np.testing.assert_allclose(t.inverse(y).numpy(), paws_sample[:50], rtol=1e-9)
    np.testing.assert_allclose(
        t.inverse_log_det_jacobian(y).numpy(), -t.log_det_jacobian(x).numpy(), rtol=1e-9, atol=1e-9
    )


def test_transform_serialisation_and_errors(paws_sample):
    t = FeatureTransform.fit(paws_sample, PAWS_FEATURES.names)
    assert FeatureTransform.from_dict(t.to_dict()) == t
    with pytest.raises(ModelFileError, match="not a FeatureTransform"):
        FeatureTransform.from_dict({"type": "something"})
    with pytest.raises(ModelFileError, match="invalid saved feature transform"):
        FeatureTransform.from_dict({**t.to_dict(), "std": [1.0, -1.0, 1, 1, 1, 1]})
    bad = paws_sample[:3].copy()
    bad[0, 0] = 0.0
    with pytest.raises(InputError, match="needs values > 0"):
        t.forward(bad)
    bad = paws_sample[:3].copy()
    bad[1, 3] = 1.5
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        t.forward(bad)
    with pytest.raises(InputError, match="unknown transform kind"):
        FeatureTransform.fit(paws_sample, PAWS_FEATURES.names, kinds=("sqrt",) * 6)


# ----------------------------------------------------------------------------------------------------
# ODE solver


def _errors(method, a, y0, steps):
    exact = y0 @ expm(a).T
    return [
        np.abs(integrate_ode(lambda y, t: y @ a.T, y0, steps=s, method=method) - exact).max() for s in steps
    ]


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_ode_solver_order_on_linear_field(method, order):
    a = np.array([[-0.5, 2.0], [-2.0, -0.5]])  # damped rotation: y(t) = exp(A t) y0
    y0 = np.random.default_rng(0).normal(size=(5, 2))
    e_coarse, e_fine = _errors(method, a, y0, (20, 40))
    assert np.log2(e_coarse / e_fine) == pytest.approx(order, abs=0.15)
    if method == "rk4":
        assert e_fine < 1e-6


def test_ode_solver_time_dependent_field():
    # dy/dt = cos(t): midpoint is the midpoint rule, RK4 is Simpson's rule
    y = integrate_ode(lambda y, t: np.full_like(y, np.cos(t)), np.zeros(3), steps=10, method="rk4")
    np.testing.assert_allclose(y, np.sin(1.0), atol=1e-7)
    y = integrate_ode(lambda y, t: np.full_like(y, np.cos(t)), np.zeros(3), steps=10, method="midpoint")
    np.testing.assert_allclose(y, np.sin(1.0), atol=5e-4)


def test_ode_solver_rejects_bad_settings():
    with pytest.raises(ConfigError, match="ODE method"):
        integrate_ode(lambda y, t: y, np.zeros(2), steps=4, method="adams")
    with pytest.raises(ConfigError, match="steps"):
        integrate_ode(lambda y, t: y, np.zeros(2), steps=0)
    with pytest.raises(ConfigError, match="ode_method"):
        CFMConfig(ode_method="heun")
    with pytest.raises(ConfigError, match="unknown preset"):
        CFMConfig.preset("huge")


# ----------------------------------------------------------------------------------------------------
# the generator


@pytest.fixture(scope="module")
def sideband(sim):
    return sim.signal_region.sidebands(sim.sample_background(40_000, seed=21))


@pytest.fixture(scope="module")
def tiny_cfm(sideband):
    cfg = CFMConfig.preset("test", max_events=8000, epochs=6, width=48, ode_steps=8)
    return train_cfm(sideband, cfg, seed=5)


@pytest.fixture(scope="module")
def true_sr(sim):
    return sim.sample_background_sr(4000, seed=22)


@pytest.fixture(scope="module")
def cfm_sample(tiny_cfm, true_sr):
    return tiny_cfm.sample(true_sr.mjj, seed=7)


def test_cfm_training_record(tiny_cfm):
    h = tiny_cfm.history
    assert h.n_epochs >= 1
    assert np.isfinite(h.val_loss).all()
    assert h.best_val_loss < h.initial_val_loss  # learnt something
    assert tiny_cfm.metadata["device"]["backend"] == "tensorflow"
    assert "CFMGenerator" in repr(tiny_cfm)


def test_cfm_samples_are_physical(cfm_sample, true_sr):
    x = cfm_sample
    assert x.shape == (len(true_sr), 6)
    assert np.isfinite(x).all()
    assert (x[:, :2] > 0).all()
    assert ((x[:, 2:] >= 0) & (x[:, 2:] <= 1)).all()
    assert (x[:, 0] >= x[:, 1]).all()  # jets ordered by mass, as in data


def test_cfm_marginals_near_true_background(cfm_sample, true_sr):
    """Tiny-model level: medians of the masses within 25 %, τ means within 0.06 of the truth."""
    truth = true_sr.features("paws")
    med_gen, med_true = np.median(cfm_sample[:, :2], axis=0), np.median(truth[:, :2], axis=0)
    np.testing.assert_allclose(med_gen, med_true, rtol=0.25)
    np.testing.assert_allclose(cfm_sample[:, 2:].mean(axis=0), truth[:, 2:].mean(axis=0), atol=0.06)


def test_cfm_mjj_conditioning(tiny_cfm):
    """Heavier dijet systems give heavier jets (the benchmark's median jet mass is 0.025 mjj)."""
    low = tiny_cfm.sample(np.full(1500, 2800.0), seed=1)
    high = tiny_cfm.sample(np.full(1500, 5000.0), seed=1)
    ratio = np.median(high[:, 0]) / np.median(low[:, 0])
    assert 1.2 < ratio < 2.6  # truth: 5000 / 2800 = 1.8


_SMALL_C2ST = {"hidden": (32, 32), "epochs": 3, "patience": 2}


class _StubMjjFit:
    """Duck-typed MjjFitResult: expected SR count and an SR mjj sampler."""

    n_sr = 500.0

    def sample_sr(self, n, seed=None):
        return np.random.default_rng(seed).uniform(3300.0, 3700.0, n)


def test_sr_background_sample(tiny_cfm):
    sample = tiny_cfm.sample_sr_background(_StubMjjFit(), seed=3)
    assert len(sample.mjj) == len(sample.features) == 1500  # 3 × the expected SR count
    assert ((sample.mjj >= 3300) & (sample.mjj < 3700)).all()
    events = sample.to_events()
    assert len(events) == 1500
    assert tiny_cfm.sample_sr_background(_StubMjjFit(), n=10, seed=3).features.shape == (10, 6)
    again = tiny_cfm.sample_sr_background(_StubMjjFit(), seed=3)
    np.testing.assert_array_equal(again.features, sample.features)  # seeded


def test_cfm_save_load_round_trip(tiny_cfm, tmp_path):
    path = tiny_cfm.save(tmp_path / "cfm")
    loaded = CFMGenerator.load(path)
    mjj = np.linspace(3300, 3700, 50)
    np.testing.assert_allclose(loaded.sample(mjj, seed=2), tiny_cfm.sample(mjj, seed=2), rtol=1e-6)
    assert loaded.transform == tiny_cfm.transform
    assert loaded.history.best_epoch == tiny_cfm.history.best_epoch
    with pytest.raises(ModelFileError, match="feature mismatch"):
        CFMGenerator.load(path, feature_set="ranode")


def test_generator_quality_report(cfm_sample, true_sr, tmp_path):
    from gbi_zfit.plotting.generator import plot_generator_quality

    truth = true_sr.features("paws")
    q = generator_quality(cfm_sample[:2000], truth[:2000], seed=1, c2st_kwargs=_SMALL_C2ST)
    assert 0.45 < q.auc < 1.0
    assert q.auc_error > 0
    assert set(q.histograms) == set(PAWS_FEATURES.names)
    assert all(0 <= v <= 1 for v in q.ks.values())
    assert "C2ST AUC" in str(q)
    assert type(q).from_dict(q.to_dict()) == q
    out = plot_generator_quality(q, tmp_path / "quality.png")
    assert out.stat().st_size > 1000


def test_two_sample_auc_of_identical_distributions(sim, true_sr):
    """Two independent samples of the true SR background: the two-sample test sees nothing."""
    other = sim.sample_background_sr(2000, seed=23).features("paws")
    q = generator_quality(other, true_sr.features("paws")[:2000], seed=2, c2st_kwargs=_SMALL_C2ST)
    assert q.auc < 0.55
    assert q.passed


def test_two_sample_auc_is_reproducible(sim, true_sr):
    """Same samples, same seed: the same AUC (every layer, the output layer too, is seeded)."""
    from gbi_zfit.data.events import get_feature_set
    from gbi_zfit.models.cfm import two_sample_auc

    other = sim.sample_background_sr(1500, seed=24).features("paws")
    ref = true_sr.features("paws")[:1500]
    names = get_feature_set("paws").names
    first = two_sample_auc(other, ref, names=names, seed=5, **_SMALL_C2ST)
    assert two_sample_auc(other, ref, names=names, seed=5, **_SMALL_C2ST) == first
