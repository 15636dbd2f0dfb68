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
from ._common import add_read_options, out_dirs, quiet_tf, read_data, read_options, write_manifest


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
    from ..models.device import backend_name
    from ..parallel import _available_cores

    print(f"  Keras backend: {backend_name()} (set KERAS_BACKEND to change; fits always use TensorFlow)")
    print(f"  CPU cores: {os.cpu_count()} ({_available_cores()} available to this process)")
    versions = []
    for pkg in ("dask", "distributed"):
        try:
            versions.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            versions.append(f"{pkg} not installed")
    print(
        f"  Dask: {', '.join(versions)}; `--dask` starts a LocalCluster with one single-threaded worker "
        f"per available core ({_available_cores()}), `--scheduler ADDR` uses a running cluster"
    )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..data.benchmark import LHCOSim
    from ..data.io import write_events

    if (args.mu is None) == (args.s_over_sqrt_b is None):
        raise InputError("give exactly one of --mu or --s-over-sqrt-b")
    _positive_count(args.n_background, "--n-background")
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


def _positive_count(n: int, option: str) -> None:
    if n < 1:
        raise InputError(f"{option} must be a positive number of events, got {n}")


def _benchmark_reference(sim, seed: int):
    """200k true SR background events of the benchmark: the reference sample of the fit figures."""
    import numpy as np

    return sim.sample_background_sr(200_000, seed=np.random.SeedSequence(seed).spawn(1)[0]).features()


def _fit_ratio(
    events, ratio, *, sim, reference, out: Path | None, minos: bool, truth: dict | None, tag: str, label: str
):
    """SR selection, multi-start fit with any ratio model, JSON result and figure."""
    from ..inference.fit import SignalFitter

    sr = sim.signal_region.signal_region(events)
    fitter = SignalFitter(ratio, sr, reference=reference)
    t0 = time.perf_counter()
    result = fitter.fit_multistart(minos=("mu",) if minos else (), truth=truth)
    result.info["wall_time_s"] = time.perf_counter() - t0
    result.info["ratio_model"] = label
    print(result)
    table = result.info.get("table")
    if table and table.get("check"):
        print(
            f"θ table ({table['step']:g} GeV nodes): interpolated − exact NLL at the minimum "
            f"{table['check']['delta_nll']:+.4f}, exact NLL one Newton step away lower by "
            f"{table['exact_gain']:.4f} ({'within' if table['accurate'] else 'outside'} the 0.01 tolerance)"
        )
    if out is not None:
        dirs = out_dirs(out)
        result.to_json(dirs["results"] / f"{tag}.json")
        from ..plotting import plot_fit

        mx, my, mu = result.values["mx"], result.values["my"], result.values["mu"]
        title = f"{label} fit: μ̂ = {mu:.3g}, m̂X = {mx:.0f} GeV, m̂Y = {my:.0f} GeV"
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


def _learned_ratio(model: str, kappa: str | None, reference: str | None, sim, seed: int):
    """(ensemble, reference sample, label) for ``gbi fit --model``.

    The reference sample of the figures: ``--reference`` if given, else the SR background sample the
    ensemble was trained on (if that file is still there, unchanged), else the benchmark background.
    """
    from ..models.classifier import ClassifierEnsemble
    from .train import events_digest, read_background_sample, resolve_paws_bundle

    ensemble = ClassifierEnsemble.load(resolve_paws_bundle(model))
    if kappa is not None:
        ensemble = ensemble.with_kappa(kappa)
    print(f"ratio model: {ensemble!r}")
    if reference is not None:
        ref = read_background_sample(Path(reference), "--reference")[1]
        print(f"reference sample for the figures: {reference}")
    else:
        recorded = ensemble.metadata.get("background") or {}
        path = Path(recorded.get("path", ""))
        ref = None
        if recorded.get("path") and path.is_file():
            events, x = read_background_sample(path, "reference")
            if events_digest(events) == recorded.get("sha256"):
                ref = x
                print(f"reference sample for the figures: {path} (the ensemble's training background)")
        if ref is None:
            ref = _benchmark_reference(sim, seed)
            print("reference sample for the figures: the benchmark SR background")
    return ensemble, ref, f"PAWS ({ensemble.n_members} members, κ {ensemble.kappa_mode})"


