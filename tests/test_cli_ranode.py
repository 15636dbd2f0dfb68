"""``gbi train flows`` and ``gbi ranode``: end to end on a tiny benchmark file, and bad input."""

from __future__ import annotations

import json
import math

import pytest

from gbi_zfit.cli import main

GRID = ["--mu-grid", "1e-3", "1e-1", "3"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ranode_cli") / "data.npz"
    argv = ["generate", "--out", str(path), "--n-background", "60000", "--s-over-sqrt-b", "3", "--seed", "1"]
    assert main(argv) == 0
    return path


def _error_line(capsys) -> str:
    """The single ``gbi ...: error: ...`` line on stderr."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


def _check_result(out):
    d = json.loads((out / "results" / "ranode.json").read_text())
    scan = d["scan"]
    assert len(scan["mu_grid"]) == 3
    assert all(math.isfinite(v) for v in scan["delta_ll"] + scan["delta_ll_std"])
    curve = scan["curve"]
    assert math.isfinite(curve["mu_hat"])
    assert 1e-3 <= curve["mu_hat"] <= 1e-1
    assert math.isfinite(curve["max_delta_ll"])
    lo, hi = curve["intervals"]["0.6827"]
    assert math.isfinite(lo)
    assert math.isfinite(hi)
    assert lo <= curve["mu_hat"] <= hi
    assert (out / "figures" / "ranode_scan.png").stat().st_size > 0
    steps = [e["step"] for e in json.loads((out / "manifest.json").read_text())]
    assert "ranode" in steps
    return d


def test_ranode_oracle(data_file, tmp_path, capsys):
    out = tmp_path / "oracle"
    argv = ["ranode", str(data_file), "--oracle-background", "--oracle-signal", "300", "150", *GRID]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "μ̂ =" in printed
    assert "Minuit" in printed
    d = _check_result(out)
    # the exact densities at S/√B ≈ 3: a clear signal, μ̂ near the truth (μ ≈ 0.035)
    assert d["scan"]["truth"]["mu"] == pytest.approx(0.035, abs=0.005)
    fit = d["fit"]
    assert math.isfinite(fit["mu"])
    assert math.isfinite(fit["error"])
    assert fit["delta_ll"] > 2
    assert abs(fit["mu"] - d["scan"]["truth"]["mu"]) < 4 * fit["error"]


@pytest.mark.parametrize(
    ("grid", "word"),
    [
        (["0", "0.1", "3"], "(0, 1)"),
        (["1e-3", "1.5", "3"], "(0, 1)"),
        (["0.1", "1e-3", "3"], "LO < HI"),
        (["1e-3", "0.1", "2"], "N ≥ 3"),
        (["1e-3", "abc", "3"], "LO HI N"),
    ],
)
def test_bad_mu_grid(data_file, tmp_path, capsys, grid, word):
    argv = ["ranode", str(data_file), "--oracle-background", "--mu-grid", *grid, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith("gbi ranode: error: --mu-grid")
    assert word in line


def test_missing_flows(data_file, tmp_path, capsys):
    argv = ["ranode", str(data_file), "--flows", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "no background flows" in line
    assert "gbi train flows" in line
    # an existing directory without a bundle
    (tmp_path / "empty").mkdir()
    assert main([*argv[:3], str(tmp_path / "empty"), *argv[4:]]) == 2
    assert "no model.json" in _error_line(capsys)


def test_bad_options(data_file, tmp_path, capsys):
    out = ["--out", str(tmp_path / "o")]
    assert main(["ranode", str(tmp_path / "missing.npz"), "--oracle-background", *out]) == 2
    assert "no data file" in _error_line(capsys)
    assert main(["ranode", str(data_file), "--oracle-background", "--ensemble", "0", *out]) == 2
    assert "--ensemble" in _error_line(capsys)
    assert main(["ranode", str(data_file), "--oracle-background", "--test-fraction", "1", *out]) == 2
    assert "--test-fraction" in _error_line(capsys)
    assert main(["train", "flows", str(data_file), "--epochs", "0", *out]) == 2
    assert "--epochs" in _error_line(capsys)
    assert main(["train", "flows", str(data_file), "--workers", "2", "--scheduler", "tcp://x:1", *out]) == 2
    assert "--scheduler" in _error_line(capsys)
    with pytest.raises(SystemExit) as exc:  # --flows or --oracle-background is required
        main(["ranode", str(data_file), *out])
    assert exc.value.code == 2


@pytest.mark.slow
def test_train_flows_and_ranode(data_file, tmp_path, capsys):
    """Learned p_B and learned f with the smallest settings; a rerun resumes from the task store."""
    out = tmp_path / "run"
    small = ["--quick", "--ensemble", "1", "--epochs", "1", "--no-progress"]
    assert main(["train", "flows", str(data_file), "--out", str(out), "--seed", "3", *small]) == 0
    assert (out / "models" / "flows" / "model.json").is_file()
    summary = json.loads((out / "results" / "flows_training.json").read_text())
    assert summary["n_members"] == 1
    assert summary["features"] == ["mj2", "delta_mj", "tau21_j1", "tau21_j2"]
    assert math.isfinite(summary["best_val_loss_mean"])
    assert 0 < summary["n_sideband"] < summary["n_events"]
    assert (out / "data" / "flows_store.jsonl").is_file()
    capsys.readouterr()
    # the same command again takes the member from the store: same model, no training
    assert main(["train", "flows", str(data_file), "--out", str(out), "--seed", "3", *small]) == 0
    assert "resuming from" in capsys.readouterr().out
    again = json.loads((out / "results" / "flows_training.json").read_text())
    assert again["best_val_loss_mean"] == summary["best_val_loss_mean"]

    argv = [
        "ranode",
        str(data_file),
        "--flows",
        str(out),
        "--out",
        str(out),
        *GRID,
        "--minuit",
        "--seed",
        "4",
    ]
    assert main([*argv, *small]) == 0
    d = _check_result(out)
    assert d["scan"]["signal"]["label"] == "learned"
    assert d["scan"]["background"]["label"] == "flows"
    assert math.isfinite(d["fit"]["mu"])
    assert d["fit"]["mu_train"] == pytest.approx(d["scan"]["curve"]["mu_hat"])
    assert (out / "models" / "ranode_signal" / "model.json").is_file()
    assert (out / "results" / "mjj_fit.json").is_file()
    assert (out / "data" / "ranode_store" / "scan_tasks.jsonl").is_file()
    capsys.readouterr()

    # same command again: every member comes from the store, same result
    assert main([*argv, *small]) == 0
    again = json.loads((out / "results" / "ranode.json").read_text())
    assert again["scan"]["delta_ll"] == d["scan"]["delta_ll"]
    assert again["fit"]["mu"] == pytest.approx(d["fit"]["mu"], rel=1e-9)

    # other settings with the same store: one-line error, nothing overwritten
    capsys.readouterr()
    assert main([*argv[:-1], "5", *small]) == 2
    line = _error_line(capsys)
    assert "task store" in line
    assert "--store" in line
