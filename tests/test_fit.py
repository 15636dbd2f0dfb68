"""Oracle fits of (μ, mX, mY) through zfit's Minuit: recovery of the truth, conventions, results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gbi_zfit.errors import FitError, InputError, ParameterRangeError
from gbi_zfit.inference import FitResult, SignalFitter
from gbi_zfit.models import OracleRatio

THETA = (300.0, 150.0)


@pytest.fixture(scope="module")
def oracle(sim):
    return OracleRatio(sim)


def _sr_data(sim, s_over_sqrt_b, seed, n_background=350_000):
    data = sim.make_dataset(
        s_over_sqrt_b=s_over_sqrt_b, mx=THETA[0], my=THETA[1], n_background=n_background, seed=seed
    )
    sr = sim.signal_region.signal_region(data)
    return sr, {"mu": float(sr.label.mean()), "mx": THETA[0], "my": THETA[1]}


@pytest.mark.parametrize(("s_over_sqrt_b", "seed"), [(1.0, 3), (3.0, 4)])
def test_oracle_fit_recovers_truth(sim, oracle, s_over_sqrt_b, seed):
    """μ within 2σ (HESSE and MINOS) of the truth, θ within 10 %, valid minimum; multi-start from a grid."""
    sr, truth = _sr_data(sim, s_over_sqrt_b, seed)
    res = SignalFitter(oracle, sr).fit_multistart(minos=("mu",), truth=truth)
    assert res.valid
    assert res.converged
    assert abs(res.values["mu"] - truth["mu"]) < 2 * res.errors["mu"]
    lo, hi = res.minos["mu"]
    assert res.values["mu"] + 2 * lo < truth["mu"] < res.values["mu"] + 2 * hi
    assert lo < 0 < hi
    assert abs(res.values["mx"] / THETA[0] - 1) < 0.10
    assert abs(res.values["my"] / THETA[1] - 1) < 0.10
    # MINOS and HESSE agree for a well-measured μ
    assert (hi - lo) / 2 == pytest.approx(res.errors["mu"], rel=0.15)
    # three starts, minus those next to a minimum an earlier start found (same basin)
    assert len(res.info["starts"]) + len(res.info["skipped_starts"]) == 3
    assert len(res.info["starts"]) >= 1


def test_fast_and_zfit_backends_agree(sim, oracle):
    """The fast engine and zfit's UnbinnedNLL give the same fit: μ̂ within 0.1σ, θ̂ within 0.2σ."""
    sr, truth = _sr_data(sim, 2.0, 12, n_background=250_000)
    start = {"mu": 0.01, "mx": 280.0, "my": 160.0}
    fast = SignalFitter(oracle, sr).fit(start, truth=truth)
    exact = SignalFitter(oracle, sr, backend="zfit").fit(start, truth=truth)
    assert fast.valid
    assert exact.valid
    assert fast.nll == pytest.approx(exact.nll, abs=2e-3)
    for name, tol in (("mu", 0.1), ("mx", 0.2), ("my", 0.2)):
        assert abs(fast.values[name] - exact.values[name]) < tol * exact.errors[name]
        assert fast.errors[name] == pytest.approx(exact.errors[name], rel=0.05)
    assert fast.info["backend"] == "fast"
    assert exact.info["backend"] == "zfit"


def test_extended_likelihood_with_constrained_background(sim, oracle):
    """ν_B profiled with a Gaussian constraint; μ still recovered, and the count adds information."""
    sr, truth = _sr_data(sim, 3.0, 13, n_background=250_000)
    n_b = len(sr) - int(sr.label.sum())
    plain = SignalFitter(oracle, sr).fit({"mu": 0.01, "mx": 300.0, "my": 150.0}, fix=("mx", "my"))
    ext = SignalFitter(oracle, sr, background_yield=(n_b, 0.2 * np.sqrt(n_b))).fit(
        {"mu": 0.01, "mx": 300.0, "my": 150.0, "nu_b": n_b}, fix=("mx", "my")
    )
    assert ext.valid
    assert set(ext.values) == {"mu", "mx", "my", "nu_b"}
    assert abs(ext.values["mu"] - truth["mu"]) < 2 * ext.errors["mu"]
    assert ext.errors["mu"] < plain.errors["mu"]  # a tight background prediction sharpens μ
    assert ext.values["nu_b"] == pytest.approx(n_b, rel=0.01)
    with pytest.raises(InputError, match="fast"):
        SignalFitter(oracle, sr, backend="zfit", background_yield=(n_b, 10.0))


