"""Pseudo-experiments and coverage (gbi_zfit.inference.toys / .coverage / plotting.toys)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gbi_zfit.errors import ConfigError, InputError
from gbi_zfit.inference import SignalFitter
from gbi_zfit.inference.coverage import (
    CoverageConfig,
    CoverageResult,
    run_coverage,
    summarize_store,
    summarize_toys,
)
from gbi_zfit.inference.toys import (
    ToyConfig,
    ToyState,
    asimov_weights,
    bootstrap_fits,
    fit_asimov,
    model_event_weights,
    model_toy_counts,
    oracle_toy_sample,
    poisson_bootstrap_weights,
    run_one_toy,
    run_toys,
)
from gbi_zfit.models import OracleRatio

THETA = {"mx": 300.0, "my": 150.0}
# the small coverage configuration of the machinery tests: 10k SR background, a clear signal
SMALL = CoverageConfig(s_over_sqrt_b=3.0, n_background_sr=10_000, minos_toys=2)
N_SMALL, SEED = 6, 5


@pytest.fixture(scope="module")
def oracle(sim):
    return OracleRatio(sim)


@pytest.fixture(scope="module")
def reference_fitter(sim, oracle):
    """A fitter whose engine holds 20k SR background events: the reference of model toys and Asimov."""
    ref = oracle.feature_set.extract(sim.sample_background_sr(20_000, seed=21))
    return SignalFitter(oracle, ref)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """An uninterrupted serial coverage run of N_SMALL toys with a store."""
    store = tmp_path_factory.mktemp("cov") / "toys.jsonl"
    result = run_coverage(SMALL, N_SMALL, SEED, store_path=store, progress=False)
    return store, result


# ---- generators --------------------------------------------------------------------------------------
def test_poisson_bootstrap_weights():
    w = poisson_bootstrap_weights(200_000, seed=1)
    assert w.dtype == np.float64
    assert np.all(w == np.round(w))
    assert w.min() >= 0
    assert abs(w.mean() - 1.0) < 5 / math.sqrt(len(w))
    assert abs(w.var() - 1.0) < 0.02
    np.testing.assert_array_equal(w, poisson_bootstrap_weights(200_000, seed=1))
    with pytest.raises(InputError):
        poisson_bootstrap_weights(0)


def test_bootstrap_spread_matches_hesse(sim, oracle):
    x, _, _ = oracle_toy_sample(sim, n_background=10_000, n_signal=300, seed=3, **THETA)
    fitter = SignalFitter(oracle, x)
    # θ fixed at the truth keeps the 30 replica fits fast; the bootstrap weights are what is tested
    data_fit = fitter.fit({"mu": 0.03, **THETA}, fix=("mx", "my"))
    assert data_fit.valid
    reps = bootstrap_fits(fitter, 30, seed=4, start=data_fit.values, fix=("mx", "my"))
    mu = np.array([r.values["mu"] for r in reps])
    assert all(r.valid for r in reps)
    sigma = data_fit.errors["mu"]
    # 30 replicas: the sample standard deviation is known to ~13 %; the bound is loose but real
    assert 0.6 < mu.std(ddof=1) / sigma < 1.5
    assert abs(mu.mean() - data_fit.values["mu"]) < 3 * 1.5 * sigma / math.sqrt(len(mu))
    np.testing.assert_array_equal(fitter.engine.weights.numpy(), 1.0)  # the data's weights are restored


def test_model_toy_counts(sim, oracle, reference_fitter):
    engine = reference_fitter.engine
    mu = 0.05
    q0 = model_event_weights(engine, mu, **THETA)
    rng = np.random.default_rng(8)
    n_exp = 5_000.0
    draws = np.array([model_toy_counts(q0, n_exp, rng) for _ in range(300)])
    sums = draws.sum(axis=1)
    assert np.all(draws == np.round(draws))
    assert draws.min() >= 0
    assert abs(sums.mean() - n_exp) < 4 * math.sqrt(n_exp / len(sums))  # N ~ Poisson(n_exp)
    assert 0.75 < sums.var(ddof=1) / n_exp < 1.3

    # signal-like region: log Λ above the 99 % background quantile
    log_ratio = engine.log_ratio(THETA["mx"], THETA["my"])
    cut = np.quantile(log_ratio, 0.99)
    region = log_ratio > cut
    drawn = draws[:, region].sum() / sums.sum()
    model = q0[region].sum() / q0.sum()  # what the weighted resampling must reproduce
    n_tot = sums.sum()
    assert abs(drawn - model) < 4 * math.sqrt(model * (1 - model) / n_tot)
    # ... and the model itself is (1 − μ) P_B(R) + μ P_S(R), from independent samples
    sig = oracle.feature_set.extract(sim.sample_signal(20_000, region="sr", seed=9, **THETA))
    bkg = oracle.feature_set.extract(sim.sample_background_sr(20_000, seed=10))
    p_s = np.mean(oracle.log_ratio_numpy(sig, **THETA) > cut)
    p_b = np.mean(oracle.log_ratio_numpy(bkg, **THETA) > cut)
    truth = (1 - mu) * p_b + mu * p_s
    # errors: the reference's importance-sampling error of the model fraction (delta method for
    # Σ q 1_R / Σ q), the independent samples' binomial errors, and the drawn fraction's
    a = q0 * region
    ref_err = np.std(a - model * q0) / (math.sqrt(len(q0)) * q0.mean())
    err = math.sqrt(
        ref_err**2
        + (1 - mu) ** 2 * p_b * (1 - p_b) / 20_000
        + mu**2 * p_s * (1 - p_s) / 20_000
        + drawn * (1 - drawn) / n_tot
    )
    assert abs(drawn - truth) < 4 * err
    assert drawn > 3 * p_b  # the signal really is drawn


def test_model_toy_input_checks():
    with pytest.raises(InputError):
        model_toy_counts(np.array([0.0, 0.0]), 10)
    with pytest.raises(InputError):
        model_toy_counts(np.array([1.0, -1.0]), 10)
    with pytest.raises(InputError):
        asimov_weights(np.array([1.0, 1.0]), 0)
    np.testing.assert_allclose(asimov_weights(np.array([1.0, 3.0]), 8), [2.0, 6.0])


def test_asimov_fit_returns_the_generating_parameters(reference_fitter):
    truth = {"mu": 0.03, **THETA}
    res = fit_asimov(reference_fitter, truth)
    assert res.valid
    for name, value in truth.items():
        assert res.values[name] == pytest.approx(value, rel=1e-3), name
    assert res.info["normalisation"] == "reference"
    assert reference_fitter.engine.sum_weights == pytest.approx(reference_fitter.engine.n_events)
    # the mirror image is the same point: reported canonically
    mirrored = fit_asimov(reference_fitter, {"mu": 0.03, "mx": 150.0, "my": 300.0})
    assert mirrored.values["mx"] == pytest.approx(300.0, rel=1e-3)
    # the analytically normalised fit of the same Asimov set is off by the reference's MC error only
    analytic = fit_asimov(reference_fitter, truth, normalisation="analytic", hesse=True)
    assert analytic.valid
    assert abs(analytic.values["mu"] - truth["mu"]) < 3 * analytic.errors["mu"]
    reference_fitter.engine.set_weights(None)


def test_toy_config():
    c = ToyConfig(s_over_sqrt_b=1.0, mx=150.0, my=300.0)
    assert (c.mx, c.my) == (300.0, 150.0)  # canonical
    assert c.n_signal_sr == pytest.approx(math.sqrt(117_866))
    assert c.mu_true == pytest.approx(c.n_signal_sr / (c.n_signal_sr + 117_866))
    assert ToyConfig.from_dict(c.to_dict()) == c
    assert ToyConfig(minos_toys=3).minos_for(2)
    assert not ToyConfig(minos_toys=3).minos_for(3)
    for bad in ({"kind": "nope"}, {"s_over_sqrt_b": -1}, {"minos_toys": -1}, {"n_background_sr": 0}):
        with pytest.raises(InputError):
            ToyConfig(**bad)
    with pytest.raises(InputError):
        ToyConfig.from_dict({"bogus": 1})
    with pytest.raises(InputError):
        run_toys(c, 0, 1)


def test_failed_toy_is_recorded(reference_fitter, sim):
    state = ToyState(ToyConfig(kind="model"), reference_fitter, sim, {"mu": 0.01, **THETA})
    seed = np.random.SeedSequence(1).spawn(1)[0]
    out = run_one_toy(state, seed)  # no model weights: the toy raises inside, and is recorded
    assert out["ok"] is False
    assert "InputError" in out["error"]
    assert out["index"] == 0
    summary = summarize_toys([out], state.config, 1)
    assert summary.n_failed == 1
    assert summary.n_used == 0
    assert summary.failures[0]["index"] == 0


def _strip(results: list[dict]) -> dict:
    """Per-toy results by index, without the (machine-dependent) timings."""
    return {r["index"]: {k: v for k, v in r.items() if "time" not in k} for r in results}


def _without_times(res: CoverageResult) -> dict:
    d = res.to_dict()
    d.pop("time_per_toy_s")
    return d


# ---- the coverage machinery ---------------------------------------------------------------------------
def test_coverage_run_and_resume(small_run, tmp_path):
    store, full = small_run
    assert full.n_done == N_SMALL
    assert full.n_failed == 0
    assert full.n_used == N_SMALL
    assert full.coverage["minos_68"]["n"] == 2  # MINOS on the first two toys only
    assert full.minos_check["n"] == 2
    assert full.minos_check["mismatch"] == []
    assert full.truth["mu"] == pytest.approx(SMALL.mu_true)
    # interrupted half-way: the store holds the header and the first half of the toys
    lines = store.read_text().splitlines()
    half = tmp_path / "half.jsonl"
    half.write_text("\n".join(lines[: 1 + N_SMALL // 2]) + "\n")
    resumed = run_coverage(SMALL, N_SMALL, SEED, store_path=half, progress=False)
    assert _without_times(resumed) == _without_times(full)  # recomputed toys took other times
    first = [json.loads(line)["result"] for line in lines[1:]]
    again = [json.loads(line)["result"] for line in half.read_text().splitlines()[1:]]
    assert _strip(first) == _strip(again)
    assert summarize_store(store) == full
    # a store of another configuration (or seed) is refused
    with pytest.raises(ConfigError):
        run_coverage(SMALL, N_SMALL, SEED + 1, store_path=store, progress=False)


def test_coverage_result_roundtrip_and_table(small_run, tmp_path):
    _, res = small_run
    path = tmp_path / "cov.json"
    res.to_json(path)
    back = CoverageResult.from_json(path)
    assert back == res
    assert CoverageResult.from_dict(json.loads(res.to_json())) == res
    text = str(res)
    assert "(mX,mY) (k=2) 68.3 %" in text
    assert "χ²_k" in text
    assert res.threshold("t_theta", 0.95) == pytest.approx(np.quantile(res.samples["t_theta"], 0.95))
    for stat in ("t_mu", "t_theta"):
        assert {round(r["cl"], 3) for r in res.neyman[stat]["levels"]} == {0.683, 0.95}


def test_plots(small_run, tmp_path):
    from gbi_zfit.plotting.toys import plot_pulls, plot_test_statistics

    _, res = small_run
    assert plot_pulls(res, tmp_path / "pulls.png").stat().st_size > 0
    assert plot_test_statistics(res, tmp_path / "t.png").stat().st_size > 0


@pytest.mark.slow
def test_serial_and_dask_give_identical_toys(small_run):
    from gbi_zfit.parallel import DaskExecutor

    store, _ = small_run
    serial = [json.loads(line)["result"] for line in store.read_text().splitlines()[1:]]
    serial = sorted(serial, key=lambda r: r["index"])[:3]
    with DaskExecutor(n_workers=2) as ex:
        dask = run_toys(SMALL, 3, SEED, ex, progress=False)
    assert _strip([json.loads(json.dumps(r)) for r in dask]) == _strip(serial)


def test_model_weights_clip_negative_density_with_warning(caplog):
    class Engine:
        def log_ratio(self, mx, my):
            return np.log(np.array([0.5, 1.0, 2.0, 10.0]))

    w = model_event_weights(Engine(), 0.1, 300.0, 150.0)
    np.testing.assert_allclose(w, [0.95, 1.0, 1.1, 1.9])
    with caplog.at_level("WARNING", logger="gbi_zfit.inference.toys"):
        w = model_event_weights(Engine(), -0.2, 300.0, 150.0)  # 1 + 1/0.2 = 6 < Λ = 10
    np.testing.assert_allclose(w, [1.1, 1.0, 0.8, 0.0])
    assert "negative on 1 of 4 events" in caplog.text
