"""Closure of the R-ANODE background model: learned p_B(x | SR) against the benchmark's exact density.

Trains a background-flow ensemble on the sidebands of a background-only lhco-sim sample, fits p(mjj) in
the sidebands, builds FlowPDF (the SR marginal) and compares on fresh SR background events:

* Δ = log p_learned(x | SR) − log p_true(x | SR): mean (≈ −KL(true ‖ learned), ≤ 0 up to MC error) and
  spread, for the ensemble and for single members, with the fitted and with the true p(mjj);
* normalisation of FlowPDF, E_q[p / q] with a broad Student-t proposal (independent of the flow);
* flow samples vs truth per feature: two-sample KS statistic and χ²/ndf of 40 quantile bins;
* training cost: seconds per epoch per 100k training events (first epoch, which traces the graph,
  excluded).

    python benchmarks/flows_closure.py [--n-background 1000000] [--members 20] [--flow maf|rqs]
        [--quick] [--dask] [--out results/flows_closure]
    python benchmarks/flows_closure.py --flows DIR [--out ...]   # closure of an ensemble trained before

With ``--flows`` nothing is trained: the bundle in DIR is evaluated, with p(mjj) fitted on the sidebands
of a fresh background sample of ``--n-background`` events (``--seed``).

Writes ``closure.json`` (and ``closure_features.png``) to ``--out``.
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
import tensorflow as tf
from scipy import stats

from gbi_zfit.data.benchmark import LHCOSim
from gbi_zfit.data.convert import feature_space
from gbi_zfit.data.mjj import fit_sidebands
from gbi_zfit.models.flows import BackgroundFlowEnsemble, FlowConfig
from gbi_zfit.parallel import make_executor
from gbi_zfit.pdf import FlowPDF


def _delta_stats(delta: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(delta.mean()),
        "mean_error": float(delta.std() / np.sqrt(len(delta))),
        "std": float(delta.std()),
        "median": float(np.median(delta)),
        "q05": float(np.quantile(delta, 0.05)),
        "q95": float(np.quantile(delta, 0.95)),
    }


def _normalisation(pdf: FlowPDF, n: int, seed: int) -> tuple[float, float]:
    pre = pdf.flow.preprocessing
    rng = np.random.default_rng(seed)
    df, scale = 4.0, 1.6
    y = scale * rng.standard_t(df, size=(n, pdf.flow.dim))
    x = pre.inverse(tf.constant(y)).numpy()
    _, logdet, valid = pre.forward(tf.constant(x))
    log_q = stats.t.logpdf(y, df, scale=scale).sum(axis=1) + logdet.numpy()
    keep = valid.numpy() & np.isfinite(log_q)
    w = np.exp(pdf.log_density(x[keep]) - log_q[keep]) * keep.mean()
    return float(w.mean()), float(w.std() / np.sqrt(len(w)))


def _feature_comparison(sample: np.ndarray, truth: np.ndarray, names) -> dict[str, dict[str, float]]:
    out = {}
    for j, name in enumerate(names):
        edges = np.quantile(truth[:, j], np.linspace(0, 1, 41))
        edges[0], edges[-1] = -np.inf, np.inf
        h_s = np.histogram(sample[:, j], edges)[0].astype(float)
        h_t = np.histogram(truth[:, j], edges)[0].astype(float)
        # two-sample χ² with unequal sizes
        k1, k2 = np.sqrt(h_t.sum() / h_s.sum()), np.sqrt(h_s.sum() / h_t.sum())
        chi2 = np.sum((k1 * h_s - k2 * h_t) ** 2 / np.maximum(h_s + h_t, 1))
        out[name] = {
            "ks": float(stats.ks_2samp(sample[:, j], truth[:, j]).statistic),
            "chi2_ndf": float(chi2 / (len(h_s) - 1)),
        }
    return out


def _plot(sample, truth, names, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.4))
    for j, (ax, name) in enumerate(zip(axes, names, strict=True)):
        lo, hi = np.quantile(truth[:, j], [0.001, 0.995])
        bins = np.linspace(lo, hi, 50)
        ax.hist(truth[:, j], bins, density=True, histtype="step", label="truth (SR)", color="k")
        ax.hist(sample[:, j], bins, density=True, histtype="step", label="FlowPDF sample", color="C1")
        ax.set_xlabel(name)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _train(sb, sim, config, args) -> BackgroundFlowEnsemble:
    with make_executor(dask=args.dask) as executor:
        return BackgroundFlowEnsemble.from_events(
            sb,
            sim.signal_region,
            config=config,
            n_members=args.members,
            seed=args.seed + 1,
            executor=executor,
            mjj_range=(2650.0, 7000.0),
            progress=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--members", type=int, default=20)
    ap.add_argument("--flow", choices=("maf", "rqs"), default="maf")
    ap.add_argument("--quick", action="store_true", help="FlowConfig.quick() (small widths, few epochs)")
    ap.add_argument("--max-epochs", type=int, default=None)
    ap.add_argument("--n-eval", type=int, default=50_000, help="SR events for the closure")
    ap.add_argument("--n-quad", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dask", action="store_true")
    ap.add_argument("--flows", type=Path, default=None, help="evaluate this trained bundle (no training)")
    ap.add_argument("--out", type=Path, default=Path("results/flows_closure"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    sim = LHCOSim()
    events = sim.sample_background(args.n_background, seed=args.seed)
    sb = sim.signal_region.sidebands(events)
    overrides = {"flow": args.flow}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    config = FlowConfig.quick(**overrides) if args.quick else FlowConfig(**overrides)
    what = f"flows from {args.flows}" if args.flows is not None else f"{args.members} × {config}"
    print(f"{len(events)} background events, {len(sb)} in the sidebands; {what}")

    t0 = time.perf_counter()
    if args.flows is not None:
        flow = BackgroundFlowEnsemble.load(args.flows)
        print(f"evaluating {flow!r} from {args.flows} (trained on {flow.info.get('n_train_events')} events)")
    else:
        flow = _train(sb, sim, config, args)
    train_time = (
        time.perf_counter() - t0 if args.flows is None else float(flow.info.get("train_time_s", "nan"))
    )
    n_train = flow.info["member_n_train"][0]
    epoch_times = [t for h in flow.histories for t in h.epoch_time[1:]]
    per_100k = float(np.median(epoch_times)) * 100_000 / n_train if epoch_times else float("nan")
    print(
        f"trained in {train_time:.0f} s; median epoch {np.median(epoch_times):.2f} s "
        f"= {per_100k:.2f} s per epoch per 100k events; epochs {[h.n_epochs for h in flow.histories]}"
    )
    if args.flows is None:
        flow.save(args.out / "flow")

    mjj_fit = fit_sidebands(events.mjj, sim.signal_region)
    obs = feature_space("ranode")
    pdf_fit = FlowPDF(obs, flow, mjj_fit, n_quad=args.n_quad)
    pdf_true = FlowPDF(
        obs, flow, lambda m: np.exp(sim.log_pb_mjj(m)), signal_region=sim.signal_region, n_quad=args.n_quad
    )

    sr = sim.sample_background_sr(args.n_eval, seed=args.seed + 100).features("ranode")
    log_true = sim.log_pb_x_sr(sr, "ranode")
    t0 = time.perf_counter()
    log_fit = pdf_fit.log_density(sr)
    eval_time = time.perf_counter() - t0
    log_true_mjj = pdf_true.log_density(sr)
    # single members (same quadrature): what the ensemble average buys
    singles = []
    for k in range(min(flow.n_members, 5)):
        one = BackgroundFlowEnsemble(
            [flow.members[k]], flow.preprocessing, flow.config, mjj_range=flow.mjj_range
        )
        lp = one.log_prob_marginal(sr, pdf_true.mjj_nodes, np.log(pdf_true.mjj_weights)).numpy()
        singles.append(_delta_stats(lp - log_true))

    norm, norm_err = _normalisation(pdf_fit, 100_000, args.seed + 200)
    import zfit

    zfit.settings.set_seed(args.seed + 300)
    sample = pdf_fit.sample(args.n_eval).value().numpy()
    features = _feature_comparison(sample, sr, flow.feature_names)
    _plot(sample, sr, flow.feature_names, args.out / "closure_features.png")

    results = {
        "n_background": args.n_background,
        "n_sideband": len(sb),
        "members": flow.n_members,
        "flows": str(args.flows) if args.flows is not None else "trained here",
        "config": flow.config.to_dict(),
        "train_time_s": train_time,
        "epoch_s_per_100k_events": per_100k,
        "epochs": [h.n_epochs for h in flow.histories],
        "best_val_loss": [h.best_val_loss for h in flow.histories],
        "eval_time_s": eval_time,
        "n_eval": args.n_eval,
        "closure_ensemble_fitted_pmjj": _delta_stats(log_fit - log_true),
        "closure_ensemble_true_pmjj": _delta_stats(log_true_mjj - log_true),
        "closure_single_members_true_pmjj": singles,
        "pearson_log_density": float(np.corrcoef(log_fit, log_true)[0, 1]),
        "normalisation": {"value": norm, "error": norm_err},
        "features": features,
        "sr_fraction_fit": mjj_fit.sr_fraction,
        "sr_fraction_true": float(sim.p_sr_background),
        "mean_log_likelihood_true": float(log_true.mean()),
    }
    (args.out / "closure.json").write_text(json.dumps(results, indent=2))
    c = results["closure_ensemble_fitted_pmjj"]
    print(
        f"closure (fitted p(mjj)): mean Δ = {c['mean']:+.4f} ± {c['mean_error']:.4f}, std Δ = {c['std']:.4f}"
    )
    c = results["closure_ensemble_true_pmjj"]
    print(
        f"closure (true p(mjj)):   mean Δ = {c['mean']:+.4f} ± {c['mean_error']:.4f}, std Δ = {c['std']:.4f}"
    )
    for k, s in enumerate(singles):
        print(f"  member {k}: mean Δ = {s['mean']:+.4f}, std Δ = {s['std']:.4f}")
    print(f"Pearson(log p_learned, log p_true) = {results['pearson_log_density']:.4f}")
    print(f"normalisation E_q[p/q] = {norm:.4f} ± {norm_err:.4f}")
    for name, f in features.items():
        print(f"  {name:>9}: KS {f['ks']:.4f}, χ²/ndf {f['chi2_ndf']:.2f}")
    print(
        f"FlowPDF on {args.n_eval} events ({args.n_quad} nodes × {flow.n_members} members): {eval_time:.1f} s"
    )
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
