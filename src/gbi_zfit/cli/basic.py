"""Basic ``gbi`` subcommands: ``info``, ``generate``, ``fit``, ``scan`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import InputError
from ._common import out_dirs, quiet_tf, write_manifest


def cmd_info(args: argparse.Namespace) -> int:
    import importlib.metadata as md

    print(f"gbi_zfit {__version__}  (python {sys.version.split()[0]})")
    for pkg in (
        "zfit",
        "tensorflow",
        "tensorflow-probability",
        "keras",
        "iminuit",
        "hepstats",
        "numpy",
        "scipy",
        "uproot",
        "hist",
        "mplhep",
        "dask",
        "distributed",
        "jax",
    ):
        try:
            print(f"  {pkg:<24}{md.version(pkg)}")
        except md.PackageNotFoundError:
            print(f"  {pkg:<24}not installed")
    quiet_tf()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"  TensorFlow devices: {[d.name for d in tf.config.list_physical_devices()]}")
    print(f"  GPU: {'yes, ' + str(len(gpus)) if gpus else 'none (training and fits run on the CPU)'}")
    print(f"  CPU cores: {os.cpu_count()}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..data.benchmark import LHCOSim
    from ..data.io import write_events

    if (args.mu is None) == (args.s_over_sqrt_b is None):
        raise InputError("give exactly one of --mu or --s-over-sqrt-b")
    sim = LHCOSim()
    t0 = time.perf_counter()
    events = sim.make_dataset(
        mu=args.mu,
        s_over_sqrt_b=args.s_over_sqrt_b,
        mx=args.mx,
        my=args.my,
        n_background=args.n_background,
        seed=args.seed,
    )
    write_events(events, args.out)
    sr = sim.signal_region.contains(events.mjj)
    n_s = int(events.label[sr].sum())
    print(
        f"wrote {len(events)} events to {args.out} ({sr.sum()} in the SR, {n_s} of them signal, "
        f"μ = {n_s / max(sr.sum(), 1):.4g}, S/√B = {n_s / max(sr.sum() - n_s, 1) ** 0.5:.3g}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _fit_oracle(events, *, sim, out: Path | None, minos: bool, truth: dict | None, seed: int, tag: str):
    """SR selection, multi-start oracle fit, JSON result and figure."""
    import numpy as np

    from ..inference.fit import SignalFitter
    from ..models.oracle import OracleRatio

    sr = sim.signal_region.signal_region(events)
    ratio = OracleRatio(sim)
    reference = sim.sample_background_sr(200_000, seed=np.random.SeedSequence(seed).spawn(1)[0]).features()
    fitter = SignalFitter(ratio, sr, reference=reference)
    t0 = time.perf_counter()
    result = fitter.fit_multistart(minos=("mu",) if minos else (), truth=truth)
    result.info["wall_time_s"] = time.perf_counter() - t0
    print(result)
    if out is not None:
        dirs = out_dirs(out)
        result.to_json(dirs["results"] / f"{tag}.json")
        from ..plotting import plot_fit

        mx, my, mu = result.values["mx"], result.values["my"], result.values["mu"]
        title = f"oracle fit: μ̂ = {mu:.3g}, m̂X = {mx:.0f} GeV, m̂Y = {my:.0f} GeV"
        x = sr.features(ratio.feature_set)
        fig = plot_fit(
            x,
            ratio.log_ratio_numpy(x, mx, my),
            reference,
            ratio.log_ratio_numpy(reference, mx, my),
            mu,
            dirs["figures"] / f"{tag}.png",
            title=title,
        )
        print(f"wrote {dirs['results'] / (tag + '.json')} and {fig}")
    return fitter, result


def _profiles(fitter, result, out: Path | None, tag: str, params, *, two_d: bool, truth=None, n_points=21):
    """1-D profile scans of ``params`` and optionally the 2-D (mX, mY) scan; JSON + figures."""
    import numpy as np

    from ..inference.profile import profile_1d, profile_2d

    scans = {}
    for name in params:
        scan = profile_1d(fitter, name, n_points=n_points, best=result)
        scans[name] = scan
        print(scan)
    scan2d = None
    if two_d:
        ex, ey = (3.5 * result.errors.get(n, 20.0) for n in ("mx", "my"))
        (xl, xh), (yl, yh) = fitter.limits["mx"], fitter.limits["my"]
        mxs = np.linspace(
            max(xl + 1e-3, result.values["mx"] - ex), min(xh - 1e-3, result.values["mx"] + ex), 13
        )
        mys = np.linspace(
            max(yl + 1e-3, result.values["my"] - ey), min(yh - 1e-3, result.values["my"] + ey), 13
        )
        scan2d = profile_2d(fitter, mxs, mys, best=result)
        print(scan2d)
    if out is not None:
        from .._util import atomic_write_text
        from ..plotting.profile import plot_profile_1d, plot_profile_2d

        dirs = out_dirs(out)
        payload = {n: s.to_dict() for n, s in scans.items()}
        if scan2d is not None:
            payload["mx_my"] = scan2d.to_dict()
        atomic_write_text(dirs["results"] / f"{tag}_profiles.json", json.dumps(payload, indent=2))
        for n, s in scans.items():
            plot_profile_1d(s, dirs["figures"] / f"{tag}_profile_{n}.png", truth=(truth or {}).get(n))
        if scan2d is not None:
            t = (truth["mx"], truth["my"]) if truth else None
            plot_profile_2d(
                scan2d,
                dirs["figures"] / f"{tag}_profile_mx_my.png",
                truth=t,
                best=(result.values["mx"], result.values["my"]),
            )
        print(f"wrote profiles to {dirs['results']} and {dirs['figures']}")
    return scans, scan2d


def cmd_fit(args: argparse.Namespace) -> int:
    from ..data.benchmark import LHCOSim
    from ..data.io import read_events

    if not args.oracle:
        raise InputError(
            "only the benchmark oracle ratio is available to `gbi fit` in this version: pass --oracle"
        )
    quiet_tf()
    events = read_events(args.path)
    out = Path(args.out) if args.out else None
    tag = Path(args.path).stem + "_fit"
    fitter, result = _fit_oracle(
        events, sim=LHCOSim(), out=out, minos=args.minos, truth=None, seed=args.seed, tag=tag
    )
    if args.profiles:
        _profiles(fitter, result, out, tag, ("mu", "mx", "my"), two_d=True)
    if out is not None:
        write_manifest(out, {"command": " ".join(sys.argv), "seed": args.seed, "input": str(args.path)})
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    from ..data.benchmark import LHCOSim
    from ..data.io import read_events
    from ..inference.fit import SignalFitter
    from ..models.oracle import OracleRatio

    if not args.oracle:
        raise InputError(
            "only the benchmark oracle ratio is available to `gbi scan` in this version: pass --oracle"
        )
    quiet_tf()
    sim = LHCOSim()
    sr = sim.signal_region.signal_region(read_events(args.path))
    fitter = SignalFitter(OracleRatio(sim), sr)
    result = fitter.fit_multistart()
    print(result)
    params = [p for p in args.params if p != "mx_my"]
    out = Path(args.out) if args.out else None
    _profiles(
        fitter,
        result,
        out,
        Path(args.path).stem,
        params,
        two_d="mx_my" in args.params,
        n_points=args.n_points,
    )
    if out is not None:
        write_manifest(out, {"command": " ".join(sys.argv), "input": str(args.path)})
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    quiet_tf()
    from ..data.benchmark import LHCOSim
    from ..data.io import write_events

    out = Path(args.out)
    dirs = out_dirs(out)
    sim = LHCOSim()
    t0 = time.perf_counter()
    events = sim.make_dataset(
        s_over_sqrt_b=args.s_over_sqrt_b,
        mx=args.mx,
        my=args.my,
        n_background=args.n_background,
        seed=args.seed,
    )
    data_path = dirs["data"] / "demo.npz"
    write_events(events, data_path)
    sr_mask = sim.signal_region.contains(events.mjj)
    n_s = int(events.label[sr_mask].sum())
    mu_true = n_s / int(sr_mask.sum())
    print(
        f"generated {len(events)} events ({sr_mask.sum()} in the SR, {n_s} signal: μ = {mu_true:.4g}, "
        f"S/√B = {args.s_over_sqrt_b}) in {time.perf_counter() - t0:.1f} s -> {data_path}"
    )
    truth = {"mu": mu_true, "mx": float(args.mx), "my": float(args.my)}
    _, result = _fit_oracle(events, sim=sim, out=out, minos=True, truth=truth, seed=args.seed, tag="demo_fit")
    write_manifest(out, {"command": " ".join(sys.argv), "seed": args.seed, "truth": truth})
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0 if result.valid else 1


# -------------------------------------------------------------------------------------------------
def register(sub) -> None:
    """Add the basic subcommands to the ``gbi`` subparsers."""
    s = sub.add_parser("info", help="versions, devices (GPU/CPU)")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser(
        "generate",
        help="write a benchmark data set (ROOT, HDF5 or npz by suffix)",
        epilog="example: gbi generate --out data.root --mu 0.003 --mx 300 --my 150 --seed 1",
    )
    s.add_argument("--out", required=True, help="output file: .root, .h5 (LHCO layout) or .npz")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--mu", type=float, help="SR signal fraction μ = S/(S+B)")
    g.add_argument("--s-over-sqrt-b", type=float, help="SR significance S/√B")
    s.add_argument("--mx", type=float, default=300.0, help="signal mass mX in GeV (default 300)")
    s.add_argument("--my", type=float, default=150.0, help="signal mass mY in GeV (default 150)")
    s.add_argument("--n-background", type=int, default=1_000_000, help="background events (default 1e6)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser(
        "fit",
        help="fit μ, mX, mY of a data file in the SR",
        epilog="example: gbi fit data.root --oracle --minos --out results/",
    )
    s.add_argument("path", help="data file (.root, .h5, .npz)")
    s.add_argument("--oracle", action="store_true", help="use the exact benchmark ratio Λ*")
    s.add_argument("--minos", action="store_true", help="MINOS interval for μ")
    s.add_argument("--out", help="directory for results/ and figures/")
    s.add_argument(
        "--profiles", action="store_true", help="1-D profile scans of μ, mX, mY and the 2-D contour"
    )
    s.add_argument("--seed", type=int, default=0, help="seed of the reference sample used for plots")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser(
        "scan",
        help="profile-likelihood scans (1-D curves, 2-D (mX, mY) Wilks contours)",
        epilog="example: gbi scan data.root --oracle --params mu mx_my --out results/",
    )
    s.add_argument("path", help="data file (.root, .h5, .npz)")
    s.add_argument("--oracle", action="store_true", help="use the exact benchmark ratio Λ*")
    s.add_argument(
        "--params",
        nargs="+",
        default=["mu", "mx", "my", "mx_my"],
        choices=["mu", "mx", "my", "mx_my"],
        help="what to scan (mx_my = the 2-D contour)",
    )
    s.add_argument("--n-points", type=int, default=21, help="points per 1-D scan")
    s.add_argument("--out", help="directory for results/ and figures/")
    s.set_defaults(func=cmd_scan)

    s = sub.add_parser(
        "demo",
        help="generate the benchmark, fit it with the oracle, print and plot",
        epilog="example: gbi demo --out gbi-output --s-over-sqrt-b 1",
    )
    s.add_argument("--out", default="gbi-output", help="output directory (default gbi-output)")
    s.add_argument("--s-over-sqrt-b", type=float, default=1.0, help="injected S/√B (default 1)")
    s.add_argument("--mx", type=float, default=300.0)
    s.add_argument("--my", type=float, default=150.0)
    s.add_argument("--n-background", type=int, default=1_000_000)
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=cmd_demo)
