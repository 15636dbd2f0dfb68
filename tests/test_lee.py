"""Global significance from background-only toys (gbi_zfit.inference.lee, plotting, `gbi fit --global-toys`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pickle

import numpy as np
import pytest
from scipy import stats

from gbi_zfit.cli import main
from gbi_zfit.errors import ConfigError, FitError, InputError
from gbi_zfit.inference import FitResult, SignalFitter
from gbi_zfit.inference.lee import (
    GlobalSignificance,
    LeeSpec,
    background_toy_weights,
    build_lee_state,
    chi2_tail_extrapolation,
    global_significance,
    local_significance,
    p_value_from_toys,
    run_one_lee_toy,
    summarize_lee_toys,
)
from gbi_zfit.inference.toys import oracle_toy_sample
from gbi_zfit.models import OracleRatio
from gbi_zfit.parallel import ResultStore, spawn_seeds

# a small observed data set (3k SR background + a signal) and a 4× larger background reference
N_B, N_S, N_REF = 3000, 120, 12_000
N_TOYS, SEED = 6, 7
THETAS = ((300.0, 150.0), (200.0, 100.0), (450.0, 250.0), (600.0, 400.0))


@pytest.fixture(scope="module")
def oracle(sim):
    return OracleRatio(sim)


@pytest.fixture(scope="module")
def reference(sim, oracle):
    return oracle.feature_set.extract(sim.sample_background_sr(N_REF, seed=21))


@pytest.fixture(scope="module")
def observed(sim, oracle, reference):
    """(fitter, blind multi-start fit) of the observed data set."""
    x, _, _ = oracle_toy_sample(sim, n_background=N_B, n_signal=N_S, mx=300.0, my=150.0, seed=3)
    fitter = SignalFitter(oracle, x, reference=reference)
    return fitter, fitter.fit_multistart(hesse=False)


@pytest.fixture(scope="module")
def lee_run(observed, tmp_path_factory):
    """N_TOYS background-only toys of the observed fit, with a result store."""
    fitter, result = observed
    store = tmp_path_factory.mktemp("lee") / "toys.jsonl"
    gs = global_significance(
        fitter, local_significance(result)[1], N_TOYS, SEED, store_path=store, progress=False
    )
    return gs, store


def _q0_fixed_theta(fitter: SignalFitter, mx: float, my: float) -> float:
    res = fitter.fit({"mu": 0.01, "mx": mx, "my": my}, fix=("mx", "my"), hesse=False)
    return local_significance(res)[0]


# ---- (a) the oracle: global ≤ local --------------------------------------------------------------------
def test_global_significance_is_below_local(observed, lee_run):
    _, result = observed
    gs, _ = lee_run
    q0, z_local = local_significance(result)
    assert z_local > 3  # a clear local excess
    assert gs.z_local_obs == pytest.approx(z_local)
    assert gs.q0_obs == pytest.approx(q0)
    assert gs.n_toys == gs.n_used == N_TOYS
    assert 0.0 < gs.p_global <= 1.0
    assert 0.0 <= gs.z_global <= gs.z_local_obs
    assert all(math.isfinite(z) and z >= 0 for z in gs.toy_z)
    assert gs.n_exceed == 0
    assert gs.bound
    assert gs.p_global == pytest.approx(1 / (N_TOYS + 1))
    fitter, _ = observed
    assert gs.info["overlap"] == pytest.approx(fitter.engine.n_events / N_REF)  # N_obs / n_ref
    assert gs.info["mean_n_drawn"] == pytest.approx(N_B + N_S, rel=0.1)
    assert gs.time_per_toy_s > 0
    text = str(gs)
    assert f"from {N_TOYS} background-only toys (local Z = {z_local:.2f})" in text
    assert "global significance: Z >" in text
    back = GlobalSignificance.from_dict(json.loads(gs.to_json()))
    assert back.toy_z == gs.toy_z
    assert back.p_global == gs.p_global


# ---- (b) the toys are background-only and maximise over θ ---------------------------------------------
def test_toys_are_background_only_and_dominate_fixed_theta(observed, lee_run, oracle, reference):
    """Each toy's maximum q0 is at least its q0 at any fixed θ (which follows ½χ²₀ + ½χ²₁ under the
    background-only hypothesis), so the toys' maxima stochastically dominate the fixed-θ law — and a toy
    that contained the data's signal would show it at the data's θ̂."""
    fitter, result = observed
    gs, store = lee_run
    records = ResultStore(store, read_only=True).results()
    n_exp = fitter.engine.sum_weights
    state = build_lee_state(LeeSpec(oracle, reference, n_exp, {}))
    data_theta = (result.values["mx"], result.values["my"])
    fixed = []
    for i, seed in enumerate(spawn_seeds(SEED, N_TOYS)):
        w = background_toy_weights(N_REF, n_exp, seed)  # the same weights the toy was fitted on
        assert set(np.unique(w)) <= {0.0, 1.0}  # a subsample: no duplicated events
        assert int(w.sum()) == records[i]["n_drawn"]
        state.fitter.engine.set_weights(w)
        q_fixed = [_q0_fixed_theta(state.fitter, *theta) for theta in (*THETAS, data_theta)]
        mu_grid, nll_grid = state.grid.profile(w)  # the vectorised exact profile agrees with Minuit's
        for theta, q in zip(THETAS, q_fixed, strict=False):
            k = int(np.flatnonzero((state.grid.grid == theta).all(axis=1))[0])
            assert (max(0.0, -2 * nll_grid[k]) if mu_grid[k] > 0 else 0.0) == pytest.approx(q, abs=0.01)
        assert gs.toy_q0[i] >= max(q_fixed) - 0.02, (i, gs.toy_q0[i], q_fixed)
        fixed.append(q_fixed)
    fixed = np.array(fixed)
    assert fixed[:, -1].max() < 0.25 * gs.q0_obs  # no toy carries the observed signal at θ̂
    # dominance in the mean: the fixed-θ law has mean ½, χ²₁ has 1; the maximum over θ is above both
    assert np.mean(gs.toy_q0) > 1.0
    assert np.mean(gs.toy_q0) > np.mean(fixed) + 0.5


@pytest.mark.slow
def test_toy_maximum_distribution(observed, oracle, reference):
    """40 toys: the maximum over θ of q0 is far from the fixed-θ ½χ²₀ + ½χ²₁ law (mean ½) and above χ²₁."""
    fitter, _ = observed
    gs = global_significance(fitter, 0.0, 40, 11, progress=False)
    q = gs.toy_q0
    se = q.std(ddof=1) / math.sqrt(len(q))
    assert q.mean() - 2 * se > 1.0
    assert np.mean(q > stats.chi2.median(1)) > 0.6
    assert gs.p_global == pytest.approx(1.0)  # z_local = 0: every toy is at least as extreme


def test_background_toy_weights_are_poisson_subsamples():
    toys = np.array([background_toy_weights(1000, 300.0, seed=s) for s in spawn_seeds(2, 400)])
    assert set(np.unique(toys)) == {0.0, 1.0}
    n = toys.sum(axis=1)
    assert abs(n.mean() - 300) < 5 * math.sqrt(300 / 400)
    assert n.var(ddof=1) == pytest.approx(300, rel=0.25)  # Poisson: variance = mean
    assert abs(toys.mean() - 0.3) < 0.005  # every event equally likely
    np.testing.assert_array_equal(toys[0], background_toy_weights(1000, 300.0, seed=spawn_seeds(2, 1)[0]))


# ---- (c) the p-value, its bound and the tail extrapolation ---------------------------------------------
def test_p_value_formula_and_bound():
    toys = [0.0, 1.0, 4.0, 9.0]
    pv = p_value_from_toys(toys, 4.0)
    assert (pv["n"], pv["k"]) == (4, 2)
    assert pv["p"] == pytest.approx(3 / 5)
    assert pv["p_fraction"] == pytest.approx(0.5)
    assert pv["p_error"] == pytest.approx(math.sqrt(0.6 * 0.4 / 4))
    assert not pv["bound"]
    pv = p_value_from_toys(toys, 100.0)
    assert pv["k"] == 0
    assert pv["bound"]
    assert pv["p"] == pytest.approx(1 / 5)
    assert pv["p_upper_95"] == pytest.approx(1 - 0.05 ** (1 / 4))
    assert p_value_from_toys(toys, 0.0)["p"] == 1.0


def test_summary_of_toys_with_bound_and_failures():
    rng = np.random.default_rng(3)
    q = rng.chisquare(3, size=200)
    results = [{"ok": True, "q0": float(v), "z": float(np.sqrt(v)), "time_s": 0.1, "n_drawn": 10} for v in q]
    results.append({"ok": False, "error": "FitError: boom", "index": 200})
    gs = summarize_lee_toys(results, 6.0)  # q0 = 36: beyond every toy
    assert gs.n_toys == 201
    assert gs.n_used == 200
    assert gs.n_failed == 1
    assert gs.bound
    assert gs.n_exceed == 0
    assert gs.p_global == pytest.approx(1 / 201)
    assert gs.z_global == pytest.approx(stats.norm.isf(1 / 201))
    assert gs.z_lower_95 < gs.z_global < gs.z_local_obs
    ex = gs.extrapolation
    assert ex is not None
    assert ex["method"] == "chi2_ndf_tail_fit"
    assert ex["p"] == pytest.approx(stats.chi2.sf(36.0, 3), rel=3)  # toys are χ²_3: the tail follows
    assert "χ²_ν tail extrapolation" in str(gs)
    assert "1 of 201 toys failed" in str(gs)
    gs = summarize_lee_toys(results, 2.5)
    assert not gs.bound
    assert gs.n_exceed == int(np.sum(q >= 6.25))
    assert gs.p_global == pytest.approx((1 + gs.n_exceed) / 201)
    assert 0 < gs.z_global < 2.5
    assert gs.z_global_error > 0
    with pytest.raises(FitError):
        summarize_lee_toys([{"ok": False, "error": "x"}], 1.0)


def test_chi2_tail_extrapolation_recovers_ndf():
    q = np.random.default_rng(5).chisquare(2.0, size=4000)
    ex = chi2_tail_extrapolation(q, 30.0)
    assert abs(ex["ndf"] - 2.0) < 3 * ex["ndf_error"] + 0.05
    assert ex["p_range"][0] <= ex["p"] <= ex["p_range"][1]
    assert math.log(ex["p"]) == pytest.approx(math.log(stats.chi2.sf(30.0, 2.0)), abs=1.0)
    assert chi2_tail_extrapolation(q, 0.1) is None  # below the threshold: nothing to extrapolate
    assert chi2_tail_extrapolation(q[:3], 30.0) is None


# ---- (d) bad input ---------------------------------------------------------------------------------------
def test_bad_input(observed, oracle, reference, sim):
    fitter, _ = observed
    for n in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="n_toys"):
            global_significance(fitter, 2.0, n, 0)
    for z in (-1.0, math.nan, math.inf, "3"):
        with pytest.raises(InputError, match="z_local"):
            global_significance(fitter, z, 2, 0)
    no_ref = SignalFitter(oracle, fitter.engine.events)
    with pytest.raises(InputError, match="reference"):
        global_significance(no_ref, 2.0, 2, 0)
    with pytest.raises(InputError, match="reference"):
        global_significance(fitter, 2.0, 2, 0, reference=reference[:, :3])
    with pytest.raises(InputError, match="too few"):  # toys are subsamples: the reference must be larger
        global_significance(fitter, 2.0, 2, 0, reference=reference[:3000])
    with pytest.raises(InputError, match="seed"):
        global_significance(fitter, 2.0, 2, -5)
    with pytest.raises(InputError, match="n_expected"):
        global_significance(fitter, 2.0, 2, 0, n_expected=0)
    extended = SignalFitter(oracle, fitter.engine.events, reference=reference, background_yield=(3000, 50))
    with pytest.raises(InputError, match="extended"):
        global_significance(extended, 2.0, 2, 0)
    with pytest.raises(InputError):
        global_significance("not a fitter", 2.0, 2, 0)
    with pytest.raises(InputError):
        p_value_from_toys([], 1.0)
    with pytest.raises(InputError):
        p_value_from_toys([1.0, -2.0], 1.0)
    with pytest.raises(InputError):
        p_value_from_toys([1.0], math.nan)
    with pytest.raises(InputError):
        local_significance({"nll": -3})
    with pytest.raises(FitError):
        local_significance(FitResult(values={"mu": 0.1, "mx": 300.0, "my": 150.0}))
    with pytest.raises(InputError):
        background_toy_weights(0, 10.0)
    with pytest.raises(InputError, match="larger reference"):
        background_toy_weights(100, 1000.0, seed=1)


# ---- machinery: resume, θ-table reuse, Dask-portable state ------------------------------------------------
def test_store_resumes_and_extends(observed, lee_run, tmp_path):
    fitter, _ = observed
    gs, store = lee_run
    other = tmp_path / "toys.jsonl"
    other.write_bytes(store.read_bytes())
    more = global_significance(fitter, gs.z_local_obs, N_TOYS + 1, SEED, store_path=other, progress=False)
    assert more.toy_z[:N_TOYS] == gs.toy_z  # the stored toys are read back, not refitted
    assert len(ResultStore(other, read_only=True)) == N_TOYS + 1
    with pytest.raises(ConfigError):  # other toys (another seed) are refused
        global_significance(fitter, 1.0, 2, SEED + 1, store_path=other, progress=False)


def test_theta_table_nodes_are_reused_between_toys(oracle, reference):
    spec = LeeSpec(oracle, reference[:3000], 800.0, {"theta_table": True})  # small: table nodes cost
    state = build_lee_state(spec)
    seeds = spawn_seeds(1, 2)
    first = run_one_lee_toy(state, seeds[0])
    second = run_one_lee_toy(state, seeds[1])
    assert first["ok"], first.get("error")
    assert second["ok"], second.get("error")
    assert first["nodes"] > 0
    assert second["nodes"] - first["nodes"] < first["nodes"]  # the probe nodes are not recomputed


def test_dask_state_is_portable(oracle, reference):
    """A used oracle holds compiled functions that do not pickle; workers get a recipe instead."""
    from gbi_zfit.inference.lee import _portable

    spec = LeeSpec(oracle, reference[:2000], 500.0, {})
    factory = functools.partial(build_lee_state, dataclasses.replace(spec, ratio_model=_portable(oracle)))
    state = pickle.loads(pickle.dumps(factory))()
    p = [0.01, 300.0, 150.0]
    assert state.fitter.engine(p) == pytest.approx(build_lee_state(spec).fitter.engine(p), rel=1e-10)


# ---- (e) the command line and the figure -------------------------------------------------------------------
def test_cli_fit_global_toys(tmp_path, capsys, monkeypatch, sim, reference):
    from gbi_zfit.cli import basic

    monkeypatch.setattr(basic, "_benchmark_reference", lambda sim, seed: reference)  # small and fast
    data = tmp_path / "d.npz"
    args = ["generate", "--out", str(data), "--s-over-sqrt-b", "3", "--n-background", "30000", "--seed", "4"]
    assert main(args) == 0
    out = tmp_path / "out"
    assert main(["fit", str(data), "--oracle", "--out", str(out), "--global-toys", "3"]) == 0
    text = capsys.readouterr().out
    assert "global significance: Z" in text
    assert "from 3 background-only toys (local Z = " in text
    res = FitResult.from_json(out / "results" / "d_fit.json")  # still a FitResult
    gs = GlobalSignificance.from_dict(res.info["global_significance"])
    assert gs.n_toys == 3
    assert len(gs.toy_z) == 3
    assert gs.z_global <= gs.z_local_obs
    assert len(ResultStore(out / "results" / "d_fit_global_toys.jsonl", read_only=True)) == 3
    assert (out / "figures" / "d_fit_global_significance.png").stat().st_size > 10_000
    assert main(["fit", str(data), "--oracle", "--global-toys", "0"]) == 2
    assert "--global-toys" in capsys.readouterr().err
    assert main(["fit", str(data), "--oracle", "--dask"]) == 2
    assert "--global-toys" in capsys.readouterr().err
