"""Profile-likelihood scans, Fisher information and discovery q0 on the oracle (exact Λ*)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import chi2

from gbi_zfit.data.events import Events
from gbi_zfit.errors import InputError
from gbi_zfit.inference import SignalFitter
from gbi_zfit.inference.engine import RatioNLL
from gbi_zfit.inference.fisher import (
    Discovery,
    FisherInfo,
    discovery_q0,
    expected_fisher,
    nll_hessian,
    observed_fisher,
)
from gbi_zfit.inference.profile import (
    OpenIntervalWarning,
    ProfileScan,
    ProfileScan2D,
    profile_1d,
    profile_2d,
)
from gbi_zfit.models import OracleRatio
from gbi_zfit.plotting.profile import plot_profile_1d, plot_profile_2d

THETA = (300.0, 150.0)
N_BACKGROUND = 300_000  # ≈ 35k SR events


@pytest.fixture(scope="module")
def oracle(sim):
    return OracleRatio(sim)


def _case(sim, oracle, s_over_sqrt_b, seed):
    data = sim.make_dataset(
        s_over_sqrt_b=s_over_sqrt_b, mx=THETA[0], my=THETA[1], n_background=N_BACKGROUND, seed=seed
    )
    sr = sim.signal_region.signal_region(data)
    truth = {"mu": float(sr.label.mean()), "mx": THETA[0], "my": THETA[1]}
    return SignalFitter(oracle, sr), truth


@pytest.fixture(scope="module")
def case(sim, oracle):
    """S/√B = 2.5 at θ = (300, 150) and the best fit (MINOS for μ)."""
    fitter, truth = _case(sim, oracle, 2.5, seed=3)
    best = fitter.fit(truth, minos=("mu",), truth=truth)
    assert best.valid
    return fitter, best, truth


@pytest.fixture(scope="module")
def mu_scan(case):
    fitter, best, _ = case
    return profile_1d(fitter, "mu", best=best, n_points=15, progress=False)


@pytest.fixture(scope="module")
def scan2d(case):
    fitter, best, _ = case
    ex, ey = best.errors["mx"], best.errors["my"]
    mx = best.values["mx"] + np.linspace(-3, 3, 9) * ex
    my = best.values["my"] + np.linspace(-3, 3, 9) * ey
    return profile_2d(fitter, mx, my, best=best, progress=False)


@pytest.fixture(scope="module")
def reference(sim, oracle):
    """SR background reference sample (300k) as a reusable engine."""
    return RatioNLL(oracle, sim.sample_background_sr(300_000, seed=21).features("paws"))


# ------------------------------------------------------------------------------------------------------
# 1-D scans
# ------------------------------------------------------------------------------------------------------
def test_mu_profile_interval_matches_minos(case, mu_scan):
    _, best, _ = case
    assert mu_scan.valid.all()
    assert len(mu_scan.values) == 15
    assert mu_scan.two_delta_nll.min() > -2e-3  # the best fit is the minimum
    # default grid: best ± 3 HESSE errors
    assert mu_scan.values[0] == pytest.approx(best.values["mu"] - 3 * best.errors["mu"])
    assert mu_scan.values[-1] == pytest.approx(best.values["mu"] + 3 * best.errors["mu"])
    lo, hi = mu_scan.interval(0.683)
    m_lo, m_hi = best.values["mu"] + np.array(best.minos["mu"])
    width = hi - lo
    assert abs(lo - m_lo) < 0.05 * width
    assert abs(hi - m_hi) < 0.05 * width
    lo95, hi95 = mu_scan.interval(0.95)
    assert lo95 < lo < best.values["mu"] < hi < hi95
    assert mu_scan.profiled["mx"].shape == (15,)
    assert (mu_scan.profiled["mx"] >= mu_scan.profiled["my"]).all()
    text = str(mu_scan)
    assert "68.3% CL" in text
    assert "95.0% CL" in text


def test_mu_profile_reaches_zero_where_theta_is_unidentified(case):
    """At μ = 0 the NLL is 0 whatever θ: 2ΔNLL(0) = −2 NLL_min, the discovery q0."""
    fitter, best, _ = case
    scan = profile_1d(fitter, "mu", values=[0.0, 0.5 * best.values["mu"]], best=best, progress=False)
    assert scan.valid.all()
    assert scan.two_delta_nll[0] == pytest.approx(-2 * best.nll, abs=2e-3)
    assert 0 < scan.two_delta_nll[1] < scan.two_delta_nll[0]
    assert scan.profiled["mx"][0] >= 85.0  # θ placed where the low-mass penalty vanishes


@pytest.mark.parametrize("name", ["mx", "my"])
def test_mass_profiles_contain_truth_and_are_hesse_sized(case, name):
    fitter, best, truth = case
    scan = profile_1d(fitter, name, best=best, n_points=11, progress=False)
    assert scan.valid.all()
    lo, hi = scan.interval(0.683)
    lo95, hi95 = scan.interval(0.95)
    assert lo < best.values[name] < hi
    assert lo95 < truth[name] < hi95
    assert (hi - lo) / 2 == pytest.approx(best.errors[name], rel=0.3)
    # canonical order along the scan: mY ≤ mX whichever mass is fixed
    mx, my = (scan.values, scan.profiled["my"]) if name == "mx" else (scan.profiled["mx"], scan.values)
    assert (my <= mx + 1e-9).all()


def test_mass_scan_keeps_canonical_order(case):
    """Scanning mX below mY's best value keeps mY ≤ mX instead of jumping to the mirror image."""
    fitter, best, _ = case
    values = [110.0, 130.0, 145.0, 200.0]
    scan = profile_1d(fitter, "mx", values=values, best=best, progress=False)
    assert (scan.profiled["my"] <= scan.values + 1e-9).all()
    # without the constraint the fit at mX = 130 would find the mirror of θ ≈ (300, 130): far lower NLL
    from gbi_zfit.inference.profile import _constrained_minimum

    mirror = _constrained_minimum(fitter, {"mu": best.values["mu"], "my": 300.0}, {"mx": 130.0})
    assert mirror.values["my"] > 200
    assert 2 * (mirror.nll - scan.nll_min) < scan.two_delta_nll[1] - 10
    assert scan.two_delta_nll[1] > 25


