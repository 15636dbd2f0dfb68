"""Statistics subcommands: ``toys`` (pseudo-experiments, pulls) and ``coverage`` (coverage table).

Both run ``--n-toys`` toys of one :class:`~gbi_zfit.inference.toys.ToyConfig` at a known truth, in this
process or on Dask (``--dask``, ``--workers N``, ``--scheduler ADDRESS``), appending every finished toy to
a JSON Lines result store (default ``<out>/results/toys.jsonl``). The store makes a run resumable: the same
command again resumes where it stopped, and a larger ``--n-toys`` adds toys. ``toys`` and ``coverage``
share the store layout, so ``gbi coverage`` on the store of a ``gbi toys`` run only summarises it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from ..errors import ConfigError, DataFileError, InputError
from ._common import out_dirs, quiet_tf, write_manifest

#: Command-line options that set :class:`ToyConfig` fields (same names as the dataclass fields).
CONFIG_OPTIONS = ("kind", "s_over_sqrt_b", "mx", "my", "n_background_sr", "minos_toys", "model")
DEFAULT_SEED = 1
DEFAULT_N_TOYS = {"toys": 100, "coverage": 500}


def result_tag(config: dict) -> str:
    """File-name tag of a toy configuration, e.g. ``oracle_sb1_mx300_my150`` (``.`` → ``p``)."""
    tag = f"{config['kind']}_sb{config['s_over_sqrt_b']:g}_mx{config['mx']:g}_my{config['my']:g}"
    return tag.replace(".", "p")


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _given_config(args: argparse.Namespace) -> dict:
    """The ToyConfig options given on the command line (the others are absent: ``default=SUPPRESS``)."""
    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if hasattr(args, k)}
    if given.get("model") is not None:
        from .train import resolve_paws_bundle

        given["model"] = str(resolve_paws_bundle(given["model"]).resolve())
    return given


def _store_path(args: argparse.Namespace, dirs: dict[str, Path]) -> Path:
    return Path(args.store) if args.store else dirs["results"] / "toys.jsonl"


def _differences(stored: dict, wanted: dict) -> str:
    """``--option: stored X, now Y`` for every setting in which two store configs differ (one line)."""

    def flat(cfg: dict) -> dict:
        return {**(cfg.get("toys") or {}), "seed": cfg.get("seed"), "schema": cfg.get("schema")}

    a, b = flat(stored), flat(wanted)
    diffs = [
        f"{_option(k) if k in CONFIG_OPTIONS or k == 'seed' else k}: stored {a.get(k)!r}, now {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return "; ".join(diffs) or "same settings, different hash"


def _open_store(path: Path, config, seed: int) -> int:
    """Create or check the result store before any work starts; returns how many toys it holds.

    Raises
    ------
    ConfigError
        The store holds toys of other settings (one line naming the differing options).
    """
    from ..inference.toys import store_config
    from ..parallel import ResultStore

    wanted = store_config(config, seed)
    try:
        return len(ResultStore(path, config=wanted))
    except ConfigError:
        stored = ResultStore(path, read_only=True).header.get("config") or {}
        raise ConfigError(
            f"{path} holds toys of other settings ({_differences(stored, wanted)}); rerun with the stored "
            "settings to resume, or pass another --store (or --out)"
        ) from None


def _run(args: argparse.Namespace, dirs: dict[str, Path]):
    """Run (or resume) the toys of the command-line configuration; returns the CoverageResult."""
    from ..inference.coverage import run_coverage
    from ..inference.toys import ToyConfig
    from ..parallel import make_executor

    config = ToyConfig(**_given_config(args))  # InputError/ParameterRangeError for bad values
    n_toys = DEFAULT_N_TOYS[args.command] if args.n_toys is None else args.n_toys
    if n_toys < 1:
        raise InputError(f"--n-toys must be ≥ 1, got {n_toys}")
    if args.scheduler and args.workers is not None:
        raise InputError("--workers starts a local Dask cluster; it cannot be combined with --scheduler")
    seed = getattr(args, "seed", DEFAULT_SEED)
    store = _store_path(args, dirs)
    done = _open_store(store, config, seed)
    print(
        f"{n_toys} {config.kind} toys at S/√B = {config.s_over_sqrt_b:g}, θ = ({config.mx:g}, {config.my:g}) "
        f"GeV, N_B,exp = {config.n_background_sr:g} (μ_true = {config.mu_true:.5g}), seed {seed}\n"
        f"store: {store} ({min(done, n_toys)} of them done before)",
        flush=True,
    )
    dask = args.dask or args.workers is not None
    with make_executor(dask=dask, scheduler=args.scheduler, n_workers=args.workers) as ex:
        if dask or args.scheduler:
            print(f"executor: {type(ex).__name__} with {ex.n_workers} worker(s)", flush=True)
        result = run_coverage(config, n_toys, seed, ex, store, progress=not args.no_progress)
    return result, store


def _summarize(args: argparse.Namespace, dirs: dict[str, Path]):
    """Summarise an existing store (also while it is being written); options given must match it."""
    from ..inference.coverage import summarize_store
    from ..inference.toys import ToyConfig

    store = _store_path(args, dirs)
    if not store.is_file():
        raise DataFileError(
            f"no toy store at {store}: run `gbi {args.command}` without --summarize-only first, "
            "or point --store at one"
        )
    if args.n_toys is not None and args.n_toys < 1:
        raise InputError(f"--n-toys must be ≥ 1, got {args.n_toys}")
    result = summarize_store(store, args.n_toys)
    stored = ToyConfig.from_dict(result.config)
    seed = getattr(args, "seed", result.seed)
    if dataclasses.replace(stored, **_given_config(args)) != stored or seed != result.seed:
        wanted = {"toys": {**result.config, **_given_config(args)}, "seed": seed}
        raise ConfigError(
            f"{store} holds toys of other settings "
            f"({_differences({'toys': result.config, 'seed': result.seed}, wanted)}); "
            "drop these options to summarise it, or pass another --store"
        )
    if result.n_done == 0:
        raise InputError(f"{store} holds no finished toys yet")
    print(f"summarising {result.n_done} toys in {store}", flush=True)
    return result, store


def _pull_line(name: str, p: dict) -> str:
    return (
        f"μ pull ({name}): mean {p['mean']:+.3f} ± {p['mean_error']:.3f}, "
        f"width {p['width']:.3f} ± {p['width_error']:.3f}"
    )


def _short_summary(result) -> str:
    """Toys done, fraction valid, μ pulls and median Z0 (``gbi toys``)."""
    frac = result.n_used / result.n_done if result.n_done else float("nan")
    lines = [
        (
            f"{result.n_done} of {result.n_toys} toys done: {result.n_used} valid ({frac:.1%}), "
            f"{result.n_failed} failed/invalid; {result.time_per_toy_s:.2f} s per toy (median)"
        ),
        _pull_line("θ floating", result.pull),
        _pull_line("θ fixed at the truth", result.pull_fixed),
        f"median Z0: {result.z0_median:.2f} (θ floating), {result.z0_fixed_median:.2f} (θ fixed)",
    ]
    if result.failures:
        shown = "; ".join(f"#{f['index']}: {f['reason']}" for f in result.failures[:5])
        lines.append(f"failed/invalid toys: {shown}")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    """``gbi toys`` and ``gbi coverage``: run or resume the toys, then figures, summary and manifest."""
    quiet_tf()
    t0 = time.perf_counter()
    out = Path(args.out)
    dirs = out_dirs(out)
    summarize_only = getattr(args, "summarize_only", False)
    result, store = (_summarize if summarize_only else _run)(args, dirs)
    wall = time.perf_counter() - t0

    from ..plotting.toys import plot_pulls, plot_test_statistics

    tag = result_tag(result.config)
    written = [
        plot_pulls(result, dirs["figures"] / f"pulls_{tag}.png"),
        plot_test_statistics(result, dirs["figures"] / f"test_statistics_{tag}.png"),
    ]
    if args.command == "coverage":
        path = dirs["results"] / f"coverage_{tag}.json"
        result.to_json(path)  # a function of the store only: --summarize-only writes the same file
        written.insert(0, path)
        print(result)
    else:
        print(_short_summary(result))
    print(f"wrote {', '.join(str(p) for p in written)} ({wall:.0f} s)")
    write_manifest(
        out,
        {
            "command": " ".join(sys.argv),
            "subcommand": args.command + (" --summarize-only" if summarize_only else ""),
            "seed": result.seed,
            "n_toys": result.n_toys,
            "config": result.config,
            "store": str(store),
            "wall_time_s": round(wall, 1),
        },
    )
    if not result.n_used:
        print(f"gbi {args.command}: no valid toys (failures listed above)", file=sys.stderr)
        return 1
    return 0


# -------------------------------------------------------------------------------------------------
TOYS_EPILOG = """\
examples:
  gbi toys --s-over-sqrt-b 1 --n-toys 100 --out toys1          # in this process
  gbi toys --s-over-sqrt-b 1 --n-toys 200 --out toys1          # resumes: runs only toys 100-199
  gbi toys --kind bootstrap --n-toys 200 --dask --workers 4 --out boot1
  gbi toys --n-toys 1000 --scheduler tcp://10.0.0.5:8786 --out toys1 --no-progress

