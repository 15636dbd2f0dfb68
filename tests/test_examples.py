"""The example scripts run as written (small settings) and give sensible answers."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _values(result) -> dict[str, float]:
    return {p.name: float(p.value()) for p in result.params}


def test_every_example_says_what_it_shows_and_how_long_it_takes():
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert len(scripts) >= 5
    for path in scripts:
        doc = _load(path.stem).__doc__
        assert doc, path.name
        assert re.search(r"≈ [\d.]+ (min|s)\b", doc), f"{path.name}: the docstring should state the run time"


def test_oracle_fit_zfit_example(capsys):
    result = _load("oracle_fit_zfit").main(n_background=250_000, seed=3)
    assert result.valid
    values = _values(result)
    assert sorted([values["mx"], values["my"]]) == [pytest.approx(150, rel=0.1), pytest.approx(300, rel=0.1)]
    assert "mu" in capsys.readouterr().out


def test_oracle_minos_contour_example(tmp_path, capsys):
    """MINOS on all three parameters brackets the HESSE-sized errors; the contour figure is written and the
    zfit minimum equals the SignalFitter minimum of the same events."""
    result, errors, scan = _load("oracle_minos_contour").main(
        n_background=150_000, seed=1, grid=7, out=tmp_path
    )
    assert result.valid
    for p in result.params:
        lo, hi = errors[p]["lower"], errors[p]["upper"]
        hesse = result.params[p]["hesse"]["error"]
        assert lo < 0 < hi
        assert (hi - lo) / 2 == pytest.approx(hesse, rel=0.3), p.name
    values = _values(result)
    assert values["mx"] == pytest.approx(300, rel=0.05)
    assert values["my"] == pytest.approx(150, rel=0.05)
    assert scan.two_delta_nll.shape == (7, 7)
    assert scan.contains((values["mx"], values["my"]), 0.683)
    assert (tmp_path / "figures" / "oracle_theta_contour.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    diff = float(out.split("SignalFitter's:")[1].split()[0])
    assert abs(diff) < 1e-3


def test_root_ntuple_zfit_model_example(tmp_path):
    """ROOT file → extended zfit model with a Gaussian-constrained ν_B: μ, θ and ν_B near the truth."""
    path = tmp_path / "data.root"
    result = _load("root_ntuple_zfit_model").main(path, n_background=200_000, seed=2)
    assert path.stat().st_size > 1_000_000
    assert result.valid
    values = _values(result)
    errors = {p.name: result.params[p]["hesse"]["error"] for p in result.params}
    # truth of this data set: 23,716 SR events, 306 of them signal (μ = 0.0129), N_B,SR = 23,410
    assert values["mu"] == pytest.approx(0.0129, abs=3 * errors["mu"])
    assert values["nu_b"] == pytest.approx(23_410, abs=3 * errors["nu_b"])
    assert values["mx"] == pytest.approx(300, abs=3 * errors["mx"])
    assert values["my"] == pytest.approx(150, abs=3 * errors["my"])
    mu = next(p for p in result.params if p.name == "mu")
    assert result.params[mu]["errors"]["lower"] < 0 < result.params[mu]["errors"]["upper"]


def test_ranode_quick_scan_example(tmp_path, capsys):
    """Learned R-ANODE at a strong injection (test preset, ≈ 20 s): the signal is found by the scan and by
    the Minuit fit; the ideal-f fit is unbiased; the scan figure is written. The small learned f models
    the signal's mass core, so its μ̂ is below the truth (0.4–0.65 of it for seeds 1–3)."""
    out = _load("ranode_quick_scan").main(preset="test", seed=1, out=tmp_path)
    truth, (lo, hi) = out["truth"], out["interval"]
    assert 0.25 * truth < out["mu_hat"] < 1.2 * truth
    assert 0 < lo <= out["mu_hat"] <= hi
    assert out["z"] > 5
    assert out["fit"].valid
    assert out["fit"].mu > 0
    assert out["fit"].significance > 5
    ideal = out["ideal"]
    assert ideal.mu == pytest.approx(truth, abs=3 * ideal.error)
    assert out["figure"].stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "learned f: μ̂ = " in printed
    assert "R-ANODE Minuit fit" in printed


@pytest.mark.slow
def test_hepstats_upper_limit_example():
    """hepstats CLs limit = the package's own profile-likelihood CLs limit (10 %) = the one-call helper."""
    out = _load("hepstats_upper_limit").main(n_background=200_000, seed=2)
    limits = out["limits"]
    assert out["mu_hat"] < limits["observed"] < out["mu_hat"] + 4 * out["sigma"]
    assert limits["observed"] == pytest.approx(out["own"], rel=0.10)
    assert limits["observed"] == pytest.approx(out["helper"]["observed"], rel=0.05)
    bands = [limits[k] for k in ("expected_m1", "expected", "expected_p1")]
    assert bands == sorted(bands)
    assert math.isfinite(out["z"])
    assert out["z"] > 0


@pytest.mark.slow
def test_paws_quick_fit_example():
    """The test presets end to end (CFM → SR background → classifier → zfit fit): a valid fit with θ
    inside the training window and a positive signal fraction. The tiny models are not accurate, so
    only the mechanics are asserted here; accuracy is tested in test_classifier/test_cfm."""
    result = _load("paws_quick_fit").main(preset="test", seed=1)
    assert result.valid
    values = _values(result)
    assert 200 <= values["mx"] <= 400
    assert 100 <= values["my"] <= 200
    assert 0 < values["mu"] < 0.2
