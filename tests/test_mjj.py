"""Tests of the parametric dijet fit of p(mjj) in the sidebands (gbi_zfit.data.mjj)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zfit
from scipy import integrate, optimize, stats

from gbi_zfit.data.mjj import DijetPDF, MjjFit, MjjFitResult, fit_sidebands
from gbi_zfit.data.regions import SignalRegion
from gbi_zfit.errors import ConfigError, FitError, GBIError, InputError, RegionError

MJJ_RANGE = (2650.0, 7000.0)
TRUTH = np.array([10.0, 5.0])  # the lhco-sim background exponents
CHI2_2D_3SIGMA = stats.chi2(2).ppf(stats.chi2(1).cdf(9.0))  # 11.83


@pytest.fixture(scope="module")
def background(sim):
    """1M background events of lhco-sim (≈ 882k in the sidebands)."""
    return sim.sample_background(1_000_000, seed=2024)


@pytest.fixture(scope="module")
def fit2(sim, background) -> MjjFitResult:
    return fit_sidebands(background.mjj, sim.signal_region, mjj_range=MJJ_RANGE, n_params=2)


# ---------------------------------------------------------------------------------------------------
# the zfit PDF


def _obs():
    return zfit.Space("mjj", *MJJ_RANGE)


def test_dijet_pdf_matches_exact_background_density(sim):
    pdf = DijetPDF(_obs(), 10.0, 5.0)
    m = np.linspace(2650.0, 7000.0, 37)
    np.testing.assert_allclose(np.asarray(pdf.pdf(m)), np.exp(sim.log_pb_mjj(m)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(pdf.log_pdf(m)), sim.log_pb_mjj(m), atol=1e-12)
    sr = zfit.Space("mjj", sim.signal_region.low, sim.signal_region.high)
    assert float(pdf.integrate(sr)[0]) == pytest.approx(sim.p_sr_background, rel=1e-12)


def test_dijet_pdf_blinded_window_normalises_over_sidebands(sim):
    sr = sim.signal_region
    pdf = DijetPDF(_obs(), 10.0, 5.0, exclude=(sr.low, sr.high))
    m = np.array([2700.0, 3299.9, 3300.0, 3500.0, 3699.9, 3700.0, 6000.0])
    expect = np.where(sr.contains(m), 0.0, np.exp(sim.log_pb_mjj(m)) / (1.0 - sim.p_sr_background))
    np.testing.assert_allclose(np.asarray(pdf.pdf(m)), expect, rtol=1e-12)
    # the same inside a compiled zfit graph (where zfit's TruncatedPDF would use Simpson integration)
    data = zfit.Data.from_numpy(obs=_obs(), array=m[~sr.contains(m)][:, None], name="sb_points")
    nll = zfit.loss.UnbinnedNLL(model=pdf, data=data)
    assert float(nll.value(full=True)) == pytest.approx(-np.log(expect[expect > 0]).sum(), abs=1e-9)


def test_dijet_pdf_zfit_sampling(sim):
    """zfit's own sampler works on the PDF (full range, and blinded: nothing drawn in the window)."""
    full = DijetPDF(_obs(), 10.0, 5.0).sample(20_000).value().numpy()[:, 0]
    assert stats.kstest(full, sim.cdf_b_mjj).pvalue > 1e-3
    sr = sim.signal_region
    blinded = DijetPDF(_obs(), 10.0, 5.0, exclude=(sr.low, sr.high)).sample(5_000).value().numpy()[:, 0]
    assert not sr.contains(blinded).any()


def test_dijet_pdf_with_p3_integral_is_exact():
    pdf = DijetPDF(_obs(), 8.0, 6.0, 0.7)
    m = np.linspace(*MJJ_RANGE, 5)
    y = m / 13000.0
    shape = (1 - y) ** 8.0 / y ** (6.0 + 0.7 * np.log(y))
    ratio = np.asarray(pdf.pdf(m)) / shape
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # the right function, up to normalisation
    f = lambda v: (1 - v / 13000) ** 8.0 / (v / 13000) ** (6.0 + 0.7 * np.log(v / 13000))
    exact = (
        integrate.quad(f, 3000.0, 4100.0, epsabs=0, epsrel=1e-13)[0]
        / integrate.quad(f, *MJJ_RANGE, epsabs=0, epsrel=1e-13)[0]
    )
    assert float(pdf.integrate(zfit.Space("mjj", 3000.0, 4100.0))[0]) == pytest.approx(exact, rel=1e-11)


def test_dijet_pdf_rejects_bad_space():
    with pytest.raises(ConfigError, match="singular"):
        DijetPDF(zfit.Space("mjj", 2650.0, 14000.0), 10.0, 5.0)
    with pytest.raises(RegionError):
        DijetPDF(_obs(), 10.0, 5.0, exclude=(2000.0, 3000.0))


