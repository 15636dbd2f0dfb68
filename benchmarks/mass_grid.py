"""Fitted/true of (μ, mX, mY) across signal mass points with three uncertainty methods (GBI paper Fig. 3).

For every mass point a benchmark data set at μ = --mu (default 0.3 %, 1M background events) is fitted
with the exact oracle ratio (multi-start), and the errors of μ̂, m̂X, m̂Y come from a Poisson bootstrap
(--n-bootstrap replicas), the 1-D profile likelihood (68.3 % Wilks interval) and the Fisher information
(observed HESSE and expected/Asimov). Prints the table and timings, writes the JSON result and the figure.
Every finished point is appended to --store; rerunning the same command resumes.

    python benchmarks/mass_grid.py --n-bootstrap 50 --seed 1 \\
        --store /tmp/fig3/points.jsonl --out benchmarks/results/fig3_oracle
    python benchmarks/mass_grid.py --points 100,100 300,150 500,300 --dask --workers 2 --out /tmp/fig3
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from gbi_zfit.inference.mass_grid import DEFAULT_POINTS, MassGridConfig, run_mass_grid
from gbi_zfit.parallel import make_executor
from gbi_zfit.plotting.mass_grid import plot_mass_grid


def _point(text: str) -> tuple[float, float]:
    try:
        mx, my = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"a mass point is 'MX,MY' in GeV, got {text!r}") from exc
    return mx, my


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--points",
        type=_point,
        nargs="+",
        default=list(DEFAULT_POINTS),
        metavar="MX,MY",
        help="mass points in GeV (default: %(default)s)",
    )
    ap.add_argument("--mu", type=float, default=0.003, help="injected SR signal fraction")
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--n-bootstrap", type=int, default=50)
    ap.add_argument("--n-datasets", type=int, default=1, help="independent data sets per point")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dask", action="store_true", help="run on a Dask LocalCluster")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    ap.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core)")
    ap.add_argument("--store", type=Path, default=None, help="JSON Lines result store (resumable)")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("mass_grid"),
        help="output stem: writes OUT.json and OUT.png (default: %(default)s)",
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    config = MassGridConfig(
        mu=args.mu, n_background=args.n_background, n_bootstrap=args.n_bootstrap, n_datasets=args.n_datasets
    )
    stem = args.out.with_suffix("") if args.out.suffix in (".json", ".png") else args.out
    store = args.store or stem.parent / f"{stem.name}_points.jsonl"
    print(f"config: {config}\npoints: {args.points}\nstore: {store}", flush=True)
    t0 = time.perf_counter()
    with make_executor(dask=args.dask, scheduler=args.scheduler, n_workers=args.workers) as ex:
        print(f"executor: {type(ex).__name__} with {ex.n_workers} worker(s)", flush=True)
        result = run_mass_grid(args.points, config, args.seed, ex, store, progress=not args.no_progress)
    result.info["wall_time_s"] = time.perf_counter() - t0
    result.to_json(stem.with_suffix(".json"))
    plot_mass_grid(result, stem.with_suffix(".png"))
    print(result.table())
    print("\ntimings per point [s]:")
    for p in result.points:
        t = p.info.get("timing", {})
        parts = ", ".join(f"{k.removesuffix('_s')} {v:.0f}" for k, v in t.items())
        print(f"  {p.label:<12} total {p.time_s:6.0f}  ({parts})")
    print(
        f"wall time {result.info['wall_time_s']:.0f} s (sum over points {result.info['points_time_s']:.0f} s); "
        f"written {stem.with_suffix('.json')} and {stem.with_suffix('.png')}"
    )


if __name__ == "__main__":
    main()
