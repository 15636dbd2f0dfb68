"""The `gbi` command line, run in-process through `gbi_zfit.cli.main`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gbi_zfit.cli import main
from gbi_zfit.data.io import read_events
from gbi_zfit.inference import FitResult
from gbi_zfit.inference.profile import ProfileScan


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("generate", "fit", "demo", "info"):
        assert cmd in out


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "zfit" in out
    assert "GPU" in out


def test_generate_then_fit(tmp_path, capsys):
    data = tmp_path / "data.root"
    assert (
        main(
            [
                "generate",
                "--out",
                str(data),
                "--s-over-sqrt-b",
                "3",
                "--n-background",
                "120000",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    events = read_events(data)
    assert events.label is not None
    assert events.label.sum() > 0
    out = tmp_path / "out"
    assert main(["fit", str(data), "--oracle", "--out", str(out)]) == 0
    res = FitResult.from_json(out / "results" / "data_fit.json")
    assert res.valid
    assert res.values["mx"] == pytest.approx(300, rel=0.1)
    assert res.values["my"] == pytest.approx(150, rel=0.1)
    assert (out / "figures" / "data_fit.png").stat().st_size > 10_000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[-1]["input"] == str(data)


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing.root"), "--oracle"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "missing.root" in err
    assert main(["fit", str(tmp_path / "x.root")]) == 2
    assert "--oracle" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "d.root"), "--mu", "0.01", "--mx", "900"]) == 2
    assert "mX" in capsys.readouterr().err
    assert not (tmp_path / "d.root").exists()


def test_debug_shows_traceback(tmp_path):
    from gbi_zfit.errors import DataFileError

    with pytest.raises(DataFileError):
        main(["--debug", "fit", str(tmp_path / "missing.root"), "--oracle"])


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-background", "200000", "--s-over-sqrt-b", "3"]) == 0
    text = capsys.readouterr().out
    assert "valid" in text
    res = FitResult.from_json(out / "results" / "demo_fit.json")
    assert abs(res.values["mu"] - res.truth["mu"]) < 2 * res.errors["mu"]
    assert "mu" in res.minos
    assert (out / "figures" / "demo_fit.png").exists()
    assert (out / "data" / "demo.npz").exists()


@pytest.mark.slow
def test_demo_default_entry_point(tmp_path):
    """The README's `gbi demo` as a subprocess, at the default size (≈ 1.5 min)."""
    proc = subprocess.run(
        [sys.executable, "-m", "gbi_zfit.cli", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert FitResult.from_json(tmp_path / "results" / "demo_fit.json").valid


def test_scan_writes_profiles_and_contour(tmp_path, capsys):
    data = tmp_path / "d.npz"
    assert (
        main(
            [
                "generate",
                "--out",
                str(data),
                "--s-over-sqrt-b",
                "3",
                "--n-background",
                "150000",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    out = tmp_path / "scan"
    assert (
        main(["scan", str(data), "--oracle", "--params", "mu", "mx_my", "--n-points", "9", "--out", str(out)])
        == 0
    )
    payload = json.loads((out / "results" / "d_profiles.json").read_text())
    assert set(payload) == {"mu", "mx_my"}
    assert min(payload["mu"]["two_delta_nll"]) == pytest.approx(0.0, abs=1e-3)
    assert (out / "figures" / "d_profile_mu.png").stat().st_size > 10_000
    assert (out / "figures" / "d_profile_mx_my.png").stat().st_size > 10_000
    scan = ProfileScan.from_dict(payload["mu"])
    lo, hi = scan.interval(0.683)
    assert lo is not None
    assert hi is not None
    assert lo < scan.best_values["mu"] < hi