# ---------------------------------------------------------------------------------------------------
# the sideband fit on lhco-sim background


def test_fit_recovers_generator_parameters(fit2):
    assert fit2.valid
    assert fit2.param_names == ("p1", "p2")
    cov = fit2.covariance
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    d = fit2.values - TRUTH
    assert np.all(np.abs(d) / np.sqrt(np.diag(cov)) < 3.0)
    assert d @ np.linalg.solve(cov, d) < CHI2_2D_3SIGMA
    assert fit2.n_sb > 850_000
    assert fit2.diagnostics["has_accurate_covar"]


def test_predicted_sr_yield_matches_truth(sim, background, fit2):
    n_true = int(sim.signal_region.contains(background.mjj).sum())
    y = fit2.predicted_yield()
    assert (y.value, y.error) == (fit2.n_sr, fit2.n_sr_error)
    assert y.error == pytest.approx(np.hypot(y.error_stat, y.error_shape))
    assert y.error_stat == pytest.approx(y.value / np.sqrt(fit2.n_sb))
    # what the stated error describes: the expected SR yield given N_SB
    expected = fit2.n_sb * sim.p_sr_background / (1.0 - sim.p_sr_background)
    assert abs(y.value - expected) < 2.0 * y.error
    # the observed SR count also fluctuates (binomially, given the fixed total)
    assert abs(y.value - n_true) < 2.0 * np.hypot(y.error, np.sqrt(n_true))
    frac, frac_err = fit2.fraction()
    assert frac == fit2.sr_fraction
    assert abs(frac - sim.p_sr_background) < 2.0 * frac_err
    assert 1e-4 < frac_err < 1e-3


def test_delta_method_error_matches_parameter_sampling(fit2):
    """The exact-gradient delta method agrees with sampling the parameters from their covariance."""
    rng = np.random.default_rng(5)
    draws = rng.multivariate_normal(fit2.values, fit2.covariance, 400)
    ratios = []
    for v in draws:
        r = MjjFitResult.from_dict({**fit2.to_dict(), "values": v.tolist()})
        ratios.append(r.predicted_yield().value)
    assert np.std(ratios) == pytest.approx(fit2.predicted_yield().error_shape, rel=0.15)


def test_pdf_is_normalised_and_close_to_truth(sim, fit2):
    edges = [sim.signal_region.low, sim.signal_region.high]
    total = integrate.quad(lambda m: float(fit2.pdf(m)), *MJJ_RANGE, points=edges, epsabs=0, epsrel=1e-12)
    assert total[0] == pytest.approx(1.0, abs=1e-10)
    m = np.linspace(*MJJ_RANGE, 200)
    assert np.max(np.abs(fit2.log_pdf(m) - sim.log_pb_mjj(m))) < 0.02  # a 1M-event fit
    assert fit2.pdf(np.array([2000.0, 7500.0])).tolist() == [0.0, 0.0]
    # cdf: consistent with its density and exact at the ends
    assert fit2.cdf(np.array(MJJ_RANGE)).tolist() == pytest.approx([0.0, 1.0], abs=1e-14)
    a, b = 3123.4, 4567.8
    assert fit2.cdf(b) - fit2.cdf(a) == pytest.approx(
        integrate.quad(lambda v: float(fit2.pdf(v)), a, b, epsabs=0, epsrel=1e-13)[0], rel=1e-11
    )


def test_inverse_cdf_precision(fit2):
    u = np.array([1e-9, 0.01, 0.3, 0.5, 0.77, 0.999])
    m = fit2.inverse_cdf(u)
    for ui, mi in zip(u, m, strict=True):
        ref = optimize.brentq(lambda v, ui=ui: fit2.cdf(v) - ui, *MJJ_RANGE, xtol=1e-10, rtol=1e-15)
        assert abs(mi - ref) < 1e-6
    with pytest.raises(InputError):
        fit2.inverse_cdf(np.array([1.5]))


def test_sample_sr_follows_fitted_shape(sim, fit2):
    sr = sim.signal_region
    m = fit2.sample_sr(50_000, seed=7)
    assert m.shape == (50_000,)
    assert np.all(sr.contains(m))
    c_lo, c_hi = fit2.cdf(np.array([sr.low, sr.high]))
    ks = stats.kstest(m, lambda v: (fit2.cdf(v) - c_lo) / (c_hi - c_lo))
    assert ks.pvalue > 1e-3
    np.testing.assert_array_equal(m[:100], fit2.sample_sr(100, seed=7)[:100])
    assert fit2.sample_sr(0, seed=1).shape == (0,)


