"""``gbi validate``: the spurious signal of a learned GBI-PAWS model in sideband windows."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import InputError
from ._common import (
    add_progress_option,
    add_read_options,
    out_dirs,
    progress_enabled,
    quiet_tf,
    read_data,
    read_options,
    write_manifest,
)

__all__ = ["cmd_validate", "register"]


def _generator_path(args: argparse.Namespace, model: Path) -> Path:
    """``--generator``, or ``models/generator`` next to the classifier bundle."""
    if args.generator:
        return Path(args.generator)
    guess = model.parent / "generator"
    if not guess.is_dir():
        raise InputError(
            f"no flow generator next to {model} ({guess} is missing); give it with --generator DIR "
            "(`gbi train generator` writes DIR/models/generator)"
        )
    return guess


def _bundle_digest(path: Path) -> str:
    """SHA-256 of a model bundle's sidecar (it records its members' checksums)."""
    import hashlib

    from ..models.persistence import SIDECAR_NAME

    return hashlib.sha256((path / SIDECAR_NAME).read_bytes()).hexdigest()


def _windows(values: list[float] | None):
    if values is None:
        return None
    if len(values) % 2:
        raise InputError(f"--windows takes pairs LOW HIGH (GeV); got {len(values)} numbers")
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def cmd_validate(args: argparse.Namespace) -> int:
    from .train import resolve_paws_bundle

    windows = _windows(args.windows)
    if args.n_starts < 1:
        raise InputError(f"--n-starts must be ≥ 1, got {args.n_starts}")
    if args.seed < 0:
        raise InputError(f"--seed must be ≥ 0, got {args.seed}")
    model = resolve_paws_bundle(args.model)
    gen_path = _generator_path(args, model)
    out = Path(args.out)
    dirs = out_dirs(out)  # fail on a bad --out before any training
    quiet_tf()
    from .._util import atomic_write_text
    from ..data.benchmark import LHCOSim
    from ..inference.validation import validate_sidebands
    from ..models.classifier import ClassifierEnsemble
    from ..models.flowgen import FlowGenerator
    from ..plotting.validation import plot_sideband_validation

    events = read_data(args, args.path)
    ensemble = ClassifierEnsemble.load(model)
    generator = FlowGenerator.load(gen_path)
    print(f"ratio model: {ensemble!r}\ngenerator: {generator.describe()} ({gen_path})")
    t0 = time.perf_counter()
    result = validate_sidebands(
        events,
        ensemble,
        generator,
        windows=windows,
        retrain=not args.reuse_generator,
        sim=LHCOSim() if args.check_benchmark else None,
        seed=args.seed,
        store_path=dirs["data"] / "validate_windows.jsonl",
        fit_kwargs={"n_starts": args.n_starts},
        identity={"paws": _bundle_digest(model), "generator": _bundle_digest(gen_path)},
        progress=progress_enabled(args),
    )
    result.info.update(model=str(model), generator=str(gen_path), data=str(args.path))
    print(result)
    path = dirs["results"] / "validate.json"
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2))
    fig = plot_sideband_validation(result, dirs["figures"] / "validate.png")
    print(f"wrote {path} and {fig} ({time.perf_counter() - t0:.0f} s)")
    write_manifest(
        out,
        {
            "command": " ".join(sys.argv),
            "step": "validate",
            "input": str(args.path),
            **read_options(args, args.path),
            "model": str(model),
            "generator": str(gen_path),
            "seed": args.seed,
            "sigma_mu": result.sigma_mu,
        },
    )
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "validate",
        help="spurious signal of a learned model in sideband windows (→ gbi fit --spurious-signal)",
        description=(
            "Treat windows of the SR's width in the sidebands as pretend signal regions: retrain the flow "
            "generator without each window's events (as the analysis generator never saw the SR), "
            "transport the PAWS ratio to the window with the generators' densities, and fit the window's "
            "data blind (μ, mX, mY free). The largest spurious μ̂ is the systematic σ_ss written to "
            "results/validate.json; resumable (data/validate_windows.jsonl)."
        ),
        epilog=(
            "examples: gbi validate data.root --model run/models/paws --out run\n"
            "          gbi fit data.root --model run/models/paws --spurious-signal run/results/validate.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("path", help="data file (.root, .h5, .npz), the same as for gbi fit")
    s.add_argument(
        "--model", required=True, help="PAWS classifier bundle (or a --out directory of train paws)"
    )
    s.add_argument("--generator", help="flow generator bundle (default: models/generator next to --model)")
    s.add_argument(
        "--windows",
        type=float,
        nargs="+",
        metavar="GEV",
        help="window edges as pairs LOW HIGH ... (default: one SR width below the SR, two above)",
    )
    s.add_argument(
        "--reuse-generator",
        action="store_true",
        help="do not retrain: reuse the analysis generator (fast, but it has seen the windows: a lower bound)",
    )
    s.add_argument(
        "--check-benchmark",
        action="store_true",
        help="also fit each window with the exact oracle ratio (synthetic benchmark only)",
    )
    s.add_argument("--n-starts", type=int, default=3, help="multi-start fits per window (as gbi fit)")
    s.add_argument("--seed", type=int, default=0, help="seed of the generator retraining")
    s.add_argument("--out", required=True, help="output directory")
    add_progress_option(s)
    add_read_options(s)
    s.set_defaults(func=cmd_validate)
