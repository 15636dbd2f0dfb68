"""``gbi train flows`` and ``gbi ranode``: the R-ANODE command line.

``gbi train flows DATA --out DIR``
    The background model of R-ANODE: an ensemble of conditional normalizing flows p_B(x | mjj) trained on
    the sideband events of DATA (R-ANODE features (mJ2, mJ1 − mJ2, τ21_J1, τ21_J2)), saved as a model
    bundle in ``DIR/models/flows``. Members train in parallel on Dask with ``--dask`` / ``--scheduler``.
    Each finished member is saved in ``DIR/data/flows_store.jsonl``: the same command again resumes.

``gbi ranode DATA --flows DIR --out DIR``
    The R-ANODE μ scan on the SR events of DATA (:func:`gbi_zfit.inference.ranode.run_ranode`): p_B is the
    flow ensemble times the sideband fit of p(mjj) on DATA (or, with ``--oracle-background``, the exact
    benchmark density); the signal density f is an ensemble of small flows trained at each μ of the grid
    (or, with ``--oracle-signal MX MY``, the exact benchmark signal density: no training). The test-set
    likelihood is interpolated by a Gaussian process; μ̂ and its intervals are where it peaks and drops by
    χ²/2. With ``--minuit`` a signal ensemble is trained at μ̂ and frozen, and μ floats in Minuit
    (MIGRAD/HESSE/MINOS). Trained members go to a resumable task store (``--store``): the same command
    again resumes where it stopped.

Files under ``--out`` (:func:`._common.out_dirs`)::

    models/flows/                     background flow ensemble (train flows)
    results/flows_training.json       its training summary (train flows)
    results/ranode.json               RANODEResult.to_dict() (ranode; readable with RANODEResult.from_dict)
    results/mjj_fit.json              the sideband p(mjj) fit used by ranode (learned background)
    figures/ranode_scan.png           test ΔlnL per μ, the GP curve and the intervals
    models/ranode_signal/             the frozen signal ensemble of the Minuit fit (--minuit, learned f)
    data/ranode_store/                resumable task stores (default --store)
    data/flows_store.jsonl            finished background-flow members (train flows; resumable)
    manifest.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError, ModelFileError, ParameterRangeError
from ._common import (
    add_progress_option,
    add_read_options,
    member_store,
    out_dirs,
    progress_enabled,
    quiet_tf,
    read_data,
    read_options,
    write_manifest,
)

__all__ = ["cmd_ranode", "cmd_train_flows", "mu_grid_from_args", "register", "resolve_flows_bundle"]

#: Default ensemble sizes (background flows, signal flows per μ) of the presets.
ENSEMBLE = {"paper": 20, "quick": 5}
#: Quick preset of the signal flows: fewer epochs, shorter patience (architecture unchanged).
_QUICK_SIGNAL = {"max_epochs": 20, "patience": 3}


# ----------------------------------------------------------------------------------------------------
# helpers


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise InputError(f"{option} must be ≥ 1, got {value}")


def _check_executor_options(args: argparse.Namespace) -> bool:
    """Validate --dask/--workers/--scheduler; returns whether Dask is used."""
    _positive(args.workers, "--workers")
    if args.scheduler and args.workers is not None:
        raise InputError(
            "--workers sets the size of a local Dask cluster; it cannot be used with --scheduler"
        )
    return bool(args.dask or args.scheduler or args.workers is not None)


def _data_file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no data file at {p}")
    return p


def resolve_flows_bundle(path: str | Path) -> Path:
    """The flow bundle at ``path``, or at ``path/models/flows`` when ``path`` is a ``--out`` directory.

    Raises
    ------
    ModelFileError
        Neither holds a model bundle.
    """
    p = Path(path)
    if (p / "model.json").is_file():
        return p
    if (p / "models" / "flows" / "model.json").is_file():
        return p / "models" / "flows"
    what = "no such directory" if not p.exists() else "no model.json in it or in models/flows/"
    raise ModelFileError(
        f"no background flows at {p} ({what}); train them with `gbi train flows DATA --out DIR` and pass "
        "--flows DIR"
    )


def mu_grid_from_args(spec: list[str] | None):
    """The μ grid of ``--mu-grid LO HI N`` (N log-spaced values), or None for the default grid.

    Raises
    ------
    InputError, ParameterRangeError
        Not numbers, N < 3, LO ≥ HI, values outside (0, 1).
    """
    import numpy as np

    from ..inference.ranode import check_mu_grid

    if spec is None:
        return None
    try:
        lo, hi = float(spec[0]), float(spec[1])
        n = int(spec[2])
    except ValueError:
        raise InputError(
            f"--mu-grid needs LO HI N (two numbers and an integer), got {' '.join(spec)}"
        ) from None
    if n < 3:
        raise InputError(f"--mu-grid needs N ≥ 3 points, got {n}")
    if not (0.0 < lo < 1.0 and 0.0 < hi < 1.0):
        raise ParameterRangeError(
            f"--mu-grid values must lie in (0, 1) (log-spaced), got LO = {lo:g}, HI = {hi:g}"
        )
    if not lo < hi:
        raise InputError(f"--mu-grid needs LO < HI, got LO = {lo:g}, HI = {hi:g}")
    return check_mu_grid(np.logspace(math.log10(lo), math.log10(hi), n))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _write_json(path: Path, obj: Any) -> None:
    from .._util import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


# ----------------------------------------------------------------------------------------------------
# gbi train flows


def cmd_train_flows(args: argparse.Namespace) -> int:
    _positive(args.epochs, "--epochs")
    _positive(args.ensemble, "--ensemble")
    use_dask = _check_executor_options(args)
    data = _data_file(args.path)
    read_kwargs = read_options(args, data)
    quiet_tf()
    import numpy as np

    from ..data.regions import DEFAULT_SR
    from ..models.flows import BackgroundFlowEnsemble, FlowConfig
    from ..parallel import make_executor
    from .train import events_digest

    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
    if args.flow is not None:
        overrides["flow"] = args.flow
    config = FlowConfig.quick(**overrides) if args.preset == "quick" else FlowConfig(**overrides)
    n_members = args.ensemble or ENSEMBLE[args.preset]
    events = read_data(args, data)
    sr = DEFAULT_SR
    n_sb = len(sr.sidebands(events))
    print(
        f"training {n_members} background flow(s) ({config.flow.upper()} {config.n_layers}×"
        f"{list(config.hidden_units)}, ≤ {config.max_epochs} epochs) on the {n_sb} sideband events of "
        f"{data} (SR {sr} excluded)",
        flush=True,
    )
    out = Path(args.out)
    dirs = out_dirs(out)
    t0 = time.perf_counter()
    with (
        member_store(dirs["data"] / "flows_store.jsonl") as store,
        make_executor(dask=use_dask, scheduler=args.scheduler, n_workers=args.workers) as executor,
    ):
        if use_dask:
            print(f"executor: {type(executor).__name__} with {executor.n_workers} worker(s)", flush=True)
        flow = BackgroundFlowEnsemble.from_events(
            events,
            sr,
            config=config,
            n_members=n_members,
            seed=args.seed,
            executor=executor if use_dask else None,
            progress=progress_enabled(args),
            store=store,
        )
    flow.info["data"] = {"path": str(data.resolve()), "sha256": events_digest(events), "n_sideband": n_sb}
    bundle = flow.save(dirs["models"] / "flows")
    elapsed = time.perf_counter() - t0
    best = [h.best_val_loss for h in flow.histories]
    summary = {
        "data": str(data),
        "n_events": len(events),
        "n_sideband": n_sb,
        "signal_region": [sr.low, sr.high],
        "mjj_range": list(flow.mjj_range),
        "feature_set": flow.feature_set.name,
        "features": list(flow.feature_names),
        "preset": args.preset,
        "config": config.to_dict(),
        "n_members": flow.n_members,
        "seed": args.seed,
        "train_time_s": elapsed,
        "members": [
            {
                "best_epoch": h.best_epoch,
                "epochs": len(h.loss),
                "best_val_loss": h.best_val_loss,
                "stopped_early": h.stopped_early,
            }
            for h in flow.histories
        ],
        "best_val_loss_mean": float(np.mean(best)) if best else None,
        "bundle": str(bundle),
    }
    _write_json(dirs["results"] / "flows_training.json", _jsonable(summary))
    write_manifest(
        out,
        {
            "command": " ".join(sys.argv),
            "step": "train flows",
            "input": str(data),
            **read_kwargs,
            "preset": args.preset,
            "config": config.to_dict(),
            "n_members": flow.n_members,
            "seed": args.seed,
            "dask": args.scheduler or use_dask,
        },
    )
    loss = f", mean best validation NLL {summary['best_val_loss_mean']:.4f}" if best else ""
    print(f"saved {flow!r} to {bundle}{loss}")
    print(f"train flows finished in {elapsed:.0f} s")
    return 0


# ----------------------------------------------------------------------------------------------------
# gbi ranode


def plot_scan(result, path: Path) -> Path:
    """Test ΔlnL per μ (with bootstrap errors), the GP mean ± 1σ, μ̂ and the 68 % interval."""
    import numpy as np

    from ..plotting._style import LABELS, save, style

    plt, _ = style()
    scan = result.scan
    curve = scan.curve
    fig, ax = plt.subplots(figsize=(8, 6))
    mu_f = 10.0 ** np.asarray(curve.log10_mu)
    mean, std = np.asarray(curve.mean), np.asarray(curve.std)
    ax.fill_between(mu_f, mean - std, mean + std, color="C0", alpha=0.25, lw=0)
    ax.plot(mu_f, mean, color="C0", label="GP mean ± 1σ")
    ax.errorbar(scan.mu_grid, scan.delta_ll, yerr=scan.delta_ll_std, fmt="o", color="k", label="scan points")
    ax.axvline(curve.mu_hat, color="C1", ls="--", label=rf"$\hat\mu$ = {curve.mu_hat:.3g}")
    lo, hi = curve.interval(0.6827) if "0.6827" in curve.intervals else (math.nan, math.nan)
    if _finite(lo) and _finite(hi):
        ax.axvspan(max(lo, mu_f[0]), hi, color="C1", alpha=0.12, label="68 % interval")
    if scan.truth and _finite(scan.truth.get("mu")) and scan.truth["mu"] > 0:
        ax.axvline(scan.truth["mu"], color="C2", ls=":", label=rf"true $\mu$ = {scan.truth['mu']:.3g}")
    if result.fit is not None and _finite(result.fit.mu) and result.fit.mu > 0:
        ax.axvline(result.fit.mu, color="C3", ls="-.", label=rf"Minuit $\hat\mu$ = {result.fit.mu:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel(LABELS["mu"])
    ax.set_ylabel(r"test $\Delta \ln L(\mu)$ vs $\mu = 0$")
    ax.set_title(
        f"R-ANODE: $f$ {scan.signal.get('label')}, $p_B$ {scan.background.get('label')}, "
        f"{scan.n_members} member(s)",
        fontsize=14,
    )
    ax.legend(fontsize=12)
    fig.tight_layout()
    return save(fig, path)


def _signal_config(args: argparse.Namespace):
    from ..models.ranode import default_signal_flow_config

    overrides: dict[str, Any] = dict(_QUICK_SIGNAL) if args.preset == "quick" else {}
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
    return default_signal_flow_config(**overrides)


def cmd_ranode(args: argparse.Namespace) -> int:
    # cheap checks first: a bad option fails before TensorFlow is imported
    _positive(args.epochs, "--epochs")
    _positive(args.ensemble, "--ensemble")
    use_dask = _check_executor_options(args)
    if not 0.0 < args.test_fraction < 1.0:
        raise InputError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    quiet_tf()
    grid = mu_grid_from_args(args.mu_grid)
    data = _data_file(args.path)
    read_kwargs = read_options(args, data)
    flows_path = None if args.oracle_background else resolve_flows_bundle(args.flows)

    from ..data.benchmark import LHCOSim
    from ..inference.ranode import DEFAULT_MU_GRID, RANODEData, run_ranode
    from ..models.ranode import ExactBackgroundDensity, ExactSignalDensity, FlowBackgroundDensity
    from ..parallel import make_executor
    from .train import events_digest

    out = Path(args.out)
    dirs = out_dirs(out)
    t0 = time.perf_counter()
    sim = LHCOSim() if (args.oracle_background or args.oracle_signal) else None
    events = read_data(args, data)
    if flows_path is not None:
        from ..data.mjj import fit_sidebands
        from ..data.regions import DEFAULT_SR
        from ..models.flows import BackgroundFlowEnsemble

        flow = BackgroundFlowEnsemble.load(flows_path)
        sr = flow.signal_region or DEFAULT_SR
        mjj_fit = fit_sidebands(events.mjj, sr, seed=args.seed)
        _write_json(dirs["results"] / "mjj_fit.json", _jsonable(mjj_fit.to_dict()))
        background = FlowBackgroundDensity(flow, mjj_fit, signal_region=sr)
        print(f"p_B: {flow!r} from {flows_path} × sideband fit of p(mjj) (N_SR predicted {mjj_fit.n_sr:.0f})")
    else:
        background = ExactBackgroundDensity(sim)
        print("p_B: exact benchmark density (oracle)")
    signal = None
    if args.oracle_signal:
        mx, my = args.oracle_signal
        signal = ExactSignalDensity(sim, mx, my)  # ParameterRangeError outside [25, 700]
        print(f"f: exact benchmark signal density at (mX, mY) = ({mx:g}, {my:g}) GeV (oracle, no training)")
    rdata = RANODEData.from_events(events, background, test_fraction=args.test_fraction, seed=args.seed)
    config = _signal_config(args)
    n_members = args.ensemble or ENSEMBLE[args.preset]
    mus = DEFAULT_MU_GRID if grid is None else grid
    store = Path(args.store) if args.store else dirs["data"] / "ranode_store"
    print(
        f"{rdata.n_train} training and {rdata.n_test} test SR events; μ grid of {len(mus)} points in "
        f"[{mus[0]:.3g}, {mus[-1]:.3g}]"
        + ("" if signal is not None else f"; {n_members} signal flow(s) per μ, ≤ {config.max_epochs} epochs")
        + (f"; task store {store}" if signal is None else ""),
        flush=True,
    )
    with make_executor(dask=use_dask, scheduler=args.scheduler, n_workers=args.workers) as executor:
        if use_dask:
            print(f"executor: {type(executor).__name__} with {executor.n_workers} worker(s)", flush=True)
        try:
            result = run_ranode(
                rdata,
                signal,
                fit_at="mu_hat" if args.minuit else None,
                mu_grid=mus,
                n_members=n_members,
                config=config,
                seed=args.seed,
                executor=executor if use_dask else None,
                workdir=None if signal is not None else store,
                progress=progress_enabled(args),
            )
        except ConfigError as exc:
            if "different configuration" not in str(exc):
                raise
            raise ConfigError(
                f"the task store {store} holds signal flows of other data or settings; rerun with the "
                "same options to resume, or pass another --store (or delete it)"
            ) from None
    elapsed = time.perf_counter() - t0
    result.scan.info["wall_time_s"] = elapsed
    result_path = dirs["results"] / "ranode.json"
    result.to_json(result_path)
    if result.signal_flow is not None:
        result.signal_flow.save(dirs["models"] / "ranode_signal")
    figure = plot_scan(result, dirs["figures"] / "ranode_scan.png")
    write_manifest(
        out,
        {
            "command": " ".join(sys.argv),
            "step": "ranode",
            "input": str(data),
            **read_kwargs,
            "input_sha256": events_digest(events),
            "background": "oracle" if flows_path is None else str(flows_path),
            "signal": "learned" if signal is None else {"oracle": list(args.oracle_signal)},
            "preset": args.preset,
            "signal_config": None if signal is not None else config.to_dict(),
            "n_members": None if signal is not None else n_members,
            "mu_grid": [float(m) for m in mus],
            "minuit": bool(args.minuit),
            "seed": args.seed,
            "dask": args.scheduler or use_dask,
        },
    )
    print(result)
    lo, hi = result.scan.interval(0.6827)
    line = f"μ̂ = {result.scan.mu_hat:.4g}, 68 % interval [{lo:.4g}, {hi:.4g}] (GP scan)"
    if result.fit is not None:
        flo, fhi = result.fit.minos.get("0.6827", (math.nan, math.nan))
        line += (
            f"; Minuit μ̂ = {result.fit.mu:.4g} ± {result.fit.error:.2g}, MINOS 68 % [{flo:.4g}, {fhi:.4g}]"
        )
    print(line)
    print(f"results -> {result_path}, figure -> {figure}; ranode finished in {elapsed:.0f} s")
    return 0


# ----------------------------------------------------------------------------------------------------
# registration


def _common_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", required=True, help="output directory (models/, data/, results/, figures/)")
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "--preset",
        choices=tuple(ENSEMBLE),
        default="paper",
        help="model size and training length (default paper)",
    )
    g.add_argument("--quick", dest="preset", action="store_const", const="quick", help="= --preset quick")
    s.add_argument("--epochs", type=int, help="maximum epochs per member (overrides the preset)")
    s.add_argument(
        "--ensemble",
        type=int,
        help=f"members per ensemble (default {ENSEMBLE['paper']}, quick {ENSEMBLE['quick']})",
    )
    s.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    s.add_argument("--dask", action="store_true", help="train members in parallel on a local Dask cluster")
    s.add_argument("--scheduler", metavar="ADDR", help="use the running Dask scheduler at ADDR")
    s.add_argument("--workers", type=int, help="local Dask workers (default: one per core; implies --dask)")
    add_progress_option(s)


def register_train_flows(train_sub) -> None:
    """Add ``gbi train flows`` to the subcommands of the ``gbi train`` group (called by :mod:`.train`)."""
    s = train_sub.add_parser(
        "flows",
        help="R-ANODE background flows p_B(x | mjj) on the sideband events",
        description=(
            "Train the R-ANODE background model: an ensemble of conditional normalizing flows p_B(x | mjj) "
            "on the sideband events of DATA (features mJ2, mJ1 − mJ2, τ21_J1, τ21_J2), saved to "
            "OUT/models/flows for `gbi ranode --flows OUT`."
        ),
        epilog="example: gbi train flows data.root --out run --quick --ensemble 5 --dask",
    )
    s.add_argument("path", help="data file (.root, .h5, .npz); its sideband events train the flows")
    _common_options(s)
    s.add_argument("--flow", choices=("maf", "rqs"), help="affine (maf, default) or spline (rqs) layers")
    add_read_options(s)
    s.set_defaults(func=cmd_train_flows)


def register(sub) -> None:
    """Add ``gbi ranode`` (``gbi train flows`` joins the ``train`` group: :func:`register_train_flows`)."""
    s = sub.add_parser(
        "ranode",
        help="R-ANODE: μ scan with learned signal flows (+ GP), optionally μ floated in Minuit",
        description=(
            "Run R-ANODE on the SR events of DATA: at each μ of the grid train signal flows f on "
            "μ f + (1 − μ) p_B, interpolate the test likelihood with a Gaussian process and report μ̂ with "
            "its intervals. p_B = background flows (`gbi train flows`) × the sideband fit of p(mjj) on DATA, "
            "or the exact benchmark density (--oracle-background). Trained members are stored as they "
            "finish (--store): rerunning the same command resumes."
        ),
        epilog=(
            "examples:\n"
            "  gbi train flows data.root --out run --quick\n"
            "  gbi ranode data.root --flows run --out run --quick --minuit --dask\n"
            "  gbi ranode data.root --oracle-background --oracle-signal 300 150 --out oracle"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("path", help="data file (.root, .h5, .npz); its SR events are fitted")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument(
        "--flows", metavar="DIR", help="background flow bundle, or the --out directory of `train flows`"
    )
    g.add_argument(
        "--oracle-background", action="store_true", help="exact benchmark p_B (synthetic data only)"
    )
    s.add_argument(
        "--oracle-signal",
        nargs=2,
        type=float,
        metavar=("MX", "MY"),
        help="exact benchmark signal density at (mX, mY) GeV instead of learned flows (no training)",
    )
    s.add_argument(
        "--mu-grid",
        nargs=3,
        metavar=("LO", "HI", "N"),
        help="N log-spaced μ values in [LO, HI] (default 20 in [1e-5, 1e-1])",
    )
    s.add_argument(
        "--minuit",
        action="store_true",
        help="also train f at μ̂, freeze it and float μ in Minuit (HESSE/MINOS); "
        "with --oracle-signal the Minuit fit is always done (no training needed)",
    )
    s.add_argument(
        "--test-fraction", type=float, default=0.5, help="fraction of SR events in the test set (default 0.5)"
    )
    s.add_argument(
        "--store",
        metavar="DIR",
        help="directory of the resumable task stores (default OUT/data/ranode_store)",
    )
    _common_options(s)
    add_read_options(s)
    s.set_defaults(func=cmd_ranode)