def test_to_dict_from_dict_round_trip(fit2):
    text = json.dumps(fit2.to_dict())
    back = MjjFitResult.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.values, fit2.values)
    np.testing.assert_array_equal(back.covariance, fit2.covariance)
    assert back.to_dict() == fit2.to_dict()
    assert str(back) == str(fit2)
    assert back.predicted_yield() == fit2.predicted_yield()
    m = np.linspace(3300, 3700, 11)
    np.testing.assert_array_equal(back.pdf(m), fit2.pdf(m))
    with pytest.raises(InputError):
        MjjFitResult.from_dict({"kind": "something else"})
    with pytest.raises(InputError):
        MjjFitResult.from_dict({"kind": "gbi_zfit.MjjFitResult", "values": [1.0]})


def test_str_is_readable(fit2):
    text = str(fit2)
    assert "p1 =" in text
    assert "p2 =" in text
    assert "(valid)" in text
    assert "predicted SR background" in text
    assert f"{fit2.n_sb:,} sideband events" in text


def test_zfit_pdf_of_result(fit2):
    pdf = fit2.zfit_pdf()
    m = np.linspace(2700.0, 6900.0, 9)
    np.testing.assert_allclose(np.asarray(pdf.pdf(m)), fit2.pdf(m), rtol=1e-10)
    assert not any(p.floating for p in pdf.get_params(floating=None))


# ---------------------------------------------------------------------------------------------------
# three parameters, repeated fits, other inputs


def test_three_parameter_fit_and_repeated_fits(sim, background):
    mjj = background.mjj[:200_000]
    fit = MjjFit(sim.signal_region, n_params=3)
    r3 = fit.fit(mjj)
    assert r3.valid
    assert r3.param_names == ("p1", "p2", "p3")
    d = r3.values - np.array([10.0, 5.0, 0.0])
    assert d @ np.linalg.solve(r3.covariance, d) < stats.chi2(3).ppf(stats.chi2(1).cdf(9.0))
    n_true = sim.signal_region.contains(mjj).sum()
    assert abs(r3.n_sr - n_true) < 2.0 * np.hypot(r3.n_sr_error, np.sqrt(n_true))
    # a second fit in the same process (fresh zfit objects, unique parameter names) gives the same answer
    again = fit.fit(mjj)
    np.testing.assert_allclose(again.values, r3.values, rtol=1e-6)
    assert again.n_sr == pytest.approx(r3.n_sr, rel=1e-8)


def test_accepts_events_and_tuple_region(sim):
    events = sim.sample_background(60_000, seed=3)
    r_events = fit_sidebands(events, (3300.0, 3700.0))
    r_array = fit_sidebands(events.mjj, SignalRegion(3300.0, 3700.0))
    np.testing.assert_allclose(r_events.values, r_array.values, rtol=1e-6)
    assert r_events.diagnostics["n_input"] == 60_000


def test_events_outside_the_range_are_ignored(sim):
    mjj = sim.sample_background(60_000, seed=4).mjj
    extra = np.concatenate([mjj, [1000.0, 2000.0, 8000.0]])
    a, b = fit_sidebands(mjj), fit_sidebands(extra)
    assert a.n_sb == b.n_sb
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------
# errors


def test_empty_sidebands_raise_region_error(sim):
    sr_only = sim.sample_background_sr(1000, seed=1).mjj
    with pytest.raises(RegionError, match="sidebands"):
        fit_sidebands(sr_only, sim.signal_region)


def test_bad_values_raise_input_error(sim):
    mjj = sim.sample_background(10_000, seed=5).mjj
    with pytest.raises(InputError, match="non-finite"):
        fit_sidebands(np.concatenate([mjj, [np.nan]]))
    with pytest.raises(InputError, match="non-finite"):
        fit_sidebands(np.concatenate([mjj, [np.inf]]))
    with pytest.raises(InputError, match="TeV"):
        fit_sidebands(mjj / 1000.0)
    with pytest.raises(InputError, match="1-d"):
        fit_sidebands(mjj.reshape(-1, 2))


def test_bad_settings_raise():
    with pytest.raises(ConfigError):
        MjjFit(n_params=4)
    with pytest.raises(ConfigError):
        MjjFit(mjj_range=(7000.0, 2650.0))
    with pytest.raises(RegionError):
        MjjFit((2000.0, 3000.0))  # SR not inside the fit range
    with pytest.raises(RegionError):
        MjjFit("SR")


def test_fit_failure_raises_fit_error_with_diagnostics(sim):
    mjj = sim.sample_background(20_000, seed=6).mjj
    with pytest.raises(FitError) as info:
        fit_sidebands(mjj, maxiter=3, n_retries=1, seed=1)
    diag = info.value.diagnostics
    assert len(diag["attempts"]) == 2
    assert all(not a["valid"] for a in diag["attempts"])
    assert isinstance(info.value, GBIError)
