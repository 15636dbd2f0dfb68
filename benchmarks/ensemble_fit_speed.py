"""Exact vs fast path of the classifier ensemble inside the fit: NLL value+gradient per call, and a fit.

The paper-size ensemble (10 × 256-128-64; random weights — speed does not depend on training) on the
SR background of the benchmark (≈118k events × 6 features):

* exact path: ``log_ratio`` in float64 with TensorFlow autodiff over all events (what zfit's
  ``UnbinnedNLL`` of a ``RatioPDF`` evaluates). It keeps every activation of every event for the
  backward pass (~2 × 448 × 10 × n × 8 bytes ≈ 8.5 GB at 118k), so it is timed on ``--n-exact`` events
  and scaled linearly (the cost is linear in n);
* fast path: ``precompute`` + ``log_ratio_precomputed`` through the fit engine (chunked, exact θ-gradient
  by one backward pass per chunk), in float32 and float64, on all events;
* a full ``SignalFitter`` fit (MIGRAD + HESSE) on the fast path with the ``quick`` ensemble
  (3 × 128-64-32, trained briefly on the true SR background, data with signal at S/√B = 5).

    python benchmarks/ensemble_fit_speed.py [--n-background 1000000] [--members 10] [--repeat 5] [--only-fit]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from gbi_zfit.data.benchmark import LHCOSim
from gbi_zfit.data.events import PAWS_FEATURES
from gbi_zfit.inference import SignalFitter
from gbi_zfit.inference.engine import RatioNLL
from gbi_zfit.models.classifier import ClassifierEnsemble
from gbi_zfit.models.preprocessing import FeatureTransform
from gbi_zfit.pdf.ratio import log_mixture_ratio


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def random_ensemble(x, members, hidden, rng, fast_dtype):
    dims = [8, *hidden, 1]
    weights = [
        [
            a
            for i in range(len(dims) - 1)
            for a in (
                rng.normal(0.0, np.sqrt(2.0 / dims[i]), (dims[i], dims[i + 1])),
                rng.normal(0.0, 0.05, dims[i + 1]),
            )
        ]
        for _ in range(members)
    ]
    return ClassifierEnsemble(
        weights,
        FeatureTransform.fit(x, PAWS_FEATURES.names),
        theta_bounds=((50.0, 600.0), (50.0, 600.0)),
        log_kappa=0.0,
        fast_dtype=fast_dtype,
    )


def timed(fn, repeat):
    fn()  # warm-up (tracing)
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), _cpu()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return float(np.median(walls)), float(np.median(cpus))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--n-exact", type=int, default=20_000)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--hidden", default="256,128,64")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only-fit", action="store_true", help="skip the per-call table")
    args = ap.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    sim = LHCOSim()
    bkg = sim.sample_background(args.n_background, seed=args.seed)
    x = sim.signal_region.signal_region(bkg).features("paws")
    n = len(x)
    print(f"SR events: {n} × {x.shape[1]}, ensemble {args.members} × {'-'.join(map(str, hidden))}")
    p = np.array([0.01, 300.0, 150.0])
    if not args.only_fit:
        per_call_table(x, args, hidden, p)
    fit_timing(sim, x, args)


def per_call_table(x, args, hidden, p):
    n = len(x)

    # exact path: float64 autodiff over all events, as zfit's loss evaluates it
    exact_model = random_ensemble(x, args.members, hidden, np.random.default_rng(1), "float64")
    xe = tf.constant(x[: args.n_exact])

    @tf.function
    def exact_value_and_grad(params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            nll = -tf.reduce_sum(
                log_mixture_ratio(exact_model.log_ratio(xe, params[1], params[2]), params[0])
            )
        return nll, tape.gradient(nll, params)

    pt = tf.constant(p)
    w, c = timed(lambda: exact_value_and_grad(pt), args.repeat)
    scale = n / args.n_exact
    rows = [("exact (float64 autodiff)", f"{args.n_exact} → scaled ×{scale:.2f}", w * scale, c * scale)]
    nll_exact = float(exact_value_and_grad(pt)[0]) * scale

    for dtype in ("float64", "float32"):
        model = random_ensemble(x, args.members, hidden, np.random.default_rng(1), dtype)
        engine = RatioNLL(model, x, penalty_threshold=None)
        w, c = timed(lambda engine=engine: engine.value_and_grad(p), args.repeat)
        rows.append((f"fast, {dtype} (value+grad)", str(n), w, c))
        w, c = timed(lambda engine=engine: engine(p), args.repeat)
        rows.append((f"fast, {dtype} (value only)", str(n), w, c))
        if dtype == "float64":
            sub = RatioNLL(model, x[: args.n_exact], penalty_threshold=None)
            agree = abs(sub(p) * scale - nll_exact) / abs(nll_exact)
            print(
                f"fast float64 vs exact NLL on the same {args.n_exact} events: relative difference {agree:.1e}"
            )
    print("\n| path | events | wall s / call | CPU s / call |\n|---|---|---|---|")
    for name, events, w, c in rows:
        print(f"| {name} | {events} | {w:.3f} | {c:.3f} |")


def fit_timing(sim, x, args):
    """MIGRAD + HESSE with a briefly trained quick-preset ensemble on SR data with signal (fast path)."""
    from gbi_zfit.models.classifier import ClassifierConfig, train_classifier_ensemble

    cfg = ClassifierConfig.preset("quick", n_signal_per_point=300, n_background=40_000, epochs=3)
    t0, c0 = time.perf_counter(), _cpu()
    train_bkg = sim.sample_background_sr(60_000, seed=args.seed + 2).features("paws")
    model = train_classifier_ensemble(train_bkg, cfg, seed=args.seed)
    print(
        f"\nquick ensemble ({cfg.n_members} × {'-'.join(map(str, cfg.hidden))}, 3 epochs): trained in "
        f"{time.perf_counter() - t0:.0f} s wall, {_cpu() - c0:.0f} s CPU"
    )
    n_s = int(round(5.0 * np.sqrt(len(x))))
    sig = sim.sample_signal(n_s, 325.0, 175.0, seed=args.seed + 1, region="sr").features("paws")
    data = np.concatenate([x, sig])
    for dtype in ("float32", "float64"):
        model.fast_dtype = dtype
        t0, c0 = time.perf_counter(), _cpu()
        fitter = SignalFitter(model, data)
        t_setup = time.perf_counter() - t0
        res = fitter.fit({"mu": 0.01, "mx": 300.0, "my": 150.0})
        print(
            f"SignalFitter (fast path, {dtype}) on {len(data)} events: setup {t_setup:.1f} s, MIGRAD+HESSE "
            f"{res.time_s:.1f} s wall, {_cpu() - c0:.1f} s CPU, {res.n_calls} calls, valid={res.valid}, "
            f"θ̂ = ({res.values['mx']:.1f}, {res.values['my']:.1f}), μ̂ = {res.values['mu']:.4f}"
        )


if __name__ == "__main__":
    main()
