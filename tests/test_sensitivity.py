"""The sensitivity study (benchmarks/sensitivity.py): aggregation, task list, figures; a tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from gbi_zfit.errors import InputError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def sens():
    spec = importlib.util.spec_from_file_location("sensitivity_benchmark", BENCHMARKS / "sensitivity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass/pickle lookups need the module registered
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


RATIOS = (0.8, 0.9, 1.0, 1.1, 1.2)  # μ̂/μ_true of the 5 realisations: median 1, q16 0.864, q84 1.136


def _record(mx, my, sosb, r, *, ok=True):
    """A synthetic data-set result with known values (N_B = 10^4, so μ_true follows from S/√B)."""
    n_b, n_s = 10_000, round(sosb * 100)
    mu = n_s / (n_s + n_b)
    rec = {"mx": mx, "my": my, "s_over_sqrt_b": sosb, "realisation": r, "ok": ok}
    if not ok:
        return {**rec, "error": "FitError: synthetic"}
    fit = {
        "learned": {"mu": RATIOS[r] * mu, "z": 1.0 + r, "zf": 2.0 + r, "mx": mx + 10 * (r - 2)},
        "oracle": {"mu": mu, "z": 2.0 * (1.0 + r), "zf": 2.0 * (2.0 + r), "mx": mx},
    }
    for m, f in fit.items():
        rec[m] = {
            "values": {"mu": f["mu"], "mx": f["mx"], "my": my},
            "errors": {"mu": 0.1 * mu, "mx": 5.0, "my": 5.0},
            "valid": m == "oracle" or r != 0,
            "at_limit": False,
            "nll": -1.0,
            "z": f["z"],
            "z_fixed_theta": f["zf"],
            "mu_fixed_theta": f["mu"],
            "time_s": 1.0,
        }
    rec.update(
        n_signal=n_s,
        n_background=n_b,
        mu_true=mu,
        pearson={"all": 0.9 + 0.01 * r, "background": 0.8, "signal": 0.7},
    )
    return rec


@pytest.fixture(scope="module")
def records():
    recs = [
        _record(mx, my, s, r)
        for (mx, my) in ((300.0, 150.0), (425.0, 225.0))
        for s in (0.5, 2.0)
        for r in range(5)
    ]
    recs.append(_record(300.0, 150.0, 0.5, 5, ok=False))  # a failure is counted, not aggregated
    return recs


def test_summarize_known_quantiles(sens, records):
    rows = sens.summarize(records)
    assert [(r["mx"], r["my"], r["s_over_sqrt_b"]) for r in rows] == [
        (300.0, 150.0, 0.5),
        (300.0, 150.0, 2.0),
        (425.0, 225.0, 0.5),
        (425.0, 225.0, 2.0),
    ]
    first = rows[0]
    assert (first["n_datasets"], first["n_failed"]) == (6, 1)
    assert first["mu_true"]["median"] == pytest.approx(50 / 10_050)
    lrn, orc = first["learned"], first["oracle"]
    assert lrn["mu_ratio"]["median"] == pytest.approx(1.0)
    assert lrn["mu_ratio"]["q16"] == pytest.approx(0.864)
    assert lrn["mu_ratio"]["q84"] == pytest.approx(1.136)
    assert lrn["mu_ratio"]["n"] == 5
    assert orc["mu_ratio"]["median"] == pytest.approx(1.0)
    assert orc["mu_ratio"]["q16"] == pytest.approx(1.0)
    assert lrn["mx"]["median"] == pytest.approx(300.0)
    assert lrn["mx"]["q84"] == pytest.approx(313.6)
    assert lrn["valid_fraction"] == pytest.approx(0.8)
    assert orc["valid_fraction"] == pytest.approx(1.0)
    # Z learned 1..5 (median 3), oracle 2..10 (median 6): ratio of medians 0.5, paired ratios all 0.5
    assert lrn["z"]["median"] == pytest.approx(3.0)
    assert orc["z"]["median"] == pytest.approx(6.0)
    assert first["z_ratio"] == pytest.approx(0.5)
    assert first["z_ratio_paired"]["q16"] == pytest.approx(0.5)
    assert first["z_ratio_paired"]["q84"] == pytest.approx(0.5)
    # θ fixed: learned 2..6 (median 4), oracle 4..12 (median 8)
    assert first["z_ratio_fixed"] == pytest.approx(0.5)
    assert first["pearson"]["all"]["median"] == pytest.approx(0.92)
    assert first["pearson"]["signal"]["median"] == pytest.approx(0.7)
    assert rows[1]["mu_true"]["median"] == pytest.approx(200 / 10_200)


def test_summarize_all_failed_and_zero_oracle(sens):
    rows = sens.summarize([_record(300.0, 150.0, 1.0, 0, ok=False)])
    assert rows[0]["n_failed"] == 1
    assert math.isnan(rows[0]["learned"]["mu_hat"]["median"])
    assert rows[0]["learned"]["mu_hat"]["n"] == 0
    assert math.isnan(rows[0]["z_ratio"])
    rec = _record(300.0, 150.0, 1.0, 1)
    rec["oracle"]["z"] = 0.0  # μ̂ = 0: no ratio, not a division by zero
    row = sens.summarize([rec])[0]
    assert math.isnan(row["z_ratio"])
    assert row["z_ratio_paired"]["n"] == 0


def test_table_and_json_cleaning(sens, records):
    rows = sens.summarize(records)
    table = sens.format_table(rows)
    assert len(table.splitlines()) == 2 + len(rows)
    assert "1.00 [0.86, 1.14]" in table  # learned μ̂/μ: median [q16, q84]
    clean = sens._clean({"a": [math.nan, 1.0, math.inf], "b": (2.0,)})
    assert clean == {"a": [None, 1.0, None], "b": [2.0]}


def test_items_stable_when_extended(sens):
    short = sens.make_items(3, 2, [(300.0, 150.0), (425.0, 225.0)], [0.5, 1.0, 2.0])
    long = sens.make_items(3, 4, [(300.0, 150.0), (425.0, 225.0)], [0.5, 1.0, 2.0])
    assert len(short) == 12
    assert len(long) == 24
    assert [i["index"] for i in long] == list(range(24))
    for a, b in zip(short, long[:12], strict=True):
        assert {k: a[k] for k in ("realisation", "mx", "my", "s_over_sqrt_b")} == {
            k: b[k] for k in ("realisation", "mx", "my", "s_over_sqrt_b")
        }
        assert a["seed"].generate_state(2).tolist() == b["seed"].generate_state(2).tolist()
    # one background per realisation, shared by all θ and S/√B; realisations differ
    states = {i["realisation"]: tuple(i["seed"].generate_state(2)) for i in long}
    assert len(set(states.values())) == 4
    assert all(tuple(i["seed"].generate_state(2)) == states[i["realisation"]] for i in long)


def test_plot_mu_hat_draws_the_medians(sens, records, tmp_path):
    from gbi_zfit.plotting.sensitivity import plot_mu_hat

    rows = sens.summarize(records)
    fig = plot_mu_hat(rows, records=records)
    top = fig.axes[0]
    assert top.get_xscale() == "log"
    assert top.get_yscale() == "log"
    lines = {ln.get_label(): ln for ln in top.get_lines()}
    learned = lines["GBI-PAWS (learned): median, 16–84 %"]
    oracle = lines["oracle: median, 16–84 %"]
    mu_true = [r["mu_true"]["median"] for r in rows[:2]]
    np.testing.assert_allclose(learned.get_ydata(), mu_true)  # median ratio 1
    np.testing.assert_allclose(oracle.get_ydata(), mu_true)
    diagonal = lines[r"$\hat\mu = \mu_\mathrm{inj}$"]
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())
    path = plot_mu_hat(rows, tmp_path / "fig1.png")
    assert path.stat().st_size > 10_000
    with pytest.raises(InputError):
        plot_mu_hat([])


def test_plot_mass_scatter_points_and_truth(records, tmp_path):
    from gbi_zfit.plotting.sensitivity import plot_mass_scatter

    fig = plot_mass_scatter(records)
    # 2 mass points × 2 methods, each with a colour bar
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 4
    learned_300 = panels[0]
    xy = learned_300.collections[0].get_offsets()
    assert len(xy) == 10  # 2 S/√B × 5 realisations; the failed record is skipped
    assert sorted(np.unique(np.asarray(xy)[:, 0]).tolist()) == [280.0, 290.0, 300.0, 310.0, 320.0]
    truth = next(ln for ln in learned_300.get_lines() if ln.get_label() == "truth")
    assert (truth.get_xdata()[0], truth.get_ydata()[0]) == (300.0, 150.0)
    assert plot_mass_scatter(records, tmp_path / "fig2.png").stat().st_size > 10_000
    with pytest.raises(InputError):
        plot_mass_scatter([r for r in records if not r["ok"]])


@pytest.mark.slow
def test_end_to_end_tiny(sens, tmp_path, capsys):
    """Train ``test`` presets on a small data set, fit one data set with both methods, resume."""
    args = [
        "--models", str(tmp_path / "models"),
        "--cfm-preset", "test",
        "--classifier-preset", "test",
        "--n-background", "200000",
        "--train-n-background", "200000",
        "--realisations", "1",
        "--s-over-sqrt-b", "3",
        "--theta", "300", "150",
        "--out", str(tmp_path / "out"),
        "--no-progress",
    ]  # fmt: skip
    result = sens.main(args)
    (rec,) = result["records"]
    assert rec["ok"], rec.get("error")
    assert rec["n_signal"] == round(3 * math.sqrt(rec["n_background"]))
    oracle, learned = rec["oracle"], rec["learned"]
    assert oracle["valid"]
    assert oracle["values"]["mu"] / rec["mu_true"] == pytest.approx(1.0, abs=0.35)
    assert oracle["values"]["mx"] == pytest.approx(300, abs=40)
    assert oracle["z_fixed_theta"] > 10  # S/√B = 3 with θ known: the oracle is far above 3σ
    assert learned["z"] >= 0
    assert learned["values"]["mu"] >= 0
    assert rec["pearson"]["all"] > 0.3
    assert (tmp_path / "out" / "sensitivity_fig1.png").stat().st_size > 0
    # resume: the stored data set is reused, the models are loaded, nothing is refitted
    again = sens.main(args)
    assert again["records"] == result["records"]
    assert "loaded from" in capsys.readouterr().out


def test_engine_tools_any_event_count(sim):
    """Compiled Λ and the μ-only minimum serve data sets of any size: the oracle's per-event log p_B and
    the classifier's chunked events (a scalar event count, a size-dependent chunk length)."""
    from gbi_zfit.data.events import get_feature_set
    from gbi_zfit.inference import SignalFitter
    from gbi_zfit.inference._engine_tools import log_ratio
    from gbi_zfit.inference.fisher import discovery_q0
    from gbi_zfit.models.classifier import ClassifierEnsemble
    from gbi_zfit.models.oracle import OracleRatio
    from gbi_zfit.models.preprocessing import FeatureTransform

    rng = np.random.default_rng(5)
    x = sim.sample_background_sr(3000, seed=5).features("paws")
    shapes = [(8, 16), (16,), (16, 8), (8,), (8, 1), (1,)]  # 6 features + 2 θ → 16 → 8 → logit
    ensemble = ClassifierEnsemble(
        [[0.3 * rng.normal(size=s) for s in shapes] for _ in range(2)],
        FeatureTransform.fit(x, get_feature_set("paws").names),
        theta_bounds=((50.0, 600.0), (50.0, 600.0)),
        log_kappa=0.0,
        chunk_size=1024,
    )
    for model in (ensemble, OracleRatio(sim)):
        fitter = SignalFitter(model, x[:2500])
        for n in (2500, 700, 2999):  # classifier: 3, 1 and 3 chunks of different lengths
            fitter.engine.set_data(x[:n])
            expected = fitter.engine.log_ratio(300.0, 150.0)
            np.testing.assert_allclose(log_ratio(fitter.engine, 300.0, 150.0), expected, rtol=1e-6, atol=1e-6)
            assert discovery_q0(fitter, None, theta=(300.0, 150.0)).q0 >= 0


