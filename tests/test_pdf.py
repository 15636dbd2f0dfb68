"""The zfit ratio PDF μΛ + 1 − μ: values, normalisation with respect to p_B, sampling, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import zfit

from gbi_zfit.data.convert import feature_space, to_zfit_data
from gbi_zfit.errors import InputError, ParameterRangeError
from gbi_zfit.models import OracleRatio
from gbi_zfit.pdf import RatioPDF, low_mass_penalty


@pytest.fixture(scope="module")
def oracle(sim):
    return OracleRatio(sim)


def _pdf(oracle, mu=0.01, mx=300.0, my=150.0, reference=None):
    params = (
        zfit.Parameter("mu", mu, -0.5, 1),
        zfit.Parameter("mx", mx, 25, 700),
        zfit.Parameter("my", my, 25, 700),
    )
    return RatioPDF(feature_space("paws"), oracle, *params, reference=reference), params


def test_log_pdf_matches_numpy_reference(sim, oracle, background_sr):
    pdf, _ = _pdf(oracle, mu=0.02)
    sig = sim.sample_signal(2000, 300, 150, seed=3, region="sr")
    x = np.concatenate([background_sr.features()[:3000], sig.features()])
    expected = np.log1p(0.02 * np.expm1(sim.log_ratio(x, 300, 150)))
    data = to_zfit_data(x, pdf.space)
    np.testing.assert_allclose(pdf.log_pdf(data).numpy(), expected, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(pdf.pdf(data).numpy(), np.exp(expected), rtol=1e-10)


def test_mu_zero_is_background_only(oracle, background_sr):
    pdf, _ = _pdf(oracle, mu=0.0)
    np.testing.assert_array_equal(pdf.log_pdf(background_sr.features()[:1000]).numpy(), 0.0)


def test_normalised_with_respect_to_background(sim, oracle):
    """E_B[μΛ + 1 − μ] = 1 (exact for the oracle); MC error from the sample itself."""
    pdf, _ = _pdf(oracle, mu=1.0 - 1e-9)
    vals = pdf.pdf(sim.sample_background_sr(500_000, seed=8).features()).numpy()
    err = vals.std() / np.sqrt(len(vals))
    assert err < 0.025
    assert abs(vals.mean() - 1.0) < 4 * err


def test_negative_mu_allowed_where_density_positive(oracle, background_sr):
    pdf, _ = _pdf(oracle, mu=-0.001)
    lp = pdf.log_pdf(background_sr.features()[:2000]).numpy()
    assert np.isfinite(lp).all()


def test_sample_is_weighted_resampling_of_reference(sim, oracle):
    """Samples follow (1 − μ) p_B + μ p_S: the signal-window fraction matches the exact mixture."""
    ref = sim.sample_background_sr(100_000, seed=21).features()
    pdf, _ = _pdf(oracle, mu=0.3, reference=ref)
    zfit.settings.set_seed(5)
    sample = pdf.sample(20_000).value().numpy()
    assert sample.shape == (20_000, 6)
    # every sampled row is a row of the reference
    assert np.isin(sample[:, 0], ref[:, 0]).all()
    sig = sim.sample_signal(100_000, 300, 150, seed=22, region="sr").features()
    window = lambda x: np.mean((x[:, 0] > 250) & (x[:, 0] < 350) & (x[:, 1] > 120) & (x[:, 1] < 180))
    expected = 0.7 * window(ref) + 0.3 * window(sig)
    got = window(sample)
    assert abs(got - expected) < 4 * np.sqrt(expected * (1 - expected) / len(sample)) + 0.01
    assert got > 3 * window(ref)  # the signal peak is really there


def test_sample_without_reference_raises(oracle):
    pdf, _ = _pdf(oracle)
    with pytest.raises(InputError, match="reference"):
        pdf.sample(10)


def test_gradients_match_finite_differences(sim, oracle, background_sr):
    ev = background_sr.features()[:5000]
    sig = sim.sample_signal(300, 300, 150, seed=4, region="sr").features()
    data = to_zfit_data(np.concatenate([ev, sig]), feature_space("paws"))
    pdf, params = _pdf(oracle, mu=0.05, mx=280.0, my=160.0)
    loss = zfit.loss.UnbinnedNLL(pdf, data)
    _, grad = loss.value_gradient(params=list(params))
    for p, g in zip(params, np.asarray(grad), strict=True):
        h = 1e-6 if p.name == "mu" else 1e-3
        v0 = float(p.value())
        p.set_value(v0 + h)
        up = float(loss.value())
        p.set_value(v0 - h)
        down = float(loss.value())
        p.set_value(v0)
        np.testing.assert_allclose(g, (up - down) / (2 * h), rtol=1e-4)


def test_bad_construction(oracle):
    mu, mx, my = 0.1, 300.0, 150.0
    with pytest.raises(InputError, match="do not match"):
        RatioPDF(feature_space("ranode"), oracle, mu, mx, my)
    with pytest.raises(InputError, match="RatioModel"):
        RatioPDF(feature_space("paws"), object(), mu, mx, my)
    with pytest.raises(InputError, match="reference"):
        RatioPDF(feature_space("paws"), oracle, mu, mx, my, reference=np.full((3, 6), np.nan))


def test_theta_outside_model_range(oracle):
    with pytest.raises(ParameterRangeError, match="outside the range"):
        oracle.log_ratio_numpy(np.ones((2, 6)) * 0.5, 800.0, 100.0)


def test_low_mass_penalty_is_smooth_and_zero_above_threshold():
    mx = zfit.Parameter("mx", 300.0, 25, 700)
    my = zfit.Parameter("my", 150.0, 25, 700)
    pen = low_mass_penalty(mx, my, threshold=85.0, scale=10.0)
    assert float(pen.value()) == 0.0
    my.set_value(85.0 - 1e-6)
    assert float(pen.value()) < 1e-12  # C1 at the threshold: no jump
    my.set_value(45.0)
    assert float(pen.value()) == pytest.approx(np.expm1(4.0) - 4.0)
    mx.set_value(65.0)
    assert float(pen.value()) == pytest.approx(np.expm1(4.0) - 4.0 + np.expm1(2.0) - 2.0)


def test_tf_float64_output(oracle, background_sr):
    out = oracle.log_ratio(tf.constant(background_sr.features()[:10]), 300.0, 150.0)
    assert out.dtype == tf.float64


def test_python_float_theta_keeps_float64_precision(sim):
    """θ given as a Python float is not rounded through float32 (325.00001 ≠ 325.0)."""
    from gbi_zfit.data.benchmark_tf import BenchmarkDensitiesTF

    x = sim.sample_signal(50, 325, 175, seed=1, region="sr").features()
    d = BenchmarkDensitiesTF(sim)
    np.testing.assert_allclose(
        d.log_ps_x(x, 325.00001, 175.0).numpy(), sim.log_ps_x(x, 325.00001, 175.0), rtol=1e-12, atol=1e-12
    )
