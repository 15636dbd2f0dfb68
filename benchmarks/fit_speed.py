"""Wall time of MIGRAD + HESSE + MINOS(μ) with θ floating on the full SR (~118k events).

Compares the exact path (zfit UnbinnedNLL of RatioPDF, the mjj quadrature of p_B recomputed at every
step) with the fast path (RatioNLL engine: θ-independent work cached per data set, events as graph
inputs, iminuit with the exact TF gradient). Both start from the same point; the first fit of each path
includes graph tracing, so each path is timed on a warm-up fit and then on ``--repeat`` fits.

    python benchmarks/fit_speed.py [--n-background 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from gbi_zfit.data.benchmark import LHCOSim
from gbi_zfit.inference import SignalFitter
from gbi_zfit.models import OracleRatio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--s-over-sqrt-b", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    sim = LHCOSim()
    data = sim.make_dataset(
        s_over_sqrt_b=args.s_over_sqrt_b, mx=300, my=150, n_background=args.n_background, seed=args.seed
    )
    sr = sim.signal_region.signal_region(data)
    oracle = OracleRatio(sim)
    start = {"mu": 0.004, "mx": 280.0, "my": 160.0}
    print(f"SR events: {len(sr)}, signal: {int(sr.label.sum())}, start {start}")
    results = {}
    for backend in ("zfit", "fast"):
        t0 = time.perf_counter()
        fitter = SignalFitter(oracle, sr, backend=backend)
        t_setup = time.perf_counter() - t0
        fitter.fit(start, minos=("mu",))  # warm-up: traces the graphs
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = fitter.fit(start, minos=("mu",))
            times.append(time.perf_counter() - t0)
        results[backend] = (res, np.median(times))
        print(
            f"{backend:>5}: setup {t_setup:5.2f} s, MIGRAD+HESSE+MINOS(μ) median {np.median(times):6.2f} s "
            f"(min {min(times):.2f}), {res.n_calls} calls, valid={res.valid}"
        )
        print("       " + str(res).replace("\n", "\n       "))
    (ex, t_ex), (fa, t_fa) = results["zfit"], results["fast"]
    print(
        f"speed-up exact/fast = {t_ex / t_fa:.1f}x; fast path {'meets' if t_fa <= 5 else 'misses'} the 5 s target"
    )
    for n in ("mu", "mx", "my"):
        print(f"  {n}: |fast - exact| = {abs(fa.values[n] - ex.values[n]) / ex.errors[n]:.3f} σ")


if __name__ == "__main__":
    main()