def test_profile_input_errors(case):
    fitter, best, _ = case
    with pytest.raises(InputError, match="unknown parameter"):
        profile_1d(fitter, "mz", best=best, progress=False)
    with pytest.raises(InputError, match="within its limits"):
        profile_1d(fitter, "mx", values=[10.0, 300.0], best=best, progress=False)
    with pytest.raises(InputError, match="mx ≥ my"):
        profile_2d(fitter, [100.0, 120.0], [200.0, 250.0], best=best, progress=False)


# ------------------------------------------------------------------------------------------------------
# ProfileScan bookkeeping (no fits)
# ------------------------------------------------------------------------------------------------------
def _parabola_scan(values, best=1.0, sigma=0.5, limits=(-10.0, 10.0)):
    values = np.asarray(values, float)
    return ProfileScan(
        parameter="mu",
        values=values,
        two_delta_nll=((values - best) / sigma) ** 2,
        profiled={"mx": np.full(len(values), 300.0)},
        valid=np.ones(len(values), bool),
        best_value=best,
        best_values={"mu": best, "mx": 300.0, "my": 150.0},
        nll_min=-10.0,
        limits=limits,
    )


def test_interval_of_a_parabola_is_exact_and_open_ends_are_reported():
    scan = _parabola_scan(np.linspace(-1, 3, 9))
    lo, hi = scan.interval(0.683)
    assert lo == pytest.approx(0.5, abs=1e-3)  # linear in √(2ΔNLL) is exact for a parabola
    assert hi == pytest.approx(1.5, abs=1e-3)
    lo95, _ = scan.interval(0.95)
    assert lo95 == pytest.approx(1 - 0.5 * math.sqrt(chi2.ppf(0.95, 1)), abs=1e-3)
    short = _parabola_scan(np.linspace(0.9, 1.6, 8))
    with pytest.warns(OpenIntervalWarning, match="lower side"):
        lo, hi = short.interval(0.683)
    assert lo is None
    assert hi == pytest.approx(1.5, abs=1e-3)
    assert "open" in str(short)
    # a scan that reaches the parameter's limit ends the interval there (e.g. μ ≥ 0)
    bounded = _parabola_scan(np.linspace(0.8, 3, 12), limits=(0.8, 5.0))
    assert bounded.interval(0.683)[0] == pytest.approx(0.8)
    assert scan.two_delta_nll_at(1.25) == pytest.approx(0.25, abs=1e-9)


