"""hepstats Discovery / UpperLimit / ConfidenceInterval on our losses, checked against our own numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zfit
from hepstats.hypotests import Discovery, UpperLimit
from hepstats.hypotests.calculators import AsymptoticCalculator
from hepstats.hypotests.parameters import POI, POIarray
from scipy.stats import norm

from gbi_zfit.errors import InputError
from gbi_zfit.inference import SignalFitter
from gbi_zfit.inference import hepstats_adapter as ha
from gbi_zfit.models import OracleRatio
from gbi_zfit.pdf.ratio import RatioPDF

THETA = (300.0, 150.0)


@pytest.fixture(scope="module")
def oracle(sim):
    return OracleRatio(sim)


@pytest.fixture(scope="module")
def reference(sim):
    return sim.sample_background_sr(100_000, seed=3).features()


def _fitter(sim, oracle, reference, s_over_sqrt_b, seed, n_background=100_000):
    data = sim.make_dataset(
        s_over_sqrt_b=s_over_sqrt_b, mx=THETA[0], my=THETA[1], n_background=n_background, seed=seed
    )
    fitter = SignalFitter(oracle, sim.signal_region.signal_region(data), reference=reference)
    fitter.set_values({"mu": 0.01, "mx": THETA[0], "my": THETA[1]})
    return fitter


@pytest.fixture(scope="module")
def fitter3(sim, oracle, reference):
    """S/√B = 3 (≈12k SR events): Z ≈ 20 at the true θ."""
    return _fitter(sim, oracle, reference, 3.0, 1)


@pytest.fixture(scope="module")
def fitter05(sim, oracle, reference):
    """S/√B = 0.5: μ̂ ≈ 4σ, the limit sits well above the expected one."""
    return _fitter(sim, oracle, reference, 0.5, 2)


@pytest.fixture(scope="module")
def fitter_weak(sim, oracle, reference):
    """S/√B = 0.1, ≈6k SR events (seed chosen so that p ≈ 0.1): a p-value that 50 toys can resolve."""
    return _fitter(sim, oracle, reference, 0.1, 24, n_background=50_000)


def _loss_at(loss, param, value):
    param.set_value(value)
    return float(loss.value())


def _state(fitter):
    return {n: (float(p.value()), bool(p.floating)) for n, p in fitter.params.items()}


# --------------------------------------------------------------------------------------------------
def test_calibrated_reference_weights(oracle, reference):
    lr = oracle.log_ratio_numpy(reference, *THETA)
    v = ha.calibrated_reference_weights(lr)
    assert (v > 0).all()
    assert v.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.sum(v * np.exp(lr)) == pytest.approx(1.0, abs=1e-9)
    # a small tilt: the reference was already a fair background sample
    assert np.max(v) * len(v) < 10
    np.testing.assert_allclose(ha.calibrated_reference_weights(np.zeros(5)), 0.2)
    with pytest.raises(InputError, match="one side"):
        ha.calibrated_reference_weights(np.array([1.0, 2.0, 3.0]))
    with pytest.raises(InputError, match="finite"):
        ha.calibrated_reference_weights(np.array([0.0, np.nan]))


def test_unbinned_asimov_refits_its_own_mu(fitter3):
    """The Asimov set is the weighted reference (Σw = N, unbinned UnbinnedNLL) and μ̂_A = μ' exactly."""
    with ha._hypotest_state(fitter3, THETA, fix_theta=True):
        calc = ha.UnbinnedAsymptoticCalculator(fitter3.loss, fitter3.minimizer)
        poi = POI(fitter3.mu, 0.02)
        (data,) = calc.asimov_dataset(poi)
        assert data.has_weights
        assert int(data.nevents) == len(fitter3.pdf.reference)
        assert float(np.sum(data.weights)) == pytest.approx(float(fitter3.data.nevents), rel=1e-9)
        loss = calc.asimov_loss(poi)
        assert type(loss) is zfit.loss.UnbinnedNLL
        assert loss.data[0] is data
        # its NLL is stationary at μ' (parabola through μ' ± δ, σ_μ ≈ 0.002): it fits back to μ'
        delta = 1e-4
        f_lo, f_0, f_hi = (_loss_at(loss, fitter3.mu, m) for m in (0.02 - delta, 0.02, 0.02 + delta))
        curvature = f_hi - 2 * f_0 + f_lo
        assert curvature > 0
        vertex = 0.02 - delta * (f_hi - f_lo) / (2 * curvature)
        assert vertex == pytest.approx(0.02, abs=1e-5)
        # the calculator's background-only q_A(μ) is our numpy one (same construction, no binning)
        mus = np.array([0.001, 0.002, 0.004])
        qalt = calc.qalt(
            POIarray(fitter3.mu, mus), POI(fitter3.mu, 0.0), onesided=True, onesideddiscovery=False
        )
        q_a = ha._asimov_q_background(fitter3, fitter3.pdf.reference, calibrate=True)
        np.testing.assert_allclose(qalt, [q_a(m) for m in mus], rtol=1e-6)
        assert (qalt > 0).all()
    # without a reference sample there is no Asimov data set
    bare = RatioPDF(fitter3.space, fitter3.ratio_model, fitter3.mu, fitter3.mx, fitter3.my)
    with pytest.raises(InputError, match="reference"):
        ha.UnbinnedAsymptoticCalculator(zfit.loss.UnbinnedNLL(bare, fitter3.data), fitter3.minimizer)