def test_mirror_start_reports_canonical_order(sim, oracle):
    """Starting with mX < mY converges to the mirror image and is reported as mX ≥ mY."""
    sr, truth = _sr_data(sim, 3.0, 7, n_background=200_000)
    fitter = SignalFitter(oracle, sr)
    res = fitter.fit({"mu": 0.02, "mx": 160.0, "my": 280.0}, truth=truth)
    assert res.valid
    assert res.values["mx"] >= res.values["my"]
    assert res.values["mx"] == pytest.approx(300, rel=0.1)
    assert float(fitter.mx.value()) == res.values["mx"]
    # the covariance was permuted with the values: var(mx) > var(my) as for a direct fit
    direct = fitter.fit({"mu": 0.02, "mx": 280.0, "my": 160.0})
    assert direct.nll == pytest.approx(res.nll, abs=1e-3)
    np.testing.assert_allclose(res.covariance, direct.covariance, rtol=0.05, atol=1e-9)


def test_fixed_theta_fit_and_background_only_nll(sim, oracle):
    sr, truth = _sr_data(sim, 3.0, 8, n_background=200_000)
    fitter = SignalFitter(oracle, sr)
    res = fitter.fit({"mu": 0.01, "mx": 300.0, "my": 150.0}, fix=("mx", "my"))
    assert res.floating == ("mu",)
    assert set(res.errors) == {"mu"}
    assert res.values["mx"] == 300.0
    assert abs(res.values["mu"] - truth["mu"]) < 2 * res.errors["mu"]
    # NLL at μ = 0 is exactly 0 (Λ_WS = 1): the test statistic is 2 * (0 - nll_min) > 0
    assert fitter.nll({"mu": 1e-12}) == pytest.approx(0.0, abs=1e-6)
    assert -2 * res.nll > 9  # a clear signal at S/√B = 3


def test_result_round_trip_and_str(sim, oracle, tmp_path):
    sr, truth = _sr_data(sim, 3.0, 9, n_background=100_000)
    res = SignalFitter(oracle, sr).fit({"mu": 0.02, "mx": 290.0, "my": 160.0}, truth=truth)
    path = tmp_path / "r.json"
    res.to_json(path)
    again = FitResult.from_json(path)
    assert again == res
    assert json.loads(path.read_text())["values"]["mu"] == res.values["mu"]
    text = str(res)
    assert "valid" in text
    assert "mu" in text
    assert "300.0" in text  # truth column


def test_invalid_fit_raises_fit_error_when_required(sim, oracle):
    """A call budget far too small: the result is invalid, and FitError carries Minuit's diagnostics."""
    sr, _ = _sr_data(sim, 1.0, 10, n_background=50_000)
    fitter = SignalFitter(oracle, sr)
    start = {"mu": 0.3, "mx": 600.0, "my": 30.0}
    res = fitter.fit(start, ncall=3, retries=0)
    assert not res.valid
    with pytest.raises(FitError, match="valid minimum") as info:
        fitter.fit(start, ncall=3, retries=0, require_valid=True)
    assert "edm" in info.value.diagnostics
    assert "minuit" in info.value.diagnostics
    # with retries and no call limit the same start converges
    assert fitter.fit(start).valid


def test_bad_arguments(sim, oracle, background_sr):
    with pytest.raises(ParameterRangeError):
        SignalFitter(oracle, background_sr, mu_bounds=(0.5, 0.1))
    fitter = SignalFitter(oracle, background_sr.select(np.arange(2000)))
    with pytest.raises(InputError, match="unknown parameter"):
        fitter.fit({"sigma": 1.0})
    with pytest.raises(ParameterRangeError, match="limits"):
        fitter.fit({"mx": 900.0})
    with pytest.raises(InputError, match="nothing to fit"):
        fitter.fit(fix=("mu", "mx", "my"))
    bad = background_sr.features()[:100].copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        SignalFitter(oracle, bad)
    with pytest.raises(InputError, match="shape"):
        SignalFitter(oracle, bad[:, :4])


def test_retries_after_invalid_migrad_reach_strategy_two(sim, oracle):
    """An invalid first MIGRAD (tiny call budget) is retried, up to strategy 2, without crashing."""
    sr, _ = _sr_data(sim, 1.0, 10, n_background=50_000)
    res = SignalFitter(oracle, sr).fit({"mu": 0.3, "mx": 600.0, "my": 30.0}, ncall=3, retries=2)
    assert res.info["retries"] == 2
