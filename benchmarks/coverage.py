"""Coverage of the oracle GBI-PAWS fit from pseudo-experiments (DESIGN §7), resumable.

Runs ``--n-toys`` toys of the exact generator (N_B,SR ~ Poisson(N_B,exp), n_S ~ Poisson(S/√B·√N_B,exp))
at θ = (--mx, --my), fits each with μ, mX, mY floating from the truth (HESSE, MINOS(μ)), profiles μ and
θ, and writes the coverage summary (JSON), the pull and test-statistic figures, and prints the table.
Every finished toy is appended to ``--store``; rerunning the same command resumes.

    python benchmarks/coverage.py --s-over-sqrt-b 1 --n-toys 500 --seed 1 --dask --workers 2 \\
        --store /tmp/coverage_1p0/toys.jsonl --out /tmp/coverage_1p0
    python benchmarks/coverage.py --summarize-only --store /tmp/coverage_1p0/toys.jsonl --out ...
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from gbi_zfit.inference.coverage import CoverageConfig, run_coverage, summarize_store
from gbi_zfit.inference.toys import N_BACKGROUND_SR
from gbi_zfit.parallel import make_executor
from gbi_zfit.plotting.toys import plot_pulls, plot_test_statistics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--s-over-sqrt-b", type=float, default=1.0)
    ap.add_argument("--n-toys", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mx", type=float, default=300.0)
    ap.add_argument("--my", type=float, default=150.0)
    ap.add_argument("--n-background-sr", type=float, default=N_BACKGROUND_SR, help="expected SR background")
    ap.add_argument("--kind", choices=("oracle", "bootstrap", "model"), default="oracle")
    ap.add_argument(
        "--minos-toys",
        type=int,
        default=None,
        help="run MINOS(μ) on the first N toys only (default: all); its 68%% interval equals t_μ < 1",
    )
    ap.add_argument("--dask", action="store_true", help="run on a Dask LocalCluster")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    ap.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core)")
    ap.add_argument("--store", type=Path, default=None, help="JSON Lines result store (resumable)")
    ap.add_argument("--out", type=Path, default=Path("coverage_out"))
    ap.add_argument("--summarize-only", action="store_true", help="summarise --store without running toys")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.summarize_only:
        if args.store is None:
            ap.error("--summarize-only needs --store")
        result = summarize_store(args.store)
    else:
        config = CoverageConfig(
            s_over_sqrt_b=args.s_over_sqrt_b,
            mx=args.mx,
            my=args.my,
            n_background_sr=args.n_background_sr,
            kind=args.kind,
            minos_toys=args.minos_toys,
        )
        store = args.store or args.out / "toys.jsonl"
        print(f"config: {config}\nstore: {store}", flush=True)
        with make_executor(dask=args.dask, scheduler=args.scheduler, n_workers=args.workers) as ex:
            print(f"executor: {type(ex).__name__} with {ex.n_workers} worker(s)", flush=True)
            result = run_coverage(config, args.n_toys, args.seed, ex, store, progress=not args.no_progress)
        result.info["wall_time_s"] = time.perf_counter() - t0
    tag = f"sb{result.config['s_over_sqrt_b']:g}".replace(".", "p")
    result.to_json(args.out / f"coverage_{tag}.json")
    plot_pulls(result, args.out / f"pulls_{tag}.png")
    plot_test_statistics(result, args.out / f"test_statistics_{tag}.png")
    print(result)
    print(f"wall time {time.perf_counter() - t0:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