def test_discovery_asymptotic_matches_own_q0(fitter3):
    """hepstats Discovery at fixed θ = √q0 of our own fixed-θ fit (≤ 5 %; in fact to 1e-6)."""
    before = _state(fitter3)
    _, z_own = ha.profile_q0(fitter3, theta=THETA)
    assert z_own > 10  # S/√B = 3 with the oracle is a very strong signal
    p, z = ha.discovery(fitter3, theta=THETA)
    assert z == pytest.approx(z_own, rel=0.05)
    assert z == pytest.approx(z_own, rel=1e-4)
    assert p == pytest.approx(norm.sf(z_own), rel=1e-3)
    assert _state(fitter3) == before  # values and floating flags restored
    # stock hepstats: p = 1 − Φ(√q0) rounds to 0 and Z = Φ⁻¹(1 − p) to inf (or, if fixed upstream, agrees)
    with ha._hypotest_state(fitter3, THETA, fix_theta=True):
        stock = AsymptoticCalculator(ha._best_fit(fitter3), fitter3.minimizer)
        _, z_stock = Discovery(stock, POI(fitter3.mu, 0.0)).result(printlevel=0)
    assert z_stock == math.inf or z_stock == pytest.approx(z_own, rel=1e-3)


def test_discovery_with_floating_theta_is_local_maximum(fitter3):
    """With θ floating, q0 is maximised over θ as well: Z ≥ the fixed-θ Z (local significance at θ̂)."""
    _, z_fixed = ha.profile_q0(fitter3, theta=THETA)
    _, z_float = ha.discovery(fitter3)
    assert z_float >= z_fixed - 1e-3
    assert z_float < 1.2 * z_fixed


@pytest.fixture(scope="module")
def limits05(fitter05):
    """Upper limits on the S/√B = 0.5 data set: ours, the adapter's, and hepstats' stock UpperLimit."""
    before = _state(fitter05)
    out = {
        "own_clsb": ha.profile_upper_limit(fitter05, theta=THETA, cls=False),
        "own_cls": ha.profile_upper_limit(fitter05, theta=THETA, cls=True),
        "adapter_cls": ha.upper_limit(fitter05, theta=THETA, n_scan=20),
    }
    with ha._hypotest_state(fitter05, THETA, fix_theta=True):
        calc = ha.UnbinnedAsymptoticCalculator(ha._best_fit(fitter05), fitter05.minimizer)
        poinull = POIarray(fitter05.mu, np.linspace(0.0, 0.012, 16))
        poialt = POI(fitter05.mu, 0.0)
        out["np2_clsb"] = ha.UpperLimitNP2(calc, poinull, poialt).upperlimit(alpha=0.05, CLs=False)
        out["stock_clsb"] = UpperLimit(calc, poinull, poialt).upperlimit(alpha=0.05, CLs=False, printlevel=0)
    out["state_restored"] = _state(fitter05) == before
    return out


