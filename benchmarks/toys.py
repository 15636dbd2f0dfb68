"""Toy throughput: toys per minute with 1 in-process worker and with a 2-worker Dask LocalCluster.

Both runs process the *same* toys (same seeds); their results must agree (asserted). The per-worker
setup (building the fitter, tracing the compiled NLL) is timed separately from the steady state.

    python benchmarks/toys.py [--n-toys 10] [--n-background-sr 117866] [--s-over-sqrt-b 1] [--no-minos]
                              [--model DIR] [--kind oracle|bootstrap|model]

``--model DIR`` fits the toys with a trained PAWS ensemble (θ-fast fits) instead of the oracle.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from gbi_zfit.inference.toys import N_BACKGROUND_SR, ToyConfig, build_toy_state, run_toys
from gbi_zfit.parallel import DaskExecutor, SerialExecutor

KEYS = ("t_mu", "t_theta", "pull", "pull_fixed", "z0")


def compare(a: list[dict], b: list[dict]) -> tuple[bool, float]:
    """(bitwise identical?, largest relative difference of the key numbers)."""
    identical, worst = True, 0.0
    for ra, rb in zip(a, b, strict=True):
        va = [ra[k] for k in KEYS] + [ra["fit"]["values"][p] for p in ("mu", "mx", "my")]
        vb = [rb[k] for k in KEYS] + [rb["fit"]["values"][p] for p in ("mu", "mx", "my")]
        identical &= va == vb
        for x, y in zip(va, vb, strict=True):
            worst = max(worst, abs(x - y) / max(1e-12, abs(x), abs(y)))
    return identical, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-toys", type=int, default=10)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--n-background-sr", type=float, default=N_BACKGROUND_SR)
    ap.add_argument("--s-over-sqrt-b", type=float, default=1.0)
    ap.add_argument("--no-minos", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=None, help="classifier bundle to fit the toys with (default: oracle)")
    ap.add_argument("--kind", default="oracle", choices=("oracle", "bootstrap", "model"))
    args = ap.parse_args()
    config = ToyConfig(
        s_over_sqrt_b=args.s_over_sqrt_b,
        n_background_sr=args.n_background_sr,
        minos_toys=0 if args.no_minos else None,
        model=args.model,
        kind=args.kind,
    )
    print(f"{args.n_toys} toys of {config}")

    t0 = time.perf_counter()
    build_toy_state(config)
    t_setup = time.perf_counter() - t0
    print(f"per-worker setup (fitter + tracing), in-process: {t_setup:.1f} s")

    runs = {}
    for name, make in (
        ("serial (1 worker)", SerialExecutor),
        (f"dask ({args.workers} workers)", lambda: DaskExecutor(n_workers=args.workers)),
    ):
        t0 = time.perf_counter()
        with make() as ex:
            t_start = time.perf_counter() - t0
            t1 = time.perf_counter()
            res = run_toys(config, args.n_toys, args.seed, ex, progress=False)
            wall = time.perf_counter() - t1
        assert all(r["ok"] for r in res), [r.get("error") for r in res if not r["ok"]]
        per_toy = float(np.median([r["time_total_s"] for r in res]))
        cpu = float(np.median([r["cpu_time_s"] for r in res]))
        runs[name] = (res, wall)
        print(
            f"{name:>20}: executor start {t_start:5.1f} s, {args.n_toys} toys in {wall:6.1f} s "
            f"(incl. per-worker setup) = {60 * args.n_toys / wall:5.2f} toys/min; "
            f"median time per toy inside a worker {per_toy:.2f} s "
            f"(steady state {60 / per_toy * ex_workers(name, args.workers):.2f} toys/min), "
            f"CPU time per toy {cpu:.2f} s"
        )
    (_, (a, wa)), (_, (b, wb)) = runs.items()
    identical, worst = compare(a, b)
    print(f"speed-up {args.workers} workers / 1 worker: {wa / wb:.2f}x")
    print(f"same toys, same results: bitwise identical = {identical}, max relative difference = {worst:.2e}")
    assert worst < 1e-6, "serial and Dask results differ"


def ex_workers(name: str, workers: int) -> int:
    return 1 if name.startswith("serial") else workers


if __name__ == "__main__":
    main()
