"""Spurious-signal systematic on μ: closed form for a parabolic profile, input errors, a real oracle fit
and ``gbi fit --spurious-signal``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gbi_zfit.cli import main
from gbi_zfit.errors import ConfigError, DataFileError, GBIError, InputError
from gbi_zfit.inference import FitResult, SignalFitter
from gbi_zfit.inference.fisher import discovery_q0
from gbi_zfit.inference.profile import OpenIntervalWarning, ProfileScan, chi2_threshold, profile_1d
from gbi_zfit.inference.systematics import (
    SpuriousSignal,
    SystematicResult,
    profile_with_spurious_signal,
)
from gbi_zfit.models import OracleRatio

CL68, CL95 = 0.683, 0.95


def _scan(values, two_delta_nll, *, best=1.0, limits=(0.0, 10.0)) -> ProfileScan:
    values = np.asarray(values, float)
    return ProfileScan(
        parameter="mu",
        values=values,
        two_delta_nll=np.asarray(two_delta_nll, float),
        profiled={"mx": np.full(len(values), 300.0), "my": np.full(len(values), 150.0)},
        valid=np.ones(len(values), bool),
        best_value=best,
        best_values={"mu": best, "mx": 300.0, "my": 150.0},
        nll_min=-10.0,
        limits=limits,
    )


def _parabola(values, best=1.0, sigma=0.5, limits=(0.0, 10.0)) -> ProfileScan:
    values = np.asarray(values, float)
    return _scan(values, ((values - best) / sigma) ** 2, best=best, limits=limits)


# ------------------------------------------------------------------------------------------------------
# closed form and identities (no fits)
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma_ss", [0.05, 0.3, 0.5, 1.2])
def test_parabolic_profile_gives_the_gaussian_convolution(sigma_ss):
    """p(m) = (m − μ̂)²/(2σ²) ⇒ σ_tot = √(σ² + σ_ss²), Z_sys = μ̂/σ_tot (with μ̂ = 1, σ = 0.5)."""
    scan = _parabola(np.linspace(0.0, 5.0, 21))
    res = profile_with_spurious_signal(scan, SpuriousSignal(sigma_ss))
    sigma_tot = math.hypot(0.5, sigma_ss)
    assert res.mu_hat == 1.0
    z_sys = res.Z
    assert z_sys == pytest.approx(1.0 / sigma_tot, rel=1e-3)
    assert res.q0 == pytest.approx(1.0 / sigma_tot**2, rel=1e-3)
    assert res.Z_stat == pytest.approx(2.0, rel=1e-6)
    for cl in (CL68, CL95):
        half = sigma_tot * math.sqrt(chi2_threshold(cl, 1))
        lo, hi = res.intervals[cl]
        assert hi == pytest.approx(1.0 + half, rel=1e-3)
        if 1.0 - half > 0:
            assert lo == pytest.approx(1.0 - half, rel=1e-3)
        else:  # the interval runs into μ ≥ 0
            assert lo == 0.0
            assert res.info["notes"][f"{cl:g}"]["lower"] == "at the parameter limit"
    # the curve on the scan grid: (μ − μ̂)²/σ_tot², minimum 0 at μ̂
    np.testing.assert_allclose(res.two_delta_nll, ((res.values - 1.0) / sigma_tot) ** 2, rtol=1e-3, atol=1e-9)
    assert res.two_delta_nll.min() >= 0.0
    below, above = res.errors(CL68)
    assert above == pytest.approx(sigma_tot * math.sqrt(chi2_threshold(CL68, 1)), rel=1e-3)
    assert below == pytest.approx(min(1.0, above), rel=1e-3)  # clipped at μ = 0
    assert res.errors(CL68, stat=True)[1] == pytest.approx(0.5 * math.sqrt(chi2_threshold(CL68, 1)), rel=1e-6)
    assert above > res.errors(CL68, stat=True)[1]


@pytest.mark.parametrize(
    "scan",
    [
        _parabola(np.linspace(0.0, 4.0, 17)),
        # asymmetric, non-parabolic profile (steeper towards μ = 0, as the GBI profile)
        _scan(
            np.linspace(0.0, 3.0, 13),
            [9.0 * abs(v - 1.0) ** 1.5 + 2.0 * (v - 1.0) ** 2 for v in np.linspace(0.0, 3.0, 13)],
        ),
    ],
)
def test_zero_spurious_signal_gives_the_statistical_result_exactly(scan):
    res = profile_with_spurious_signal(scan, 0.0)
    np.testing.assert_array_equal(res.two_delta_nll, res.two_delta_nll_stat)
    assert res.intervals == res.intervals_stat
    assert (res.q0, res.Z) == (res.q0_stat, res.Z_stat)
    # and it is the scan: its points, its q0 = 2ΔNLL(0), its intervals (up to the interpolation)
    np.testing.assert_allclose(res.two_delta_nll_stat, scan.two_delta_nll, rtol=1e-12, atol=1e-12)
    assert res.q0_stat == pytest.approx(scan.two_delta_nll[0], rel=1e-12)
    lo, hi = scan.interval(CL68)
    width = hi - lo
    assert res.intervals_stat[CL68][0] == pytest.approx(lo, abs=0.02 * width)
    assert res.intervals_stat[CL68][1] == pytest.approx(hi, abs=0.02 * width)
    # a systematic only ever widens the intervals and lowers Z
    wider = profile_with_spurious_signal(scan, 0.2)
    assert wider.Z < res.Z
    assert wider.intervals[CL68][0] < res.intervals[CL68][0]
    assert wider.intervals[CL68][1] > res.intervals[CL68][1]


def test_deficit_has_no_significance_and_result_round_trips_through_json():
    scan = _parabola(np.linspace(-1.0, 2.0, 13), best=-0.2, limits=(-1.0, 10.0))
    res = profile_with_spurious_signal(scan, SpuriousSignal(0.3, "validate.json"))
    assert res.q0 == 0.0  # μ̂ ≤ 0: as discovery_q0
    assert res.q0_stat == 0.0
    again = SystematicResult.from_dict(json.loads(json.dumps(res.to_dict(), allow_nan=False)))
    np.testing.assert_array_equal(again.two_delta_nll, res.two_delta_nll)
    assert again.intervals == res.intervals
    assert again.source == "validate.json"
    assert str(again) == str(res)
    assert "σ_ss = 0.3 (validate.json)" in str(res)


def test_open_interval_is_reported():
    scan = _parabola(np.linspace(0.0, 1.6, 9))
    with pytest.warns(OpenIntervalWarning, match="upper side"):
        res = profile_with_spurious_signal(scan, 0.3)
    assert res.intervals[CL95][1] is None
    assert math.isnan(res.errors(CL95)[1])
    assert "open" in res.info["notes"]["0.95"]["upper"]


def test_scan_input_errors():
    with pytest.raises(InputError, match="pass fitter"):
        profile_with_spurious_signal(_parabola(np.linspace(0.5, 3.0, 11)), 0.1)
    not_mu = _parabola(np.linspace(0.0, 3.0, 11))
    not_mu.parameter = "mx"
    with pytest.raises(InputError, match="systematic on mu"):
        profile_with_spurious_signal(not_mu, 0.1)
    with pytest.raises(InputError, match="ProfileScan"):
        profile_with_spurious_signal({"values": [0, 1]}, 0.1)
    with pytest.raises(InputError, match="confidence level"):
        profile_with_spurious_signal(_parabola(np.linspace(0.0, 3.0, 11)), 0.1, cls=(1.5,))


# ------------------------------------------------------------------------------------------------------
# SpuriousSignal: values and files
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [-1e-4, math.nan, math.inf, True, "0.1", None])
def test_bad_sigma_is_an_input_error(bad):
    with pytest.raises(InputError, match="σ_ss"):
        SpuriousSignal(bad)


def test_from_file_and_parse(tmp_path):
    good = tmp_path / "validate.json"
    good.write_text(json.dumps({"spurious_signal": {"sigma_mu": 4e-4, "windows": [1, 2]}, "other": 1}))
    ss = SpuriousSignal.from_file(good)
    assert ss == SpuriousSignal(4e-4, str(good))
    assert SpuriousSignal.parse(str(good)) == ss
    bare = tmp_path / "bare.json"
    bare.write_text("0.001\n")
    assert SpuriousSignal.from_file(bare).sigma_mu == 0.001
    assert SpuriousSignal.parse("2.5e-4") == SpuriousSignal(2.5e-4, "command line")
    assert SpuriousSignal.parse(0) == SpuriousSignal(0.0, "command line")

    cases = {
        "missing.json": (json.dumps({"fit": {}}), ConfigError, "spurious_signal.sigma_mu"),
        "no_sigma.json": (json.dumps({"spurious_signal": {"n": 3}}), ConfigError, "no such entry"),
        "string.json": (json.dumps({"spurious_signal": {"sigma_mu": "x"}}), ConfigError, "'x'"),
        "list.json": ("[1, 2]", ConfigError, "spurious_signal"),
        "corrupt.json": ('{"spurious_signal": {"sigma_mu": 0.1', DataFileError, "not valid JSON"),
        "negative.json": (json.dumps({"spurious_signal": {"sigma_mu": -0.1}}), InputError, "≥ 0"),
        "nan.json": ('{"spurious_signal": {"sigma_mu": NaN}}', InputError, "finite"),
    }
    for name, (text, error, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(error, match=match):
            SpuriousSignal.from_file(tmp_path / name)
        with pytest.raises(GBIError):  # the CLI catches them all
            SpuriousSignal.parse(str(tmp_path / name))
    with pytest.raises(DataFileError, match="cannot read"):
        SpuriousSignal.from_file(tmp_path / "absent.json")
    with pytest.raises(InputError, match="neither a number nor an existing file"):
        SpuriousSignal.parse(str(tmp_path / "absent.json"))
    with pytest.raises(InputError, match="finite"):
        SpuriousSignal.parse("nan")


# ------------------------------------------------------------------------------------------------------
# a real fit (oracle, ≈ 12k SR events)
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oracle_fit(sim):
    data = sim.make_dataset(s_over_sqrt_b=3.0, mx=300.0, my=150.0, n_background=100_000, seed=5)
    sr = sim.signal_region.signal_region(data)
    truth = {"mu": float(sr.label.mean()), "mx": 300.0, "my": 150.0}
    fitter = SignalFitter(OracleRatio(sim), sr)
    best = fitter.fit(truth, truth=truth)
    assert best.valid
    return fitter, best


def test_oracle_fit_with_spurious_signal(oracle_fit):
    fitter, best = oracle_fit
    sigma_stat = best.errors["mu"]
    ss = SpuriousSignal(sigma_stat)
    # the scan (μ̂ ± 4.5 σ) does not reach μ = 0 (Z ≈ 20): the fitter profiles the points below it
    scan = profile_1d(fitter, "mu", best=best, n_points=21, span=4.5, progress=False)
    assert scan.values.min() > 0
    res = profile_with_spurious_signal(scan, ss, fitter=fitter, best=best)
    assert res.info["points_added"] > 1
    assert res.values[0] == 0.0
    # statistical part: the discovery q0 of the same fit
    assert res.Z_stat == pytest.approx(discovery_q0(fitter, best).Z, rel=1e-3)
    assert 0 < res.Z < res.Z_stat
    for cl in (CL68, CL95):
        (lo, hi), (lo0, hi0) = res.intervals[cl], res.intervals_stat[cl]
        assert lo < lo0 < best.values["mu"] < hi0 < hi
    # near μ̂ the profile is close to a parabola: the 68 % errors add in quadrature
    half = 0.5 * (res.intervals[CL68][1] - res.intervals[CL68][0])
    half0 = 0.5 * (res.intervals_stat[CL68][1] - res.intervals_stat[CL68][0])
    assert half == pytest.approx(math.hypot(half0, sigma_stat * math.sqrt(chi2_threshold(CL68, 1))), rel=0.05)
    # the minimisation over m is converged: a narrower scan (filled further down to 0) agrees
    narrow = profile_1d(fitter, "mu", best=best, n_points=13, span=3.0, progress=False)
    again = profile_with_spurious_signal(narrow, ss, fitter=fitter)
    z_narrow = again.Z
    assert z_narrow == pytest.approx(res.Z, rel=1e-3)
    assert again.intervals[CL68][0] == pytest.approx(res.intervals[CL68][0], rel=1e-3)
    # σ_ss = 0: the statistical result
    zero = profile_with_spurious_signal(scan, 0.0, fitter=fitter, best=best)
    assert zero.Z == zero.Z_stat == res.Z_stat


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------
def test_cli_fit_with_spurious_signal(tmp_path, capsys):
    data = tmp_path / "d.npz"
    argv = ["generate", "--out", str(data), "--s-over-sqrt-b", "3", "--n-background", "120000", "--seed", "2"]
    assert main(argv) == 0
    validate = tmp_path / "validate.json"
    validate.write_text(json.dumps({"spurious_signal": {"sigma_mu": 0.002}}))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["fit", str(data), "--oracle", "--spurious-signal", str(validate), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"spurious-signal systematic σ_ss = 0.002 ({validate})" in text
    assert "stat only" in text
    result = FitResult.from_json(out / "results" / "d_fit.json")  # still a FitResult
    sys_res = SystematicResult.from_dict(result.info["spurious_signal"])
    assert sys_res.sigma_ss == 0.002
    assert 0 < sys_res.Z < sys_res.Z_stat
    assert sys_res.mu_hat == pytest.approx(result.values["mu"], rel=1e-9)
    lo, hi = sys_res.intervals[CL68]
    lo0, hi0 = sys_res.intervals_stat[CL68]
    assert lo < lo0 < hi0 < hi
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[-1]["spurious_signal"]["sigma_mu"] == 0.002

    # bad values fail before the fit, as one line with exit status 2
    for value in ("-0.001", "nan", str(tmp_path / "absent.json")):
        assert main(["fit", str(data), "--oracle", "--spurious-signal", value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "spurious signal" in err or "σ_ss" in err