def test_scan_round_trips_through_json(mu_scan, scan2d):
    again = ProfileScan.from_dict(json.loads(json.dumps(mu_scan.to_dict())))
    np.testing.assert_array_equal(again.two_delta_nll, mu_scan.two_delta_nll)
    assert again.interval(0.683) == mu_scan.interval(0.683)
    d2 = json.loads(json.dumps(scan2d.to_dict(), allow_nan=False))
    again2 = ProfileScan2D.from_dict(d2)
    np.testing.assert_array_equal(again2.two_delta_nll, scan2d.two_delta_nll)
    with pytest.raises(InputError, match="no fitter"):
        again2.contains(THETA)


# ------------------------------------------------------------------------------------------------------
# 2-D scans
# ------------------------------------------------------------------------------------------------------
def test_2d_region_contains_truth_and_contains_agrees_with_a_direct_fit(case, scan2d):
    fitter, best, _ = case
    assert scan2d.computed.all()  # the whole grid is canonical (mX ≥ mY)
    assert scan2d.valid.all()
    assert np.nanmin(scan2d.two_delta_nll) > -2e-3
    levels = scan2d.contour_levels()
    assert levels[0.683] == pytest.approx(2.2977, abs=1e-3)
    assert levels[0.95] == pytest.approx(5.9915, abs=1e-3)
    assert scan2d.contains(THETA, 0.95)
    for point in (THETA, (best.values["mx"] + 4 * best.errors["mx"], best.values["my"]), (300.0, 70.0)):
        direct = fitter.fit({"mu": best.values["mu"], "mx": point[0], "my": point[1]}, fix=("mx", "my"))
        t = 2 * (direct.nll - scan2d.nll_min)
        assert scan2d.two_delta_nll_at(point) == pytest.approx(t, abs=2e-3)
        for cl in (0.683, 0.95):
            assert scan2d.contains(point, cl) == (t < chi2.ppf(cl, 2))
    assert not scan2d.contains((300.0, 70.0))
    # mirror symmetry: (mY, mX) is the same θ
    assert scan2d.two_delta_nll_at(THETA[::-1]) == pytest.approx(scan2d.two_delta_nll_at(THETA), abs=1e-9)
    assert "canonical cells" in str(scan2d)


def test_2d_scan_is_canonical_and_mirrored_for_display(case):
    fitter, best, _ = case
    grid = np.array([100.0, 150.0, 250.0, 300.0, 350.0])
    scan = profile_2d(fitter, grid, grid, best=best, progress=False)
    assert scan.computed.sum() == 15  # only mX ≥ mY is fitted
    assert np.array_equal(scan.computed, grid[:, None] >= grid[None, :])
    full = scan.filled()
    assert np.isfinite(full).all()
    np.testing.assert_allclose(full, full.T)
    i, j = np.unravel_index(np.nanargmin(scan.two_delta_nll), full.shape)
    assert (grid[i], grid[j]) == THETA


# ------------------------------------------------------------------------------------------------------
# Fisher information
# ------------------------------------------------------------------------------------------------------
def test_exact_hessian_matches_finite_differences(case, reference):
    """The Asimov Hessian (nested autodiff) equals central differences of the exact gradient."""
    fitter, best, _ = case
    info = expected_fisher(fitter, reference, best)  # sets the reference's Asimov weights
    values = dict(best.values)
    h_exact = nll_hessian(reference, values)
    names = reference.param_names
    p0 = np.array([values[n] for n in names])
    steps = 1e-3 * np.array([best.errors[n] for n in names])
    h_fd = np.empty((3, 3))
    for j in range(3):
        dp = np.zeros(3)
        dp[j] = steps[j]
        h_fd[:, j] = (reference.grad(p0 + dp) - reference.grad(p0 - dp)) / (2 * steps[j])
    scale = np.sqrt(np.outer(np.diag(h_exact), np.diag(h_exact)))
    np.testing.assert_allclose(h_exact / scale, h_fd / scale, atol=1e-5)
    np.testing.assert_allclose(info.information, h_exact, rtol=1e-12)
    # and the second difference of the NLL value itself on the diagonal
    for j in range(3):
        dp = np.zeros(3)
        dp[j] = 0.1 * best.errors[names[j]]
        d2 = (reference(p0 + dp) - 2 * reference(p0) + reference(p0 - dp)) / dp[j] ** 2
        assert d2 == pytest.approx(h_exact[j, j], rel=1e-3)