def _profiles(
    fitter,
    result,
    out: Path | None,
    tag: str,
    params,
    *,
    two_d: bool,
    truth=None,
    n_points=21,
    mu_grid: tuple[float, int] | None = None,
):
    """1-D profile scans of ``params`` and optionally the 2-D (mX, mY) scan; JSON + figures.

    ``mu_grid`` = (span, points) of the μ scan, e.g. wider for the spurious-signal systematic.
    """
    import numpy as np

    from ..inference.profile import profile_1d, profile_2d

    scans = {}
    for name in params:
        span, points = mu_grid if (name == "mu" and mu_grid) else (3.0, n_points)
        scan = profile_1d(fitter, name, n_points=points, span=span, best=result)
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

    if bool(args.oracle) == bool(args.model):
        raise InputError(
            "give exactly one ratio model: --oracle (the exact benchmark ratio) or --model DIR (a trained "
            "PAWS ensemble, `gbi train paws`)"
        )
    if args.oracle and (args.kappa or args.reference):
        raise InputError("--kappa and --reference apply to a learned ensemble (--model), not to --oracle")
    _check_global_options(args)
    spurious = None
    if args.spurious_signal is not None:  # read it before the fit: a bad value or file fails at once
        from ..inference.systematics import SpuriousSignal

        spurious = SpuriousSignal.parse(args.spurious_signal)
    quiet_tf()
    events = read_data(args, args.path)
    sim = LHCOSim()
    if args.oracle:
        from ..models.oracle import OracleRatio

        ratio, reference, label = OracleRatio(sim), _benchmark_reference(sim, args.seed), "oracle"
    else:
        ratio, reference, label = _learned_ratio(args.model, args.kappa, args.reference, sim, args.seed)
    out = Path(args.out) if args.out else None
    tag = Path(args.path).stem + "_fit"
    fitter, result = _fit_ratio(
        events,
        ratio,
        sim=sim,
        reference=reference,
        out=out,
        minos=args.minos,
        truth=None,
        tag=tag,
        label=label,
    )
    mu_grid = _spurious_mu_grid(result, spurious) if spurious is not None else None
    mu_scan = None
    if args.profiles:
        scans, _ = _profiles(fitter, result, out, tag, ("mu", "mx", "my"), two_d=True, mu_grid=mu_grid)
        mu_scan = scans["mu"]
    if spurious is not None:
        _spurious_signal(fitter, result, spurious, mu_scan, mu_grid, out, tag)
    if args.global_toys is not None:
        _global_significance(args, fitter, result, reference, out, tag)
    if out is not None:
        entry = {"command": " ".join(sys.argv), "seed": args.seed, "input": str(args.path)}
        entry.update(read_options(args, args.path))
        if args.model:
            entry.update(model=str(args.model), kappa=ratio.kappa_mode)
        if spurious is not None:
            entry.update(spurious_signal=spurious.to_dict())
        write_manifest(out, entry)
    return 0


def _spurious_mu_grid(result, spurious) -> tuple[float, int]:
    """(span, points) of a μ scan that holds the intervals with the systematic, ±3 σ_tot."""
    import math

    err = result.errors.get("mu", math.nan)
    if not (math.isfinite(err) and err > 0):
        return 3.0, 21  # no HESSE error: profile_1d sizes the grid itself
    span = 3.0 * math.hypot(1.0, spurious.sigma_mu / err)
    points = min(41, 2 * math.ceil(10 * span / 3.0) + 1)  # about the default density, odd: μ̂ on the grid
    return span, points


