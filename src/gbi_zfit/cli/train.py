"""``gbi train``: the learned models of GBI-PAWS.

``gbi train cfm DATA --out DIR``
    Sideband fit of p(mjj), the CFM background generator p_B(x | mjj) on the sideband events of DATA, and
    the SR background sample (mjj from the p(mjj) fit, x from the CFM, 3 × the predicted SR count).
    Quality checks: *sideband closure* (always; works on real data) — the CFM conditioned on the mjj of
    held-out sideband events against those events — and, with ``--check-benchmark``, the sample against
    the true SR background of the synthetic benchmark. Each check is a classifier two-sample test
    (held-out AUC, 0.5 = indistinguishable) plus per-feature histograms.

``gbi train paws --background DIR/data/sr_background.npz --out DIR``
    The parameterized classifier ensemble (benchmark signal on the θ grid vs the SR background sample);
    members train in parallel on Dask with ``--dask`` / ``--scheduler``.

Files under ``--out`` (:func:`._common.out_dirs`)::

    models/cfm/  models/paws/            model bundles (:mod:`gbi_zfit.models.persistence`)
    data/sr_background.npz               the generated SR background
    results/mjj_fit.json  results/cfm_quality.json  results/paws_training.json
    figures/cfm_quality_sideband.png  figures/cfm_quality_benchmark.png
    manifest.json

The bundles record where their training data came from (path and SHA-256), so ``gbi fit --model`` can use
the sample an ensemble was trained on as the reference of its figures. :func:`learned_models` trains or
reuses both models for ``gbi demo --learned``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelFileError
from ._common import (
    add_read_options,
    member_store,
    out_dirs,
    quiet_tf,
    read_data,
    read_options,
    write_manifest,
)

__all__ = [
    "LearnedModels",
    "events_digest",
    "learned_models",
    "read_background_sample",
    "register",
    "resolve_paws_bundle",
    "run_cfm",
    "run_paws",
]

PRESETS = ("paper", "standard", "quick", "test")
SR_BACKGROUND_FILE = "sr_background.npz"
#: At most this many sideband events (and at most 5 % of them) are kept out of CFM training for the
#: sideband-closure check.
_CLOSURE_MAX = 50_000
_CLOSURE_FRACTION = 0.05
#: Events per sample in the benchmark check against the true SR background.
_BENCHMARK_CHECK_SIZE = 60_000


# ----------------------------------------------------------------------------------------------------
# helpers


def digest(*arrays) -> str:
    """SHA-256 of numpy arrays (values as float64, shapes included): identifies a training sample."""
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def events_digest(events) -> str:
    """:func:`digest` of every column (and the labels, if any) of an :class:`~gbi_zfit.data.events.Events`."""
    cols = events.to_dict()
    return digest(*(cols[k] for k in sorted(cols)))


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _progress(args: argparse.Namespace) -> bool:
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise InputError(f"{option} must be ≥ 1, got {value}")


def read_background_sample(path: Path, what: str):
    """(events, SR PAWS features) of a file that must hold background only (e.g. the CFM sample)."""
    import numpy as np

    from ..data.io import read_events
    from ..data.regions import DEFAULT_SR

    events = read_events(path)
    if events.label is not None and np.any(events.label == 1):
        raise InputError(
            f"{what} {path} holds {int(events.label.sum())} signal-labelled events; give a background "
            "sample (e.g. data/sr_background.npz written by `gbi train cfm`)"
        )
    sr = DEFAULT_SR.signal_region(events)
    if len(sr) < len(events):
        print(f"{what}: kept the {len(sr)} of {len(events)} events inside the SR {DEFAULT_SR}")
    return events, sr.features("paws")


def resolve_paws_bundle(path: str | Path) -> Path:
    """The classifier bundle at ``path``, or at ``path/models/paws`` when ``path`` is a ``--out`` directory."""
    from ..models.persistence import SIDECAR_NAME

    p = Path(path)
    if not (p / SIDECAR_NAME).exists() and (p / "models" / "paws" / SIDECAR_NAME).exists():
        return p / "models" / "paws"
    return p


# ----------------------------------------------------------------------------------------------------
# stages (shared by the subcommands and `gbi demo --learned`)


@dataclass
class CFMStage:
    """What :func:`run_cfm` produced."""

    generator: Any
    sample: Any  # SRBackgroundSample
    mjj_fit: Any
    quality: dict[str, Any] = field(default_factory=dict)  # check name -> GeneratorQuality


def _quality(name: str, generated, reference, dirs: dict[str, Path], seed, reference_label: str):
    from ..models.cfm import generator_quality
    from ..plotting.generator import plot_generator_quality

    t0 = time.perf_counter()
    q = generator_quality(generated, reference, seed=seed)
    fig = plot_generator_quality(
        q, dirs["figures"] / f"cfm_quality_{name}.png", reference_label=reference_label
    )
    verdict = "passed" if q.passed else "above target"
    print(
        f"  {name} check: C2ST AUC = {q.auc:.4f} ± {q.auc_error:.4f} (target ≤ {q.target_auc}: {verdict}), "
        f"max KS {max(q.ks.values()):.3f}, {q.n_generated} vs {q.n_reference} events, "
        f"{time.perf_counter() - t0:.0f} s -> {fig}"
    )
    return q


def run_cfm(
    events,
    out: Path,
    config,
    *,
    seed: int,
    factor: float = 3.0,
    sideband_check: bool = True,
    benchmark_check: bool = False,
    progress: bool = False,
    provenance: dict[str, Any] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> CFMStage:
    """Sideband p(mjj) fit, CFM training, SR background sample and quality checks; writes the files.

    Seeds: ``spawn_seeds(seed, 5)`` → (closure split, training, SR sample, sideband check, benchmark check).
    """
    import numpy as np

    from .._util import atomic_write_text
    from ..data.io import write_events
    from ..data.mjj import fit_sidebands
    from ..data.regions import DEFAULT_SR
    from ..models.cfm import train_cfm
    from ..parallel import spawn_seeds

    if not (np.isfinite(factor) and factor > 0):
        raise InputError(f"--factor must be > 0, got {factor}")
    dirs = out_dirs(out)
    s_split, s_train, s_sample, s_check_sb, s_check_bm = spawn_seeds(seed, 5)

    t0 = time.perf_counter()
    mjj_fit = fit_sidebands(events.mjj, DEFAULT_SR, seed=s_split)
    atomic_write_text(dirs["results"] / "mjj_fit.json", json.dumps(mjj_fit.to_dict(), indent=2))
    print(
        f"sideband fit of p(mjj): predicted SR background {mjj_fit.n_sr:.0f} ± {mjj_fit.n_sr_error:.0f} "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    sb = DEFAULT_SR.sidebands(events)
    n_hold = min(_CLOSURE_MAX, int(_CLOSURE_FRACTION * len(sb))) if sideband_check else 0
    if sideband_check and n_hold < 200:
        raise InputError(
            f"only {len(sb)} sideband events: too few for the sideband-closure check (≥ 4000 needed)"
        )
    perm = np.random.default_rng(s_split).permutation(len(sb))
    held_out = sb.select(np.sort(perm[:n_hold]))
    train = sb.select(np.sort(perm[n_hold:]))
    print(
        f"training the CFM ({config.width} wide × {config.n_blocks} blocks, ≤ {config.epochs} epochs) on "
        f"{len(train) if config.max_events is None else min(len(train), config.max_events)} of "
        f"{len(sb)} sideband events" + (f" ({n_hold} held out for the closure check)" if n_hold else "")
    )
    generator = train_cfm(train, config, seed=s_train, progress=progress)
    h = generator.history
    print(
        f"  {h.n_epochs} epochs (best {h.best_epoch}), validation loss {min(h.val_loss):.4f}, "
        f"{generator.metadata['train_time_s']:.0f} s"
    )

    t0 = time.perf_counter()
    sample = generator.sample_sr_background(mjj_fit, factor=factor, seed=s_sample)
    sample_path = dirs["data"] / SR_BACKGROUND_FILE
    write_events(sample.to_events(), sample_path)
    sample_digest = events_digest(sample.to_events())
    print(
        f"SR background sample: {len(sample.mjj)} events ({factor:g} × predicted SR count), "
        f"{time.perf_counter() - t0:.0f} s -> {sample_path}"
    )

    stage = CFMStage(generator, sample, mjj_fit)
    if sideband_check:
        gen = generator.sample(held_out.mjj, seed=s_check_sb)
        stage.quality["sideband"] = _quality(
            "sideband", gen, held_out.features("paws"), dirs, s_check_sb, "held-out sideband events"
        )
    if benchmark_check:
        from ..data.benchmark import LHCOSim

        n = min(len(sample.mjj), _BENCHMARK_CHECK_SIZE)
        truth = LHCOSim().sample_background_sr(n, seed=s_check_bm).features("paws")
        stage.quality["benchmark"] = _quality(
            "benchmark", sample.features[:n], truth, dirs, s_check_bm, "true SR background"
        )
    if stage.quality:
        atomic_write_text(
            dirs["results"] / "cfm_quality.json",
            json.dumps({k: q.to_dict() for k, q in stage.quality.items()}, indent=2),
        )

    generator.metadata.update(
        {
            "training_data": dict(provenance or {}),
            "mjj_fit": mjj_fit.to_dict(),
            "sr_background": {
                "path": str(sample_path.resolve()),
                "sha256": sample_digest,
                "n": len(sample.mjj),
                "factor": float(factor),
            },
            "quality": {k: {"auc": q.auc, "auc_error": q.auc_error} for k, q in stage.quality.items()},
            **(extra_metadata or {}),
        }
    )
    path = generator.save(dirs["models"] / "cfm")
    print(f"saved the CFM generator to {path}")
    return stage


def run_paws(
    background,
    out: Path,
    config,
    *,
    seed: int,
    executor=None,
    progress: bool = False,
    provenance: dict[str, Any] | None = None,
    extra_metadata: dict[str, Any] | None = None,
):
    """Train the classifier ensemble on ``background`` (n, 6) and save it to ``out/models/paws``."""
    import numpy as np

    from .._util import atomic_write_text
    from ..models.classifier import train_classifier_ensemble

    dirs = out_dirs(out)
    n_bkg = len(background) if config.n_background is None else min(len(background), config.n_background)
    where = "" if executor is None else f" on {executor.n_workers} Dask worker(s)"
    print(
        f"training {config.n_members} classifier(s) ({'-'.join(map(str, config.hidden))}, ≤ {config.epochs} "
        f"epochs){where}: {len(config.grid)} mass points × {config.n_signal_per_point} signal events vs "
        f"{n_bkg} SR background events"
    )
    with member_store(dirs["data"] / "classifier_store.jsonl") as store:
        ensemble = train_classifier_ensemble(
            background, config, seed=seed, executor=executor, progress=progress, store=store
        )
    for i, hist in enumerate(ensemble.metadata["histories"]):
        print(
            f"  member {i}: {len(hist['loss'])} epochs (best {hist['best_epoch']}), "
            f"validation loss {min(hist['val_loss']):.4f}"
        )
    surface = ensemble.kappa_surface
    print(
        f"  κ fixed = {np.exp(ensemble.log_kappa_fixed):.4g}; sampled κ(θ) on {surface.n_reference} held-out "
        f"events: MC error {surface.mc_error:.3f}, interpolation error rms {surface.check_rms:.3f} in log κ; "
        f"default mode {ensemble.kappa_mode}; "
        f"{ensemble.metadata['train_time_s']:.0f} s"
    )
    ensemble.metadata.update({"background": dict(provenance or {}), **(extra_metadata or {})})
    path = ensemble.save(dirs["models"] / "paws")
    summary = {
        "bundle": str(path),
        "n_members": ensemble.n_members,
        "log_kappa_fixed": ensemble.log_kappa_fixed,
        "kappa_surface": surface.to_dict(),
        "histories": ensemble.metadata["histories"],
        "train_time_s": ensemble.metadata["train_time_s"],
        "background": ensemble.metadata["background"],
    }
    atomic_write_text(dirs["results"] / "paws_training.json", json.dumps(summary, indent=2))
    print(f"saved the classifier ensemble to {path}")
    return ensemble


# ----------------------------------------------------------------------------------------------------
# subcommands


def _config(cls, args: argparse.Namespace, **overrides):
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    return cls.preset(args.preset, **overrides)


def cmd_train_cfm(args: argparse.Namespace) -> int:
    _positive(args.epochs, "--epochs")
    data = Path(args.path)
    read_kwargs = read_options(args, data)
    quiet_tf()
    from ..models.cfm import CFMConfig

    config = _config(CFMConfig, args)
    events = read_data(args, data)
    out = Path(args.out)
    t0 = time.perf_counter()
    stage = run_cfm(
        events,
        out,
        config,
        seed=args.seed,
        factor=args.factor,
        benchmark_check=args.check_benchmark,
        progress=_progress(args),
        provenance={"path": str(data.resolve()), "sha256": events_digest(events), "n": len(events)},
    )
    write_manifest(
        out,
        {
            "command": " ".join(sys.argv),
            "step": "train cfm",
            "input": str(data),
            **read_kwargs,
            "preset": args.preset,
            "config": config.to_dict(),
            "seed": args.seed,
            "quality": {k: q.auc for k, q in stage.quality.items()},
        },
    )
    print(f"train cfm finished in {time.perf_counter() - t0:.0f} s")
    return 0


def cmd_train_paws(args: argparse.Namespace) -> int:
    _positive(args.epochs, "--epochs")
    _positive(args.ensemble, "--ensemble")
    _positive(args.workers, "--workers")
    if args.scheduler and args.workers is not None:
        raise InputError(
            "--workers sets the size of a local Dask cluster; it cannot be used with --scheduler"
        )
    background_path = Path(args.background)
    quiet_tf()
    from ..models.classifier import ClassifierConfig
    from ..parallel import make_executor

    overrides: dict[str, Any] = {}
    if args.ensemble is not None:
        overrides["n_members"] = args.ensemble
    if args.kappa is not None:
        overrides["kappa_mode"] = args.kappa
    config = _config(ClassifierConfig, args, **overrides)
    events, background = read_background_sample(background_path, "--background")
    out = Path(args.out)
    t0 = time.perf_counter()
    use_dask = bool(args.dask or args.scheduler or args.workers is not None)
    provenance = {
        "path": str(background_path.resolve()),
        "sha256": events_digest(events),
        "n_sr": len(background),
    }
    with make_executor(dask=use_dask, scheduler=args.scheduler, n_workers=args.workers) as executor:
        run_paws(
            background,
            out,
            config,
            seed=args.seed,
            executor=executor if use_dask else None,
            progress=_progress(args),
            provenance=provenance,
        )
    write_manifest(
        out,
        {
            "command": " ".join(sys.argv),
            "step": "train paws",
            "background": str(background_path),
            "preset": args.preset,
            "config": config.to_dict(),
            "seed": args.seed,
            "dask": args.scheduler or use_dask,
        },
    )
    print(f"train paws finished in {time.perf_counter() - t0:.0f} s")
    return 0


# ----------------------------------------------------------------------------------------------------
# `gbi demo --learned`: train or reuse


@dataclass
class LearnedModels:
    """The learned models of ``gbi demo --learned`` and whether they came from the cache."""

    ensemble: Any
    background: Any  # (n, 6) SR background sample (CFM)
    reused: dict[str, bool]
    quality: dict[str, Any]
    train_time_s: float


def _cached(path: Path, key: dict, loader):
    """The bundle at ``path`` if its ``demo_cache`` metadata equals ``key``, else ``None`` (with a note)."""
    from ..models.persistence import SIDECAR_NAME, read_sidecar

    if not (path / SIDECAR_NAME).exists():
        return None
    try:
        if read_sidecar(path)["metadata"].get("demo_cache") != _jsonable(key):
            print(f"  {path}: trained for other data or settings, retraining")
            return None
        return loader(path)
    except ModelFileError as exc:
        print(f"  {path}: cannot be reused ({exc}), retraining")
        return None


def learned_models(
    events, out: Path, *, seed: int, data_path: Path, data_digest: str, progress: bool
) -> LearnedModels:
    """Quick CFM + quick PAWS ensemble for ``events``, reusing ``out/models/{cfm,paws}`` when compatible.

    A cached CFM is reused when it was trained on the same data (SHA-256 of the events) with the same seed
    and preset; a cached ensemble when it was trained on the same SR background sample (SHA-256) with the
    same seed and preset. A missing or modified sample of a reused CFM is drawn again (same seed).
    """
    import numpy as np

    from ..data.io import read_events, write_events
    from ..data.mjj import MjjFitResult
    from ..models.cfm import CFMConfig, CFMGenerator
    from ..models.classifier import ClassifierConfig, ClassifierEnsemble
    from ..parallel import spawn_seeds

    dirs = out_dirs(out)
    # training seeds: children of SeedSequence([seed, 1]), independent of the data generation's SeedSequence(seed)
    s_cfm, s_paws = (int(s.generate_state(1)[0]) for s in spawn_seeds(np.random.SeedSequence([seed, 1]), 2))
    cfm_config, paws_config = CFMConfig.preset("quick"), ClassifierConfig.preset("quick")
    sample_path = dirs["data"] / SR_BACKGROUND_FILE
    t0 = time.perf_counter()
    reused = {"cfm": False, "paws": False}

    cfm_key = _jsonable(
        {"data_sha256": data_digest, "seed": s_cfm, "factor": 3.0, "config": cfm_config.to_dict()}
    )
    generator = _cached(dirs["models"] / "cfm", cfm_key, CFMGenerator.load)
    if generator is None:
        stage = run_cfm(
            events,
            out,
            cfm_config,
            seed=s_cfm,
            sideband_check=False,
            benchmark_check=True,
            progress=progress,
            provenance={"path": str(data_path.resolve()), "sha256": data_digest, "n": len(events)},
            extra_metadata={"demo_cache": cfm_key},
        )
        generator, background = stage.generator, stage.sample.features
        sample_digest = generator.metadata["sr_background"]["sha256"]
    else:
        reused["cfm"] = True
        recorded = generator.metadata.get("sr_background", {}).get("sha256")
        sample = read_events(sample_path) if sample_path.exists() else None
        if sample is not None and events_digest(sample) == recorded:
            print(f"reusing the CFM generator and the SR background sample in {out}")
            sample_digest = recorded
        else:
            print(f"reusing the CFM generator in {out}; drawing the SR background sample again")
            s_sample = spawn_seeds(s_cfm, 5)[2]  # as in run_cfm
            mjj_fit = MjjFitResult.from_dict(generator.metadata["mjj_fit"])
            sample = generator.sample_sr_background(mjj_fit, factor=3.0, seed=s_sample).to_events()
            write_events(sample, sample_path)
            sample_digest = events_digest(sample)
        background = sample.features("paws")
    quality = dict(generator.metadata.get("quality", {}))

    paws_key = _jsonable(
        {"background_sha256": sample_digest, "seed": s_paws, "config": paws_config.to_dict()}
    )
    ensemble = _cached(dirs["models"] / "paws", paws_key, ClassifierEnsemble.load)
    if ensemble is None:
        ensemble = run_paws(
            background,
            out,
            paws_config,
            seed=s_paws,
            progress=progress,
            provenance={"path": str(sample_path.resolve()), "sha256": sample_digest, "n_sr": len(background)},
            extra_metadata={"demo_cache": paws_key},
        )
    else:
        reused["paws"] = True
        print(f"reusing the classifier ensemble in {out}")
    return LearnedModels(ensemble, background, reused, quality, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------
# registration


def _common_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", required=True, help="output directory (models/, data/, results/, figures/)")
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "--preset", choices=PRESETS, default="paper", help="model size and training length (default paper)"
    )
    g.add_argument("--quick", dest="preset", action="store_const", const="quick", help="= --preset quick")
    s.add_argument("--epochs", type=int, help="maximum epochs (overrides the preset)")
    s.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    s.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )


def register(sub) -> None:
    """Add ``gbi train cfm``, ``gbi train paws`` and (from :mod:`.ranode`) ``gbi train flows``."""
    t = sub.add_parser(
        "train",
        help="train learned models (GBI-PAWS: cfm, then paws)",
        description="Train learned models. GBI-PAWS: first `train cfm` (generator), then `train paws`.",
        epilog=(
            "example:\n"
            "  gbi train cfm data.root --out run --quick --check-benchmark\n"
            "  gbi train paws --background run/data/sr_background.npz --out run --quick\n"
            "  gbi fit data.root --model run/models/paws --out run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = t.add_subparsers(dest="model", required=True, metavar="MODEL")

    s = tsub.add_parser(
        "cfm",
        help="sideband CFM generator and the SR background sample",
        description=(
            "Fit p(mjj) in the sidebands, train the conditional flow-matching generator p_B(x | mjj) on the "
            "sideband events and write the SR background sample (mjj from the fit, x from the CFM). "
            "Quality: sideband closure on held-out sideband events, and with --check-benchmark the true "
            "SR background of the synthetic benchmark."
        ),
        epilog="example: gbi train cfm data.root --out run --quick --check-benchmark",
    )
    s.add_argument("path", help="data file (.root, .h5, .npz); its sideband events train the CFM")
    _common_options(s)
    s.add_argument(
        "--factor", type=float, default=3.0, help="SR background sample size / predicted SR count (default 3)"
    )
    s.add_argument(
        "--check-benchmark",
        action="store_true",
        help="also compare the SR sample with the true benchmark SR background (synthetic data only)",
    )
    add_read_options(s)
    s.set_defaults(func=cmd_train_cfm)

    s = tsub.add_parser(
        "paws",
        help="parameterized classifier ensemble (the ratio model of GBI-PAWS)",
        description=(
            "Train the parameterized classifier ensemble g(x, θ): benchmark signal on the mass grid vs the "
            "SR background sample. The ensemble is saved as a ratio model for `gbi fit --model`."
        ),
        epilog="example: gbi train paws --background run/data/sr_background.npz --out run --quick --dask",
    )
    s.add_argument(
        "--background", required=True, help="SR background events (data/sr_background.npz of `train cfm`)"
    )
    _common_options(s)
    s.add_argument("--ensemble", type=int, help="number of members (overrides the preset)")
    s.add_argument(
        "--kappa",
        choices=("fixed", "sampled"),
        help="default κ mode saved with the ensemble (both are computed)",
    )
    s.add_argument("--dask", action="store_true", help="train members in parallel on a local Dask cluster")
    s.add_argument("--scheduler", metavar="ADDR", help="use the running Dask scheduler at ADDR")
    s.add_argument("--workers", type=int, help="local Dask workers (default: one per core; implies --dask)")
    s.set_defaults(func=cmd_train_paws)

    from .ranode import register_train_flows  # R-ANODE's background flows join this group

    register_train_flows(tsub)
