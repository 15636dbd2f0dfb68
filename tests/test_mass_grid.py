"""Mass-grid study (paper Fig. 3 analogue): fitted/true with bootstrap, profile and Fisher errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gbi_zfit.errors import InputError, ParameterRangeError
from gbi_zfit.inference.fit import PARAM_NAMES
from gbi_zfit.inference.mass_grid import (
    MassGridConfig,
    MassGridResult,
    MassPointResult,
    run_mass_grid,
)
from gbi_zfit.plotting.mass_grid import plot_mass_grid

# small and fast: 100k background events (≈ 12k in the SR) at μ = 2 % (S/√B ≈ 2.2)
CONFIG = MassGridConfig(
    mu=0.02,
    n_background=100_000,
    n_bootstrap=4,
    profile_points=5,
    n_reference=20_000,
    n_signal_reference=2_000,
    grid_step=100.0,
    n_starts=2,
)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    store = tmp_path_factory.mktemp("mass_grid") / "points.jsonl"
    return run_mass_grid([(300.0, 150.0)], CONFIG, seed=3, store_path=store, progress=False), store


def test_fitted_over_true_and_errors(grid):
    res, _ = grid
    (p,) = res.points
    assert p.valid
    assert (p.mx, p.my) == (300.0, 150.0)
    assert p.n_signal > 100
    assert p.truth["mu"] == pytest.approx(0.02, rel=0.02)
    assert len(p.bootstrap["mu"]) == CONFIG.n_bootstrap
    for name in PARAM_NAMES:
        errs = p.symmetric_errors(name)
        assert set(errs) == {"bootstrap", "profile", "hesse", "expected"}
        for method, e in errs.items():
            assert math.isfinite(e), (name, method)
            assert e > 0, (name, method)
        # the three methods agree within a factor ~2 (4 bootstraps: its spread is itself ±35 %)
        vals = np.array(list(errs.values()))
        assert vals.max() / vals.min() < 2.5, (name, errs)
        # fitted/true is within a few errors of 1
        sigma = errs["profile"] / p.truth[name]
        assert abs(p.ratio(name) - 1.0) < 4.0 * sigma, (name, p.ratio(name), sigma)
        lo, hi = p.profile[name]
        assert lo < p.values[name] < hi


def test_table_and_summary(grid):
    res, _ = grid
    text = res.table()
    assert "(300, 150)" in text
    assert "boot/prof" in text
    s = res.summary()
    assert set(s) == set(PARAM_NAMES)
    for name in PARAM_NAMES:
        assert 0.4 < s[name]["ratio_to_profile"]["hesse"]["mean"] < 2.5


def test_json_round_trip(grid, tmp_path):
    res, _ = grid
    path = tmp_path / "grid.json"
    res.to_json(path)
    back = MassGridResult.from_json(path)
    assert back.to_dict() == json.loads(path.read_text())
    assert back.table() == res.table()
    p = MassPointResult.from_dict(json.loads(json.dumps(res.points[0].to_dict())))
    assert p.bootstrap_std("mu") == pytest.approx(res.points[0].bootstrap_std("mu"))


def test_resume_from_store(grid):
    res, store = grid
    again = run_mass_grid([(300.0, 150.0)], CONFIG, seed=3, store_path=store, progress=False)
    assert again.points[0].to_dict() == res.points[0].to_dict()
    assert again.time_s < 5.0  # nothing recomputed


def test_plot_written(grid, tmp_path):
    res, _ = grid
    path = plot_mass_grid(res, tmp_path / "fig3.png")
    assert path.exists()
    assert path.stat().st_size > 10_000
    path = plot_mass_grid(res.to_dict(), tmp_path / "fig3_two.png", methods=("bootstrap", "profile"))
    assert path.exists()


def test_input_validation():
    with pytest.raises(ParameterRangeError):
        MassGridConfig(mu=0.0)
    with pytest.raises(InputError):
        MassGridConfig(n_bootstrap=1)
    with pytest.raises(ParameterRangeError):
        run_mass_grid([(800.0, 100.0)], CONFIG)
    with pytest.raises(InputError):
        run_mass_grid([(300.0, 150.0), (150.0, 300.0)], CONFIG)  # the same point (mirror)
