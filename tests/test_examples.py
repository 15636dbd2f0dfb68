"""The example scripts run as written (small settings) and give sensible answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_fit_zfit_example(capsys):
    result = _load("oracle_fit_zfit").main(n_background=250_000, seed=3)
    assert result.valid
    values = {p.name: float(p.value()) for p in result.params}
    assert sorted([values["mx"], values["my"]]) == [pytest.approx(150, rel=0.1), pytest.approx(300, rel=0.1)]
    assert "mu" in capsys.readouterr().out