def _spurious_signal(fitter, result, spurious, scan, mu_grid, out: Path | None, tag: str):
    """The spurious-signal systematic on μ: print it and add it to the fit's JSON (``info``)."""
    from ..inference.profile import profile_1d
    from ..inference.systematics import profile_with_spurious_signal

    if scan is None:
        span, points = mu_grid
        scan = profile_1d(fitter, "mu", n_points=points, span=span, best=result)
    res = profile_with_spurious_signal(scan, spurious, fitter=fitter, best=result)
    print(res.summary())
    if out is not None:
        # under info: the file stays a FitResult (FitResult.from_json reads it back)
        result.info["spurious_signal"] = res.to_dict()
        path = out_dirs(out)["results"] / f"{tag}.json"
        result.to_json(path)
        print(f"added the spurious-signal systematic to {path}")
    return res


def _check_global_options(args: argparse.Namespace) -> None:
    """``--global-toys`` and its executor options, checked before the fit."""
    n = args.global_toys
    if n is not None and n < 1:
        raise InputError(f"--global-toys must be a positive number of toys, got {n}")
    if n is None and (args.dask or args.workers is not None or args.scheduler):
        raise InputError("--dask, --workers and --scheduler run the --global-toys toys: give --global-toys N")
    if args.scheduler and args.workers is not None:
        raise InputError("--workers starts a local Dask cluster; it cannot be combined with --scheduler")


def _global_significance(args, fitter, result, reference, out: Path | None, tag: str):
    """``--global-toys N``: background-only toys resampled from the reference, each fitted blind; prints the
    global significance and adds it to the fit's JSON (``info``), with a histogram of the toys."""
    import numpy as np

    from ..inference.lee import global_significance, local_significance
    from ..parallel import make_executor

    _, z_local = local_significance(result)
    # child 1 of --seed: child 0 draws the benchmark reference sample (_benchmark_reference)
    seed = np.random.SeedSequence(args.seed).spawn(2)[1]
    store = out_dirs(out)["results"] / f"{tag}_global_toys.jsonl" if out is not None else None
    print(
        f"global significance: {args.global_toys} background-only toys resampled from the {len(reference)} "
        f"reference events, each fitted blind (μ, mX, mY free)" + (f"; store: {store}" if store else ""),
        flush=True,
    )
    dask = args.dask or args.workers is not None
    with make_executor(dask=dask, scheduler=args.scheduler, n_workers=args.workers) as ex:
        gs = global_significance(
            fitter,
            z_local,
            args.global_toys,
            seed,
            reference=reference,
            executor=ex,
            store_path=store,
            progress=sys.stderr.isatty(),
            mu_probe=result.info.get("mu_probe"),
            grid_step=result.info.get("grid_step", 50.0),
        )
    print(gs)
    if out is not None:
        from ..plotting.toys import plot_global_significance

        dirs = out_dirs(out)
        result.info["global_significance"] = gs.to_dict()  # under info: the file stays a FitResult
        path = dirs["results"] / f"{tag}.json"
        result.to_json(path)
        fig = plot_global_significance(gs, dirs["figures"] / f"{tag}_global_significance.png")
        print(f"added the global significance to {path}; wrote {fig}")
    return gs


def cmd_scan(args: argparse.Namespace) -> int:
    from ..data.benchmark import LHCOSim
    from ..inference.fit import SignalFitter
    from ..models.oracle import OracleRatio

    if not args.oracle:
        raise InputError(
            "only the benchmark oracle ratio is available to `gbi scan` in this version: pass --oracle"
        )
    quiet_tf()
    sim = LHCOSim()
    sr = sim.signal_region.signal_region(read_data(args, args.path))
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
        entry = {"command": " ".join(sys.argv), "input": str(args.path), **read_options(args, args.path)}
        write_manifest(out, entry)
    return 0