Every finished toy is appended to --store as it finishes: the same command again (e.g. after Ctrl-C)
resumes, a larger --n-toys adds toys, and a store of other settings is refused.
"""

COVERAGE_EPILOG = """\
examples:
  gbi coverage --s-over-sqrt-b 1 --n-toys 500 --dask --workers 2 --out cov1
  gbi coverage --summarize-only --out cov1      # the table so far, also while the run is going
  gbi coverage --summarize-only --store elsewhere/toys.jsonl --out cov1

Prints the coverage of the Wilks intervals of μ and (mX, mY), MINOS and HESSE, the μ pulls and the
toy-calibrated (Neyman) thresholds of 2ΔNLL; writes results/coverage_<tag>.json and the figures.
"""


def _add_options(s: argparse.ArgumentParser, command: str) -> None:
    sup = argparse.SUPPRESS  # absent unless given: ToyConfig's defaults apply, --summarize-only can check
    g = s.add_argument_group("toy configuration")
    g.add_argument(
        "--kind",
        choices=("oracle", "bootstrap", "model"),
        default=sup,
        help="oracle: exact generator toys; bootstrap: Poisson bootstrap of one data set; "
        "model: Poisson toys of the model fitted to it (default oracle)",
    )
    g.add_argument(
        "--model",
        metavar="DIR",
        default=sup,
        help="fit the toys with this trained PAWS ensemble (`gbi train paws --out DIR`) instead of the oracle",
    )
    g.add_argument("--s-over-sqrt-b", type=float, default=sup, metavar="Z", help="injected S/√B (default 1)")
    g.add_argument("--mx", type=float, default=sup, metavar="GEV", help="true mX in GeV (default 300)")
    g.add_argument("--my", type=float, default=sup, metavar="GEV", help="true mY in GeV (default 150)")
    g.add_argument(
        "--n-background-sr",
        metavar="N",
        type=float,
        default=sup,
        help="expected SR background (default 117866 = 1M events × P(SR | B))",
    )
    g.add_argument(
        "--minos-toys",
        metavar="N",
        type=int,
        default=sup,
        help="MINOS(μ) on the first N toys only (default: all; 0: none; its 68%% interval is t_μ < 1)",
    )
    g.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=sup,
        help=f"root seed; toy i uses child i (default {DEFAULT_SEED})",
    )
    s.add_argument(
        "--n-toys",
        metavar="N",
        type=int,
        default=None,
        help=f"number of toys (default {DEFAULT_N_TOYS[command]}"
        + ("; with --summarize-only: all in the store)" if command == "coverage" else ")"),
    )
    g = s.add_argument_group("execution")
    g.add_argument("--dask", action="store_true", help="run on a local Dask cluster")
    g.add_argument(
        "--workers",
        metavar="N",
        type=int,
        default=None,
        help="local Dask workers (implies --dask; default one per core)",
    )
    g.add_argument(
        "--scheduler", metavar="ADDRESS", default=None, help="run on the Dask scheduler at ADDRESS"
    )
    g.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help="JSON Lines result store (default <out>/results/toys.jsonl)",
    )
    g.add_argument("--out", metavar="DIR", default="gbi-output", help="output directory (default gbi-output)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(sub) -> None:
    """Add ``toys`` and ``coverage`` to the ``gbi`` subparsers."""
    s = sub.add_parser(
        "toys",
        help="pseudo-experiments at a known truth: μ pulls, test statistics (resumable, Dask)",
        description="Run (or resume) pseudo-experiments and plot the μ pulls and the Wilks test statistics.",
        epilog=TOYS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(s, "toys")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser(
        "coverage",
        help="coverage of the μ and (mX, mY) intervals from toys (resumable, Dask)",
        description="Run (or resume) pseudo-experiments and summarise the coverage of the fit's intervals.",
        epilog=COVERAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_options(s, "coverage")
    s.add_argument(
        "--summarize-only",
        action="store_true",
        help="summarise the existing --store without running toys (also while it is being written)",
    )
    s.set_defaults(func=cmd_stats)