def test_upper_limit_matches_profile_likelihood(limits05):
    """hepstats CLs+b and CLs limits (unbinned Asimov) vs our own profile-likelihood limits (≤ 10 %)."""
    assert limits05["state_restored"]
    cls, clsb = limits05["adapter_cls"], limits05["np2_clsb"]
    assert cls["observed"] == pytest.approx(limits05["own_cls"], rel=0.10)
    assert clsb["observed"] == pytest.approx(limits05["own_clsb"], rel=0.10)
    assert cls["observed"] >= limits05["own_clsb"] * (1 - 1e-3)  # CLs ≥ CLs+b (up to the spline)
    # expected bands are ordered, and the observed limit is above them (μ̂ ≈ 4σ on this data set)
    bands = [cls[k] for k in ("expected_m2", "expected_m1", "expected", "expected_p1", "expected_p2")]
    assert all(b is not None for b in bands)
    assert np.all(np.diff(bands) > 0)
    assert cls["observed"] > cls["expected_p2"]


def test_stock_upperlimit_numpy2_float_bug_is_worked_around(limits05):
    """hepstats' UpperLimit returns None for a limit with a single root under numpy ≥ 2; ours does not."""
    ours, stock = limits05["np2_clsb"], limits05["stock_clsb"]
    assert isinstance(ours["observed"], float)
    assert isinstance(ours["expected"], float)
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":
        assert stock["observed"] is None or stock["observed"] == pytest.approx(ours["observed"])
    else:
        assert stock["observed"] == pytest.approx(ours["observed"])


def test_confidence_interval_brackets_minos(fitter3):
    """ConfidenceInterval (asymptotic) at 1σ reproduces the MINOS interval edges within 10 % of the errors."""
    res = fitter3.fit({"mu": 0.02, "mx": THETA[0], "my": THETA[1]}, fix=("mx", "my"), minos=("mu",))
    mu_hat, (lo, hi) = res.values["mu"], res.minos["mu"]
    ci = ha.confidence_interval(fitter3, theta=THETA, alpha=2 * norm.sf(1.0))
    assert ci["observed"] == pytest.approx(mu_hat, abs=0.05 * hi)
    assert ci["lower"] == pytest.approx(mu_hat + lo, abs=0.10 * abs(lo))
    assert ci["upper"] == pytest.approx(mu_hat + hi, abs=0.10 * hi)
    # hepstats' default α = 0.32 is a hair narrower than 1σ but still brackets the MINOS interval at 10 %
    ci32 = ha.confidence_interval(fitter3, theta=THETA)
    assert ci32["lower"] <= mu_hat + 0.9 * lo
    assert ci32["upper"] >= mu_hat + 0.9 * hi


@pytest.mark.slow  # ≈ 35 s: toys through hepstats' FrequentistCalculator
def test_frequentist_discovery_smoke(fitter_weak):
    """50 toys resampled from the reference under μ = 0: p-value consistent with the asymptotic one."""
    p_asym, z_asym = ha.discovery(fitter_weak, theta=THETA)
    assert 0.01 < p_asym < 0.3
    assert z_asym == pytest.approx(ha.profile_q0(fitter_weak, theta=THETA)[1], rel=1e-4)
    zfit.settings.set_seed(7)
    p_freq, z_freq = ha.discovery(fitter_weak, theta=THETA, calculator="frequentist", ntoys=50)
    assert 0.0 <= p_freq <= 1.0
    assert abs(p_freq - p_asym) < 3 * math.sqrt(p_asym * (1 - p_asym) / 50) + 0.03
    assert z_freq > 0


def test_input_errors(fitter05):
    before = _state(fitter05)
    with pytest.raises(InputError, match="calculator"):
        ha.discovery(fitter05, theta=THETA, calculator="bayesian")
    with pytest.raises(InputError, match="alpha"):
        ha.upper_limit(fitter05, theta=THETA, alpha=0.7)
    with pytest.raises(InputError, match="theta"):
        ha.upper_limit(fitter05, theta=(300.0,))
    with pytest.raises(InputError, match="ntoys"):
        ha.discovery(fitter05, theta=THETA, calculator="frequentist", ntoys=0)
    assert _state(fitter05) == before


@pytest.mark.slow
def test_frequentist_upper_limit_close_to_asymptotic(fitter05):
    """CLs+b limit from toys (short scan, 30 toys per point) within 15 % of the asymptotic one."""
    zfit.settings.set_seed(11)
    own = ha.profile_upper_limit(fitter05, theta=THETA, cls=False)
    scan = np.linspace(0.5 * own, 1.5 * own, 6)
    freq = ha.upper_limit(fitter05, theta=THETA, calculator="frequentist", ntoys=30, scan=scan, cls=False)
    assert freq["observed"] == pytest.approx(own, rel=0.15)
