"""Fit speed, accuracy and memory: oracle, standard and paper-size learned models, exact vs θ-fast path.

On the SR of one benchmark data set (1M background, S/√B = 1 at θ = (300, 150): ≈118k events), each row
is one fit in a fresh process (so its peak RSS is its own):

* ``full``: what ``gbi fit`` runs — multi-start (probe grid + starts) + MIGRAD + HESSE + MINOS(μ);
* ``start``: MIGRAD + HESSE + MINOS(μ) from a good start (the truth);

with the oracle (fast engine), and with learned classifier ensembles on the θ-fast path (log Λ
tabulated in θ, :mod:`gbi_zfit.inference.table`) and on the exact path (``theta_table=False``: the
network over all events at every call). The θ-fast minimum is compared with the exact one from the same
start: ΔNLL of the exact NLL at both minima and the shift of μ̂, θ̂ in σ.

Learned models: the ``standard`` preset (3 × 128-64-32) and the paper's architecture (10 × 256-128-64,
trained for ``--paper-epochs`` epochs — speed depends on the architecture, the shape of the likelihood
on training), both on the true SR background; trained once into ``--work`` and reused.

    python benchmarks/fit_speed.py [--work DIR] [--skip-exact-paper] [--rows oracle,standard,paper]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

THETA = (300.0, 150.0)


def _data(n_background: int, seed: int):
    from gbi_zfit.data.benchmark import LHCOSim

    sim = LHCOSim()
    data = sim.make_dataset(s_over_sqrt_b=1.0, mx=THETA[0], my=THETA[1], n_background=n_background, seed=seed)
    sr = sim.signal_region.signal_region(data)
    return sim, sr, {"mu": float(sr.label.mean()), "mx": THETA[0], "my": THETA[1]}


def train_models(work: Path, paper_epochs: int) -> None:
    """The standard and paper-architecture ensembles (true SR background; skipped when present)."""
    from gbi_zfit.data.benchmark import LHCOSim
    from gbi_zfit.models.classifier import ClassifierConfig, train_classifier_ensemble

    sim = LHCOSim()
    bkg = None
    for name, cfg in (
        ("standard", ClassifierConfig.preset("standard")),
        (
            "paper",
            ClassifierConfig.preset(
                "paper", n_background=150_000, n_signal_per_point=800, epochs=paper_epochs, patience=2
            ),
        ),
    ):
        out = work / name
        if (out / "model.json").exists():
            continue
        if bkg is None:
            bkg = sim.sample_background_sr(300_000, seed=11).features("paws")
        t0 = time.perf_counter()
        model = train_classifier_ensemble(bkg, cfg, seed=5, store=work / f"{name}.jsonl")
        model.save(out)
        print(f"trained {name}: {model} in {time.perf_counter() - t0:.0f} s", flush=True)


def one(model_name: str, path: str, fit: str, work: Path, n_background: int, seed: int) -> dict:
    """One fit in this process; returns its figures."""
    from gbi_zfit.inference import SignalFitter
    from gbi_zfit.models import OracleRatio
    from gbi_zfit.models.classifier import ClassifierEnsemble

    sim, sr, truth = _data(n_background, seed)
    x = sr.features("paws")
    model = OracleRatio(sim) if model_name == "oracle" else ClassifierEnsemble.load(work / model_name)
    t0 = time.perf_counter()
    fitter = SignalFitter(model, x, theta_table=(path == "fast"))
    if fit == "full":
        res = fitter.fit_multistart(minos=("mu",), truth=truth)
    else:
        res = fitter.fit(truth, minos=("mu",), truth=truth)
    wall = time.perf_counter() - t0
    table = res.info.get("table", {})
    exact_nll = fitter.engine([res.values[n] for n in ("mu", "mx", "my")])
    return {
        "model": model_name,
        "path": path,
        "fit": fit,
        "wall_s": wall,
        "calls": res.n_calls,
        "nodes": sum(t["nodes"] + t.get("probe_nodes", 0) for t in table.get("tables", [])),
        "node_time_s": sum(t["node_time_s"] for t in table.get("tables", [])),
        "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "valid": res.valid,
        "values": res.values,
        "errors": res.errors,
        "minos": res.minos,
        "exact_nll_at_min": exact_nll,
        "table_delta_nll": table.get("check", {}).get("delta_nll"),
        "exact_gain": table.get("exact_gain"),
        "n_events": res.n_events,
    }


def _run_row(args, model, path, fit) -> dict | None:
    cmd = [sys.executable, __file__, "--one", model, path, fit, "--work", str(args.work)]
    cmd += ["--n-background", str(args.n_background), "--seed", str(args.seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"row {model}/{path}/{fit} failed:\n{proc.stderr[-2000:]}", flush=True)
        return None
    row = json.loads(lines[-1])
    print(
        f"  {model:>8} {path:>5} {fit:>5}: {row['wall_s']:7.1f} s, {row['calls']} calls, "
        f"{row['nodes']} nodes, RSS {row['rss_gib']:.2f} GiB",
        flush=True,
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("benchmarks/results/fit_speed_models"))
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--paper-epochs", type=int, default=4)
    ap.add_argument("--rows", default="oracle,standard,paper")
    ap.add_argument("--skip-exact-paper", action="store_true", help="the exact paper-size fit takes minutes")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fit_speed.json"))
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "PATH", "FIT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.work, args.n_background, args.seed)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    rows_wanted = args.rows.split(",")
    if {"standard", "paper"} & set(rows_wanted):
        train_models(args.work, args.paper_epochs)
    plan = []
    for model in rows_wanted:
        if model == "oracle":
            plan += [("oracle", "exact", "full"), ("oracle", "exact", "start")]
            continue
        plan += [(model, "fast", "full"), (model, "fast", "start")]
        if not (model == "paper" and args.skip_exact_paper):
            plan.append((model, "exact", "start"))
    rows = [r for r in (_run_row(args, *p) for p in plan) if r is not None]
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


def table(rows: list[dict]) -> str:
    exact = {r["model"]: r for r in rows if r["path"] == "exact" and r["fit"] == "start"}
    out = [
        (
            "| model | path | fit | wall s | calls | θ nodes | peak RSS GiB | exact NLL at min | ΔNLL vs exact |"
            " max shift vs exact (σ) | μ̂ ± σ | m̂X, m̂Y |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = exact.get(r["model"])
        dnll = shift = ""
        if ref is not None and r is not ref:
            dnll = f"{r['exact_nll_at_min'] - ref['exact_nll_at_min']:+.4f}"
            shift = (
                f"{max(abs(r['values'][n] - ref['values'][n]) / ref['errors'][n] for n in ref['errors']):.3f}"
            )
        v, e = r["values"], r["errors"]
        out.append(
            f"| {r['model']} | {r['path']} | {r['fit']} | {r['wall_s']:.1f} | {r['calls']} | {r['nodes']} | "
            f"{r['rss_gib']:.2f} | {r['exact_nll_at_min']:.3f} | {dnll} | {shift} | "
            f"{v['mu']:.5f} ± {e.get('mu', float('nan')):.5f} | {v['mx']:.1f}, {v['my']:.1f} |"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
