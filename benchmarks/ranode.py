"""R-ANODE on lhco-sim: fitted μ̂ against the injected μ (GBI paper Fig. 1, R-ANODE curves).

For each realisation r (its own background sample) and each S/√B, signal at θ = (300, 150) is injected
into the same background and R-ANODE is run three ways on the SR events (common test fraction 1/2):

* ``learned``   — p_B from a background-flow ensemble trained on the realisation's sidebands and the
  sideband fit of p(mjj) (:class:`~gbi_zfit.models.ranode.FlowBackgroundDensity`), f learned;
* ``oracle_pb`` — the exact p_B of the benchmark, f learned (the paper's appendix-A "ideal background");
* ``ideal``     — exact p_B and the exact p_S at the true θ as f (no training; the sensitivity limit of
  the likelihood on the test set).

Each learned variant gives the paper's μ scan (GP maximum and intervals) and the Minuit fit with f
frozen at the scan's μ̂. With ``--paws-models DIR`` (a directory with ``classifier/``, e.g. the model
cache of ``benchmarks/sensitivity.py``) GBI-PAWS fits the same data sets as well — all their SR events,
blind multi-start, learned ensemble (sampled κ) and the exact oracle ratio — for the same Fig. 1 plot. The summary lists per S/√B and method the median μ̂/μ_true, the median
significance Z = √(2 ΔlnL) and the median 95 % interval, and draws μ̂ vs μ_injected.

    python benchmarks/ranode.py [--sb 0.3 1 2 3] [--realisations 3] [--n-background 1000000]
        [--members 20] [--mu-points 20] [--mu-min 1e-5] [--refine 0] [--bkg-members 20] [--bkg-quick] [--methods learned oracle_pb ideal]
        [--paws-models DIR] [--dask] [--out benchmarks/results/ranode]

Everything is resumable: background flows are saved per realisation, training tasks go to JSON Lines
stores, finished runs to ``runs/<method>_sb<S/√B>_r<r>.json``; rerun the same command to continue.
Writes ``ranode_summary.json`` and ``ranode_mu_hat.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from gbi_zfit._util import atomic_write_text
from gbi_zfit.data.benchmark import LHCOSim
from gbi_zfit.data.mjj import fit_sidebands
from gbi_zfit.inference.ranode import RANODEData, RANODEResult, run_ranode
from gbi_zfit.models.flows import BackgroundFlowEnsemble, FlowConfig
from gbi_zfit.models.ranode import (
    ExactBackgroundDensity,
    ExactSignalDensity,
    FlowBackgroundDensity,
    default_signal_flow_config,
)
from gbi_zfit.parallel import make_executor

THETA = (300.0, 150.0)
METHODS = ("learned", "oracle_pb", "ideal")


def _background_flow(sim, events, r: int, args, executor) -> BackgroundFlowEnsemble:
    path = args.out / "background_flows" / f"r{r}"
    if (path / "model.json").is_file():
        return BackgroundFlowEnsemble.load(path)
    epochs = {"max_epochs": args.bkg_max_epochs} if args.bkg_max_epochs else {}
    if args.bkg_patience:
        epochs["patience"] = args.bkg_patience
    config = FlowConfig.quick(**epochs) if args.bkg_quick else FlowConfig(**epochs)
    flow = BackgroundFlowEnsemble.from_events(
        events,
        sim.signal_region,
        config=config,
        n_members=args.bkg_members,
        seed=1000 + r,
        executor=executor,
        mjj_range=(2650.0, 7000.0),
        progress=not args.no_progress,
        store=args.out / "work" / f"background_flows_r{r}.jsonl",
    )
    flow.save(path)
    return flow


def _run(method: str, sim, events, r: int, sb: float, args, executor, cache: dict) -> dict:
    out = args.out / "runs" / f"{method}_sb{sb:g}_r{r}.json"
    if out.is_file():
        return json.loads(out.read_text())
    if method == "learned":
        # with --shared-sidebands every realisation uses the flows of realisation 0's sidebands: SB and
        # SR events of a Poisson sample are independent, so each data set is still an exact draw; only
        # the spread over realisations no longer includes the flows' training variance
        rb = 0 if args.shared_sidebands else r
        if rb not in cache:
            # signal leakage into the sidebands is neglected, as in the paper (footnote 3): one background
            # model per realisation, trained on its background-only sidebands, serves every injection
            bkg_only = sim.make_dataset(
                s_over_sqrt_b=0.0, n_background=args.n_background, seed=_seed(args, rb)
            )
            cache[rb] = _background_flow(sim, bkg_only, rb, args, executor)
        background = FlowBackgroundDensity(cache[rb], fit_sidebands(events.mjj, sim.signal_region))
    else:
        background = ExactBackgroundDensity(sim)
    data = RANODEData.from_events(events, background, seed=_seed(args, r, 1))
    signal = ExactSignalDensity(sim, *THETA) if method == "ideal" else None
    t0 = time.perf_counter()
    result = run_ranode(
        data,
        signal,
        mu_grid=np.logspace(np.log10(args.mu_min), -1, args.mu_points),
        n_members=args.members,
        config=default_signal_flow_config(),
        seed=_seed(args, r, 2),
        executor=executor,
        workdir=args.out / "work" / f"{method}_sb{sb:g}_r{r}",
        progress=not args.no_progress,
        refine=args.refine,
    )
    record = {
        "method": method,
        "s_over_sqrt_b": sb,
        "realisation": r,
        "time_s": time.perf_counter() - t0,
        **result.to_dict(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=1))
    print(f"--- {method}, S/√B = {sb:g}, realisation {r} ({record['time_s']:.0f} s)\n{result}", flush=True)
    return record


def _run_paws(state, sim, events, r: int, sb: float, args) -> dict:
    """GBI-PAWS (learned and oracle ratio) on all SR events of one data set: μ̂, its error, θ̂ and Z."""
    out = args.out / "runs" / f"paws_sb{sb:g}_r{r}.json"
    if out.is_file():
        return json.loads(out.read_text())
    sr = sim.signal_region.signal_region(events)
    x, label = sr.features("paws"), np.asarray(sr.label, bool)
    mu_true = float(label.mean())
    truth = {"mu": mu_true, "mx": THETA[0], "my": THETA[1]}
    record = {"method": "paws", "s_over_sqrt_b": sb, "realisation": r, "mu_true": mu_true, "n_sr": len(x)}
    t0 = time.perf_counter()
    for name in state.fitters:
        res, disc = state.fit(name, x, truth)
        record[name] = {
            "mu_hat": float(res.values["mu"]),
            "error": float(res.errors["mu"]),
            "mx": float(res.values["mx"]),
            "my": float(res.values["my"]),
            "valid": bool(res.valid),
            "z": float(disc.Z),
        }
    record["time_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=1))
    print(
        f"--- GBI-PAWS, S/√B = {sb:g}, realisation {r}: μ_true {mu_true:.3g}; "
        + "; ".join(
            f"{k} μ̂ {record[k]['mu_hat']:.3g} ± {record[k]['error']:.2g} at ({record[k]['mx']:.0f}, "
            f"{record[k]['my']:.0f}), Z {record[k]['z']:.1f}"
            for k in state.fitters
        ),
        flush=True,
    )
    return record


def _paws_summary(records: list[dict]) -> dict:
    out: dict = {}
    for rec in records:
        out.setdefault(f"{rec['s_over_sqrt_b']:g}", {"runs": []})["runs"].append(rec)
    for row in out.values():
        runs = row["runs"]
        row["median"] = {"mu_true": float(np.median([e["mu_true"] for e in runs]))}
        for name in ("learned", "oracle"):
            row["median"][f"{name}_mu_hat_over_true"] = float(
                np.median([e[name]["mu_hat"] / e["mu_true"] if e["mu_true"] > 0 else np.nan for e in runs])
            )
            row["median"][f"{name}_z"] = float(np.median([e[name]["z"] for e in runs]))
    return out


def _seed(args, r: int, k: int = 0) -> np.random.SeedSequence:
    return np.random.SeedSequence(args.seed, spawn_key=(r, k))


def _summary(records: list[dict]) -> dict:
    out: dict = {}
    for rec in records:
        res = RANODEResult.from_dict(rec)
        truth = res.scan.truth["mu"]
        row = out.setdefault(rec["method"], {}).setdefault(f"{rec['s_over_sqrt_b']:g}", {"runs": []})
        entry = {
            "mu_true": truth,
            "scan_mu_hat": res.scan.mu_hat,
            "scan_interval_95": list(res.scan.interval(0.95)),
            "scan_z": res.scan.significance,
        }
        if res.fit is not None:
            entry.update(
                fit_mu_hat=res.fit.mu,
                fit_error=res.fit.error,
                fit_interval_95=list(res.fit.interval(0.95)),
                fit_z=res.fit.significance,
                fit_pull=(res.fit.mu - truth) / res.fit.error if res.fit.error > 0 else float("nan"),
            )
        row["runs"].append(entry)
    for method in out.values():
        for row in method.values():
            row["median"] = _medians(row["runs"])
    return out


def _medians(runs: list[dict]) -> dict:
    def med(key):
        return float(np.median([e[key] for e in runs]))

    def ratio(key):  # undefined without injected signal (S/√B = 0: the spurious-signal check)
        return float(np.median([e[key] / e["mu_true"] if e["mu_true"] > 0 else np.nan for e in runs]))

    out = {
        "mu_true": med("mu_true"),
        "scan_mu_hat_over_true": ratio("scan_mu_hat"),
        "scan_z": med("scan_z"),
        "scan_interval_95": np.median([e["scan_interval_95"] for e in runs], axis=0).tolist(),
        "scan_covers_95": float(
            np.mean([lo <= e["mu_true"] <= hi for e in runs for lo, hi in [e["scan_interval_95"]]])
        ),
    }
    if "fit_mu_hat" in runs[0]:
        out.update(
            fit_mu_hat_over_true=ratio("fit_mu_hat"),
            fit_z=med("fit_z"),
            fit_pull=med("fit_pull"),
            fit_interval_95=np.median([e["fit_interval_95"] for e in runs], axis=0).tolist(),
            fit_covers_95=float(
                np.mean([lo <= e["mu_true"] <= hi for e in runs for lo, hi in [e["fit_interval_95"]]])
            ),
        )
    return out


def _plot(summary: dict, path: Path, paws: dict | None = None) -> None:
    from gbi_zfit.plotting._style import save, style

    plt, _ = style()
    fig, ax = plt.subplots(figsize=(8, 6.5))
    colours = {"learned": "C0", "oracle_pb": "C1", "ideal": "k"}
    labels = {
        "learned": "R-ANODE (learned $p_B$)",
        "oracle_pb": "R-ANODE (exact $p_B$)",
        "ideal": "exact $p_B$, $p_S$",
    }
    lo_all = []
    for method, rows in summary.items():
        sbs = sorted((s for s in rows if float(s) > 0), key=float)  # S/√B = 0 has no place on log axes
        if not sbs:
            continue
        mu = np.array([rows[s]["median"]["mu_true"] for s in sbs])
        lo_all.append(mu.min())
        med = rows[sbs[0]]["median"]
        key = "fit" if "fit_mu_hat_over_true" in med and method == "ideal" else "scan"
        hat = mu * np.array([rows[s]["median"][f"{key}_mu_hat_over_true"] for s in sbs])
        band = np.array([rows[s]["median"][f"{key}_interval_95"] for s in sbs])
        c = colours.get(method)
        ax.plot(
            mu,
            hat,
            "o-",
            color=c,
            label=f"{labels.get(method, method)}, scan" if key == "scan" else labels.get(method, method),
        )
        ax.fill_between(mu, np.maximum(band[:, 0], 1e-6), band[:, 1], color=c, alpha=0.15)
        if method != "ideal" and "fit_mu_hat_over_true" in med:
            fit = mu * np.array([rows[s]["median"]["fit_mu_hat_over_true"] for s in sbs])
            ax.plot(mu, fit, "s--", color=c, label=f"{labels.get(method, method)}, Minuit")
    for name, c, label in (("learned", "C2", "GBI-PAWS (learned)"), ("oracle", "C3", "GBI-PAWS (oracle)")):
        if not paws:
            break
        sbs = sorted((s for s in paws if float(s) > 0), key=float)
        if not sbs:
            break
        mu = np.array([paws[s]["median"]["mu_true"] for s in sbs])
        hat = mu * np.array([paws[s]["median"][f"{name}_mu_hat_over_true"] for s in sbs])
        ax.plot(mu, np.maximum(hat, 1e-5), "^-", color=c, label=label)
    grid = np.logspace(np.log10(min(lo_all, default=1e-3)) - 0.3, -1.3, 10)
    ax.plot(grid, grid, ":", color="grey", label=r"$\hat\mu = \mu_{inj}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())  # the default minor labels overlap
    ax.set_ylim(1e-5, 0.1)
    ax.set_xlabel(r"injected $\mu$ (SR signal fraction)")
    ax.set_ylabel(r"median $\hat\mu$ (bands: 95 % interval)")
    ax.legend(fontsize=10, loc="lower right")
    fig.tight_layout()
    save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sb", type=float, nargs="+", default=[0.3, 1.0, 2.0, 3.0], help="S/√B values")
    ap.add_argument("--realisations", type=int, default=3)
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--members", type=int, default=20, help="signal flows per μ")
    ap.add_argument("--mu-points", type=int, default=20, help="μ grid: logspace(μ_min, 1e-1, N)")
    ap.add_argument("--mu-min", type=float, default=1e-5, help="lowest μ of the grid (default 1e-5)")
    ap.add_argument("--refine", type=int, default=0, help="second-round μ points around the peak")
    ap.add_argument("--bkg-members", type=int, default=20)
    ap.add_argument("--bkg-quick", action="store_true", help="FlowConfig.quick() background flows")
    ap.add_argument("--bkg-max-epochs", type=int, default=None, help="epoch cap of the background flows")
    ap.add_argument("--bkg-patience", type=int, default=None, help="early-stopping patience, ditto")
    ap.add_argument(
        "--shared-sidebands",
        action="store_true",
        help="train the background flows once, on realisation 0's sidebands, for all realisations",
    )
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--paws-models",
        type=Path,
        default=None,
        help="GBI-PAWS model directory (with classifier/) to overlay",
    )
    ap.add_argument("--dask", action="store_true")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ranode"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sim = LHCOSim()
    records, cache, paws_records = [], {}, []
    paws_state = None
    if args.paws_models is not None:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from sensitivity import FitState

        paws_state = FitState(str(args.paws_models), "sampled", 2, args.n_background, 85.0)
    with make_executor(dask=args.dask, n_workers=args.workers) as executor:
        for r in range(args.realisations):
            for sb in args.sb:
                events = sim.make_dataset(
                    s_over_sqrt_b=sb,
                    mx=THETA[0],
                    my=THETA[1],
                    n_background=args.n_background,
                    seed=_seed(args, r),
                )
                # cheapest first: the ideal fit needs no training
                for method in sorted(args.methods, key=lambda m: METHODS[::-1].index(m)):
                    records.append(_run(method, sim, events, r, sb, args, executor, cache))
                if paws_state is not None:
                    paws_records.append(_run_paws(paws_state, sim, events, r, sb, args))
    summary = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "theta": THETA,
        "results": _summary(records),
    }
    if paws_records:
        summary["gbi_paws"] = _paws_summary(paws_records)
    atomic_write_text(args.out / "ranode_summary.json", json.dumps(summary, indent=1))
    _plot(summary["results"], args.out / "ranode_mu_hat.png", summary.get("gbi_paws"))
    for method, rows in summary["results"].items():
        for sb in sorted(rows, key=float):
            m = rows[sb]["median"]
            fit = (
                f"  Minuit μ̂/μ {m['fit_mu_hat_over_true']:.2f} Z {m['fit_z']:.1f} pull {m['fit_pull']:+.2f}"
                if "fit_z" in m
                else ""
            )
            print(
                f"{method:10s} S/√B {float(sb):4.1f}  μ_true {m['mu_true']:.2e}  scan μ̂/μ {m['scan_mu_hat_over_true']:.2f} "
                f"Z {m['scan_z']:.1f} 95% [{m['scan_interval_95'][0]:.1e}, {m['scan_interval_95'][1]:.1e}]{fit}"
            )
    res = summary["results"]
    if "ideal" in res:
        print("median Z relative to the ideal fit (exact p_B and p_S on the same test events):")
        for sb in sorted(res["ideal"], key=float):
            z0 = res["ideal"][sb]["median"]["scan_z"]
            if not z0 > 0:
                continue
            parts = [
                f"{method} scan {res[method][sb]['median']['scan_z'] / z0:.2f}"
                + (
                    f", Minuit {res[method][sb]['median']['fit_z'] / z0:.2f}"
                    if "fit_z" in res[method][sb]["median"]
                    else ""
                )
                for method in ("learned", "oracle_pb")
                if method in res and sb in res[method]
            ]
            print(f"  S/√B {float(sb):4.1f}: " + "; ".join(parts))
    for sb, row in sorted(summary.get("gbi_paws", {}).items(), key=lambda kv: float(kv[0])):
        m = row["median"]
        print(
            f"GBI-PAWS   S/√B {float(sb):4.1f}  μ_true {m['mu_true']:.2e}  learned μ̂/μ {m['learned_mu_hat_over_true']:.2f} "
            f"Z {m['learned_z']:.1f}  oracle μ̂/μ {m['oracle_mu_hat_over_true']:.2f} Z {m['oracle_z']:.1f}"
        )


if __name__ == "__main__":
    main()