def _side_by_side(results: dict, truth: dict) -> str:
    """Fit results of several ratio models as one table: value with MINOS (else HESSE) errors, validity,
    pull of μ, local significance and fit time."""
    import math

    def value(r, p, fmt):
        v = f"{r.values[p]:{fmt}}"
        if p in r.minos:
            lo, hi = r.minos[p]
            return f"{v} -{abs(lo):.2g}/+{hi:.2g}"
        e = r.errors.get(p)
        return v if e is None else f"{v} ± {e:.2g}"

    def pull(r):
        e = r.errors.get("mu")
        return f"{(r.values['mu'] - truth['mu']) / e:+.2f}" if e else ""

    rows = [["", "truth", *results]]
    for p, unit, fmt in (("mu", "", ".4g"), ("mx", " [GeV]", ".1f"), ("my", " [GeV]", ".1f")):
        rows.append([p + unit, f"{truth[p]:{fmt}}", *(value(r, p, fmt) for r in results.values())])
    rows.append(["valid", "", *("yes" if r.valid else "NO" for r in results.values())])
    rows.append(["pull μ", "", *(pull(r) for r in results.values())])
    # NLL(μ = 0) = 0 (the constant Σ log p_B is omitted; θ is free above the penalty threshold), so the
    # local test statistic of the background-only hypothesis is q₀ = −2 NLL_min.
    rows.append(["local Z", "", *(f"{math.sqrt(max(0.0, -2.0 * r.nll)):.2f}σ" for r in results.values())])
    rows.append(["fit time", "", *(f"{r.info.get('wall_time_s', math.nan):.1f} s" for r in results.values())])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  "
        + row[0].ljust(widths[0])
        + "".join(c.rjust(w + 3) for c, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    )


def cmd_demo(args: argparse.Namespace) -> int:
    if args.kappa and not args.learned:
        raise InputError("--kappa applies to the learned ensemble: use it with --learned")
    _positive_count(args.n_background, "--n-background")
    quiet_tf()
    from ..data.benchmark import LHCOSim
    from ..data.io import write_events
    from ..models.oracle import OracleRatio

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
    reference = _benchmark_reference(sim, args.seed)
    _, result = _fit_ratio(
        events,
        OracleRatio(sim),
        sim=sim,
        reference=reference,
        out=out,
        minos=True,
        truth=truth,
        tag="demo_fit",
        label="oracle",
    )
    entry = {"command": " ".join(sys.argv), "seed": args.seed, "truth": truth}
    valid = result.valid
    if args.learned:
        valid &= _demo_learned(args, events, sim, out, data_path, truth, result, t0)
        entry["learned"] = True
    write_manifest(out, entry)
    print(f"demo finished in {time.perf_counter() - t0:.1f} s")
    return 0 if valid else 1