def test_observed_and_expected_fisher_errors_agree(sim, case, reference):
    """On data drawn from the model, observed (HESSE) and expected (Asimov) errors agree within 20 %."""
    fitter, best, _ = case
    observed = observed_fisher(fitter, best)
    exact = observed_fisher(fitter, best, method="exact")
    expected = expected_fisher(fitter, reference, best)
    information, covariance, errors = expected
    assert information.shape == covariance.shape == (3, 3)
    np.testing.assert_allclose(information @ covariance, np.eye(3), atol=1e-8)
    signal = sim.sample_signal(50_000, best.values["mx"], best.values["my"], seed=22, region="sr")
    mixture = expected_fisher(fitter, sim.sample_background_sr(100_000, seed=23), best, signal=signal)
    for name in ("mu", "mx", "my"):
        assert observed.errors[name] == pytest.approx(best.errors[name], rel=1e-3)
        assert exact.errors[name] == pytest.approx(best.errors[name], rel=0.05)
        assert errors[name] == pytest.approx(observed.errors[name], rel=0.2)
        assert mixture.errors[name] == pytest.approx(observed.errors[name], rel=0.2)
    assert expected.info["signal_effective_events"] > 500
    again = FisherInfo.from_dict(json.loads(json.dumps(expected.to_dict())))
    np.testing.assert_array_equal(again.covariance, expected.covariance)
    assert "expected (Asimov)" in str(expected)


def test_expected_fisher_at_mu_zero_is_singular(case, reference):
    """θ is unidentified at μ = 0: no positive-definite information, NaN errors rather than nonsense."""
    fitter, best, _ = case
    info = expected_fisher(fitter, reference, {**best.values, "mu": 0.0})
    assert not info.positive_definite
    assert math.isnan(info.errors["mx"])
    assert "NOT positive definite" in str(info)


# ------------------------------------------------------------------------------------------------------
# discovery
# ------------------------------------------------------------------------------------------------------
def test_discovery_q0_definition_and_monotonic_in_injection(sim, oracle, case):
    """q0 = 2 (NLL(μ = 0) − NLL_min) ≥ 0, and Z grows with the injected S/√B."""
    fitter, best, _ = case
    floating = discovery_q0(fitter, best)
    # NLL(μ = 0) = 0 above the penalty threshold: q0 = −2 NLL_min
    assert floating.q0 == pytest.approx(-2 * best.nll, abs=1e-9)
    assert math.sqrt(floating.q0) == pytest.approx(floating.Z)
    assert floating.theta_floating
    assert "LOCAL" in str(floating)
    q0, z = floating
    assert (q0, z) == (floating.q0, floating.Z)
    assert Discovery.from_dict(json.loads(json.dumps(floating.to_dict()))) == floating
    # three injections into one SR background sample (nested signal samples)
    background = sim.sample_background_sr(35_000, seed=41)
    signal = sim.sample_signal(700, *THETA, seed=42, region="sr")
    zs, f = [], None
    for s_over_sqrt_b in (1.0, 2.0, 3.0):
        n_s = round(s_over_sqrt_b * math.sqrt(len(background)))
        x = Events.concatenate([background, signal.select(slice(0, n_s))]).features("paws")
        if f is None:
            f = SignalFitter(oracle, x)
        else:
            f.engine.set_data(x)  # the fast backend reuses its compiled engine for new data
        d = discovery_q0(f, None, theta=THETA)
        direct = f.fit({"mu": n_s / len(x), "mx": THETA[0], "my": THETA[1]}, fix=("mx", "my"))
        nll0 = f.engine([0.0, *THETA])
        assert nll0 == 0.0
        assert d.q0 >= 0
        assert d.q0 == pytest.approx(2 * (nll0 - direct.nll), abs=2e-3)
        assert not d.theta_floating
        zs.append(d.Z)
    assert zs[0] < zs[1] < zs[2]
    # floating θ maximises over θ: at least the local q0 at the true θ
    assert floating.q0 >= discovery_q0(fitter, best, theta=THETA).q0 - 1e-6


# ------------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------------
def test_profile_plots_are_written(tmp_path, case, mu_scan, scan2d):
    _, best, truth = case
    p1 = plot_profile_1d(mu_scan, tmp_path / "mu.png", truth=truth["mu"])
    p2 = plot_profile_2d(scan2d, tmp_path / "theta.png", truth=THETA, best=best.values)
    for p in (p1, p2):
        assert p.exists()
        assert p.stat().st_size > 10_000
