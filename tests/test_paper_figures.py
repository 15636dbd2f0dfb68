"""benchmarks/paper_figures.py: Fig. 1–3 and their tables from small, well-formed result files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MASS_GRID_RESULT = BENCHMARKS / "results" / "fig3_oracle.json"

N_B_SR = 10_000  # SR background of the fake sensitivity data sets
SOSB = (1.0, 3.0)
# μ̂/μ_true of the realisations per method: learned median 1.1 (with one failed data set), oracle 1.0
RATIOS = {"learned": (0.7, 1.1, 1.6), "oracle": (0.9, 1.0, 1.05)}


@pytest.fixture(scope="module")
def pf():
    spec = importlib.util.spec_from_file_location("paper_figures_benchmark", BENCHMARKS / "paper_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _mu(sosb: float, n_b: int) -> float:
    n_s = round(sosb * np.sqrt(n_b))
    return n_s / (n_s + n_b)


def _sensitivity(path: Path) -> Path:
    """A sensitivity.json in the format of benchmarks/sensitivity.py (records only are read)."""
    records = []
    for theta in ((300.0, 150.0), (425.0, 225.0)):
        for sosb in SOSB:
            mu = _mu(sosb, N_B_SR)
            for r in range(3):
                rec = {"mx": theta[0], "my": theta[1], "s_over_sqrt_b": sosb, "realisation": r, "ok": True}
                rec.update(mu_true=mu, n_signal=round(sosb * 100), n_background=N_B_SR)
                for m, ratios in RATIOS.items():
                    values = {"mu": ratios[r] * mu, "mx": theta[0] + 10 * r, "my": theta[1] - 5 * r}
                    rec[m] = {"values": values, "errors": {"mu": 0.1 * mu}, "valid": True, "z": 2.0 + r}
                records.append(rec)
            records.append(
                {"mx": theta[0], "my": theta[1], "s_over_sqrt_b": sosb, "realisation": 3, "ok": False}
            )
    data = {"schema": "gbi_zfit.sensitivity/1", "config": {"n_background": 85_000}, "records": records}
    path.write_text(json.dumps(data))
    return path


def _ranode_summary(path: Path) -> Path:
    """A ranode_summary.json in the format of benchmarks/ranode.py (``results[method][sb]["runs"]``)."""
    results: dict = {}
    for method in ("learned", "ideal"):
        for sosb in (1.0, 3.0):
            mu = _mu(sosb, 100_000)
            runs = [
                {
                    "mu_true": mu,
                    "scan_mu_hat": f * mu,
                    "scan_interval_95": [0.5 * f * mu, 1.5 * f * mu],
                    "scan_z": 3.0 * sosb,
                    "fit_mu_hat": 0.9 * f * mu,
                    "fit_error": 0.2 * mu,
                    "fit_interval_95": [0.5 * f * mu, 1.5 * f * mu],
                    "fit_z": 3.0 * sosb,
                }
                for f in (0.0, 0.8, 1.3)  # one fit at μ̂ = 0: drawn at the floor of the log axis
            ]
            results.setdefault(method, {})[f"{sosb:g}"] = {"runs": runs, "median": {}}
    path.write_text(
        json.dumps({"settings": {"n_background": 850_000}, "theta": [300, 150], "results": results})
    )
    return path


def _mass_grid(path: Path, n_points: int = 2) -> Path:
    """The committed Fig. 3 result, trimmed to ``n_points`` mass points."""
    data = json.loads(MASS_GRID_RESULT.read_text())
    data["points"] = data["points"][:n_points]
    data.pop("summary", None)
    path.write_text(json.dumps(data))
    return path


def test_from_results_writes_figures_and_tables(pf, tmp_path, capsys):
    sens = _sensitivity(tmp_path / "sensitivity.json")
    ranode = _ranode_summary(tmp_path / "ranode_summary.json")
    grid = _mass_grid(tmp_path / "fig3.json")
    out = tmp_path / "figs"
    argv = ["--from-results", "--sensitivity", str(sens), "--ranode", str(ranode), "--mass-grid", str(grid)]
    assert pf.main([*argv, "--out", str(out)]) == 0
    for name in ("fig1_mu_hat", "fig2_masses", "fig3_mass_grid"):
        for suffix in (".png", ".md", ".json"):
            assert (out / f"{name}{suffix}").stat().st_size > 0, name + suffix
    printed = capsys.readouterr().out
    assert str(out / "fig1_mu_hat.png") in printed

    # Fig. 1: GBI-PAWS at θ = (300, 150) only, medians of the per-data-set μ̂/μ; R-ANODE scan and Minuit
    fig1 = json.loads((out / "fig1_mu_hat.json").read_text())
    curves = {c["key"]: c for c in fig1["curves"]}
    assert set(curves) == {
        "gbi_learned",
        "gbi_oracle",
        "ranode_learned_scan",
        "ranode_learned_fit",
        "ranode_ideal_fit",
    }
    for m, ratios in RATIOS.items():
        pts = curves[f"gbi_{m}"]["points"]
        assert [p["s_over_sqrt_b"] for p in pts] == list(SOSB)
        for p in pts:
            assert p["n_runs"] == 3  # the failed data set is left out
            assert p["mu_inj"] == pytest.approx(_mu(p["s_over_sqrt_b"], N_B_SR))
            assert p["mu_ratio"]["median"] == pytest.approx(np.median(ratios))
            assert p["mu_ratio"]["q16"] == pytest.approx(np.quantile(ratios, 0.16))
            assert p["mu_hat"]["median"] == pytest.approx(np.median(ratios) * p["mu_inj"])
            assert p["n_b_sr"] == pytest.approx(N_B_SR, rel=1e-6)
    fit = curves["ranode_learned_fit"]["points"][0]
    assert fit["mu_ratio"]["median"] == pytest.approx(0.9 * 0.8)
    assert fit["mu_ratio"]["min"] == 0.0
    md = (out / "fig1_mu_hat.md").read_text()
    assert "| GBI-PAWS (learned) | 10,000 | 1 | 3 |" in md
    assert f"{np.median(RATIOS['learned']):.2f} [{np.quantile(RATIOS['learned'], 0.16):.2f}, " in md

    # Fig. 2: both mass points, median fitted masses
    rows = json.loads((out / "fig2_masses.json").read_text())["rows"]
    assert len(rows) == 2 * len(SOSB) * 2
    first = rows[0]
    assert (first["mx_true"], first["method"], first["n_runs"]) == (300.0, "learned", 3)
    assert first["mx_hat"]["median"] == pytest.approx(310.0)
    assert first["my_hat"]["median"] == pytest.approx(145.0)
    assert "| (300, 150) | 1 | GBI-PAWS (learned) | 3 | 310 [" in (out / "fig2_masses.md").read_text()

    # Fig. 3: fitted/true and the methods' errors of every point and parameter
    points = json.loads(grid.read_text())["points"]
    fig3 = json.loads((out / "fig3_mass_grid.json").read_text())
    assert len(fig3["rows"]) == 3 * len(points)
    row = fig3["rows"][0]
    p0 = points[0]
    assert row["parameter"] == "mu"
    assert row["fitted_over_true"] == pytest.approx(p0["values"]["mu"] / p0["truth"]["mu"])
    assert row["hesse"] == pytest.approx(p0["hesse"]["mu"] / p0["truth"]["mu"])
    assert row["profile_plus"] == pytest.approx(
        (p0["profile"]["mu"][1] - p0["values"]["mu"]) / p0["truth"]["mu"]
    )
    assert f"| {row['fitted_over_true']:.3f} |" in (out / "fig3_mass_grid.md").read_text()


def test_missing_and_broken_inputs_are_reported(pf, tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    out = tmp_path / "figs"
    argv = [
        "--from-results",
        "--sensitivity",
        str(tmp_path / "nope.json"),
        "--ranode",
        str(tmp_path / "nodir"),
    ]
    assert pf.main([*argv, "--mass-grid", str(broken), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no sensitivity result at" in printed
    assert "no R-ANODE summary or run files at" in printed
    assert "cannot read mass-grid result" in printed
    assert "Fig. 1 skipped" in printed
    assert "Fig. 3 skipped" in printed
    assert not list(out.glob("*.png"))

    # only R-ANODE present: Fig. 1 from it alone, Fig. 2 skipped
    ranode = _ranode_summary(tmp_path / "ranode_summary.json")
    argv = ["--from-results", "--sensitivity", str(tmp_path / "nope.json"), "--ranode", str(tmp_path)]
    assert pf.main([*argv, "--mass-grid", str(tmp_path / "nope.json"), "--out", str(out)]) == 0
    assert ranode.exists()
    assert (out / "fig1_mu_hat.png").is_file()
    assert not (out / "fig2_masses.png").exists()
    assert "Fig. 2 skipped" in capsys.readouterr().out


def test_ranode_run_files_without_summary(pf, tmp_path):
    """A directory of a run in progress (runs/*.json, no summary) is read like the summary."""
    from gbi_zfit.inference.ranode import LikelihoodCurve, MuFitResult, MuScanResult, RANODEResult

    mu = _mu(1.0, 100_000)
    curve = LikelihoodCurve(
        mu_hat=1.2 * mu,
        max_delta_ll=2.0,
        intervals={"0.6827": (mu, 1.4 * mu), "0.95": (0.5 * mu, 2 * mu)},
        upper_open={"0.6827": False, "0.95": False},
        at_edge=False,
        log10_mu=[-3.0, -2.0],
        mean=[0.0, 1.0],
        std=[0.0, 0.0],
        kernel="RBF",
        compress_scale=5.0,
    )
    truth = {"mu": mu, "n_signal": 316, "n_background": 100_000}
    scan = MuScanResult([1e-3, 1e-2], [0.0, 1.0], [0.0, 0.0], curve, {}, {}, 4, 100, 100, truth=truth)
    fit = MuFitResult(
        1.1 * mu, 0.2 * mu, {"0.95": (0.6 * mu, 1.6 * mu)}, 2.0, True, False, (0.0, 1.0), 100, {}
    )
    runs = tmp_path / "runs"
    runs.mkdir()
    record = {
        "method": "learned",
        "s_over_sqrt_b": 1.0,
        "realisation": 0,
        **RANODEResult(scan, fit).to_dict(),
    }
    (runs / "learned_sb1_r0.json").write_text(json.dumps(record))
    (runs / "learned_sb3_r0.json").write_text("{truncated")  # reported and skipped

    data = pf.load_ranode(tmp_path)
    entry = data["results"]["learned"]["1"]["runs"][0]
    assert entry["scan_mu_hat"] == pytest.approx(1.2 * mu)
    assert entry["fit_mu_hat"] == pytest.approx(1.1 * mu)
    assert entry["scan_z"] == pytest.approx(2.0)
    curves = {c["key"]: c for c in pf.fig1_curves(None, data)}
    assert curves["ranode_learned_scan"]["points"][0]["mu_ratio"]["median"] == pytest.approx(1.2)

    # GBI-PAWS fitted to the same data sets (ranode.py --paws-models) replaces the sensitivity curves
    paws = {"method": "paws", "s_over_sqrt_b": 1.0, "realisation": 0, "mu_true": mu}
    paws |= {"learned": {"mu_hat": 0.9 * mu, "z": 3.0}, "oracle": {"mu_hat": mu, "z": 3.5}}
    (runs / "paws_sb1_r0.json").write_text(json.dumps(paws))
    data = pf.load_ranode(tmp_path)
    assert set(data["results"]) == {"learned"}
    sensitivity = {"records": [], "config": {}}
    curves = {c["key"]: c for c in pf.fig1_curves(sensitivity, data)}
    assert curves["gbi_learned"]["source"] == "ranode (same data sets)"
    assert curves["gbi_learned"]["points"][0]["mu_ratio"]["median"] == pytest.approx(0.9)
    assert curves["gbi_oracle"]["points"][0]["mu_ratio"]["median"] == pytest.approx(1.0)


def test_run_mode_dry_run_prints_component_commands(pf, tmp_path, capsys):
    assert pf.main(["--quick", "--dry-run", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for script in ("sensitivity.py", "ranode.py", "mass_grid.py"):
        assert script in printed
    assert f"--out {tmp_path / 'runs' / 'ranode'}" in printed
    assert not (tmp_path / "runs").exists()
    cmds = pf.commands("full", tmp_path, ["mass_grid"])
    assert list(cmds) == ["mass_grid"]
    assert cmds["mass_grid"][1] == tmp_path / "runs" / "mass_grid" / "fig3_oracle.json"