def _demo_learned(
    args, events, sim, out: Path, data_path: Path, truth: dict, oracle_result, t0: float
) -> bool:
    """``gbi demo --learned``: quick flow generator + quick PAWS (trained or reused), learned fit, comparison."""
    from .._util import atomic_write_text
    from ..models.cfm import TARGET_AUC
    from .train import events_digest, learned_models

    print(f"\n--- learned GBI-PAWS (quick presets; models cached in {out / 'models'}) ---")
    models = learned_models(
        events,
        out,
        seed=args.seed,
        data_path=data_path,
        data_digest=events_digest(events),
        progress=sys.stderr.isatty(),
    )
    ensemble = models.ensemble.with_kappa(args.kappa) if args.kappa else models.ensemble
    n_ref = min(len(models.background), 200_000)
    _, learned = _fit_ratio(
        events,
        ensemble,
        sim=sim,
        reference=models.background[:n_ref],
        out=out,
        minos=True,
        truth=truth,
        tag="demo_fit_learned",
        label=f"learned PAWS (κ {ensemble.kappa_mode})",
    )
    results = {"oracle": oracle_result, f"learned (κ {ensemble.kappa_mode})": learned}
    print(f"\n{_side_by_side(results, truth)}")
    q = models.quality.get("benchmark")
    if q:
        print(
            f"  generated SR background vs truth: C2ST AUC = {q['auc']:.3f} ± {q['auc_error']:.3f} "
            f"(target ≤ {q.get('target_auc', TARGET_AUC)})"
        )
    reused = [k for k, v in models.reused.items() if v]
    print(
        f"  learned models: {'reused ' + ', '.join(reused) if reused else 'trained'} "
        f"({models.train_time_s:.0f} s); total so far {time.perf_counter() - t0:.0f} s"
    )
    payload = {
        "truth": truth,
        "oracle": oracle_result.to_dict(),
        "learned": learned.to_dict(),
        "kappa": ensemble.kappa_mode,
        "generator_quality": models.quality,
        "reused": models.reused,
        "models_time_s": models.train_time_s,
    }
    path = out_dirs(out)["results"] / "demo_comparison.json"
    atomic_write_text(path, json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return learned.valid


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
        help="fit μ, mX, mY of a data file in the SR (oracle or learned ratio model)",
        epilog="examples: gbi fit data.root --oracle --minos --out results/\n"
        "          gbi fit data.root --model run/models/paws --out run\n"
        "          gbi fit data.root --model run/models/paws --spurious-signal run/validate.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("path", help="data file (.root, .h5, .npz)")
    s.add_argument("--oracle", action="store_true", help="use the exact benchmark ratio Λ*")
    s.add_argument(
        "--model", metavar="DIR", help="use a trained PAWS ensemble (models/paws of `gbi train paws`)"
    )
    s.add_argument("--kappa", choices=("fixed", "sampled"), help="κ mode of --model (default: as saved)")
    s.add_argument(
        "--reference",
        metavar="FILE",
        help="SR background sample for the figures (default: the one --model was trained on)",
    )
    s.add_argument("--minos", action="store_true", help="MINOS interval for μ")
    s.add_argument("--out", help="directory for results/ and figures/")
    s.add_argument(
        "--profiles", action="store_true", help="1-D profile scans of μ, mX, mY and the 2-D contour"
    )
    s.add_argument(
        "--spurious-signal",
        metavar="VALUE|JSON",
        help=(
            "spurious-signal systematic on μ: σ_ss as a number, or the JSON of `gbi validate` "
            "(spurious_signal.sigma_mu); profiles μ and reports intervals and the local Z with it"
        ),
    )
    s.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the reference sample used for plots (and of --global-toys)",
    )
    g = s.add_argument_group("global significance (look-elsewhere effect over mX, mY)")
    g.add_argument(
        "--global-toys",
        type=int,
        metavar="N",
        help="after the fit, N background-only toys (resampled from the reference, fitted blind): global p "
        "and Z of the local excess; resumable (results/<name>_fit_global_toys.jsonl)",
    )
    g.add_argument("--dask", action="store_true", help="run the --global-toys toys on a local Dask cluster")
    g.add_argument("--workers", type=int, help="local Dask workers for the toys (default: one per core)")
    g.add_argument("--scheduler", metavar="ADDR", help="run the toys on the running Dask scheduler at ADDR")
    add_read_options(s)
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
    add_read_options(s)
    s.set_defaults(func=cmd_scan)

    s = sub.add_parser(
        "demo",
        help="generate the benchmark, fit it with the oracle (and --learned models), print and plot",
        epilog="examples: gbi demo --out gbi-output --s-over-sqrt-b 1\n"
        "          gbi demo --learned --out gbi-output   # rerun: reuses gbi-output/models/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--out", default="gbi-output", help="output directory (default gbi-output)")
    s.add_argument("--s-over-sqrt-b", type=float, default=1.0, help="injected S/√B (default 1)")
    s.add_argument("--mx", type=float, default=300.0)
    s.add_argument("--my", type=float, default=150.0)
    s.add_argument("--n-background", type=int, default=1_000_000)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument(
        "--learned",
        action="store_true",
        help=(
            "also train (or reuse from OUT/models/) the quick CFM and PAWS ensemble and fit with them; "
            "prints oracle and learned results side by side (≲ 10 min on 2 cores)"
        ),
    )
    s.add_argument("--kappa", choices=("fixed", "sampled"), help="κ mode of the learned fit (default fixed)")
    s.set_defaults(func=cmd_demo)