def test_pulls_and_max_z(sens, records):
    lrn = sens.summarize(records)[0]["learned"]
    # pulls (μ̂ − μ)/σ = (ratio − 1)/0.1 = −2, −1, 0, 1, 2
    assert lrn["pull"]["median"] == pytest.approx(0.0)
    assert lrn["pull_width"] == pytest.approx(1.36)
    assert lrn["z_max"] == pytest.approx(5.0)


def test_background_only_rows_and_null_calibration(sens):
    recs = [_record(300.0, 150.0, 0.0, r) for r in range(5)]
    (row,) = sens.summarize(recs)
    assert row["mu_true"]["median"] == 0.0
    assert row["learned"]["mu_ratio"]["n"] == 0  # no μ̂/μ at μ = 0 (not a division by zero)
    (null,) = sens.null_calibration([row])
    # learned Z 1..5 (median 3, max 5), oracle 2..10 (median 6): the median passes, the maximum fails
    assert (null["median_z_learned"], null["median_z_oracle"], null["max_z_learned"]) == (3.0, 6.0, 5.0)
    assert not null["passed"]
    for r in recs:
        r["learned"]["z"] = min(r["learned"]["z"], 3.9)
    assert sens.null_calibration(sens.summarize(recs))[0]["passed"]
    for r in recs:
        r["learned"]["z"] = r["oracle"]["z"] + 0.6  # median above the oracle's by more than 0.5
        r["oracle"]["z"] = min(r["oracle"]["z"], 3.0)
    assert not sens.null_calibration(sens.summarize(recs))[0]["passed"]
    assert sens.null_calibration(sens.summarize([_record(300.0, 150.0, 1.0, 0)])) == []
