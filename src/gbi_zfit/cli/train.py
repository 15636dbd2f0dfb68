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
#: The generated κ reference (independent of the training sample), next to SR_BACKGROUND_FILE.
SR_REFERENCE_FILE = "sr_reference.npz"
QUALITY_FILE = "cfm_quality.json"
#: Size of the κ reference per preset (the issue's ≥ 1M for the analysis presets).
REFERENCE_SIZES = {"paper": 2_000_000, "standard": 1_000_000, "quick": 300_000, "test": 5_000}
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
    fidelity: Any = None  # NormalisationCheck of a flow generator against the benchmark (or None)


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
    reference_size: int = 0,
    sideband_check: bool = True,
    benchmark_check: bool = False,
    progress: bool = False,
    provenance: dict[str, Any] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> CFMStage:
    """Sideband p(mjj) fit, generator training, SR background samples and quality checks; writes the files.

    ``config`` chooses the generator: a :class:`~gbi_zfit.models.flowgen.GeneratorConfig` trains the flow
    generator (saved to ``models/generator``), a :class:`~gbi_zfit.models.cfm.CFMConfig` the CFM
    (``models/cfm``). Besides the training sample (``factor`` × the predicted SR count) an independent
    κ reference of ``reference_size`` events is written to ``data/sr_reference.npz`` (0: none).

    Seeds: ``spawn_seeds(seed, 6)`` → (closure split, training, SR sample, sideband check, benchmark check,
    κ reference).
    """
    import numpy as np

    from .._util import atomic_write_text
    from ..data.io import write_events
    from ..data.mjj import fit_sidebands
    from ..data.regions import DEFAULT_SR
    from ..models.cfm import train_cfm
    from ..models.flowgen import FlowGenerator, GeneratorConfig
    from ..parallel import spawn_seeds

    if not (np.isfinite(factor) and factor > 0):
        raise InputError(f"--factor must be > 0, got {factor}")
    if reference_size < 0:
        raise InputError(f"--reference-size must be ≥ 0, got {reference_size}")
    is_flow = isinstance(config, GeneratorConfig)
    dirs = out_dirs(out)
    s_split, s_train, s_sample, s_check_sb, s_check_bm, s_reference = spawn_seeds(seed, 6)

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
    what = (
        f"the flow generator ({config.describe()})"
        if is_flow
        else f"the CFM ({config.width} wide × {config.n_blocks} blocks, ≤ {config.epochs} epochs)"
    )
    print(
        f"training {what} on "
        f"{len(train) if config.max_events is None else min(len(train), config.max_events)} of "
        f"{len(sb)} sideband events" + (f" ({n_hold} held out for the closure check)" if n_hold else "")
    )
    if is_flow:
        generator = FlowGenerator.train_sidebands(train, config, seed=s_train, progress=progress)
    else:
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

    reference_record = None
    if reference_size:
        t0 = time.perf_counter()
        reference_path = dirs["data"] / SR_REFERENCE_FILE
        reference_record = write_reference(generator, mjj_fit, reference_size, s_reference, reference_path)
        kind = (
            f"importance-weighted, tempered flows T = {reference_record['temperatures']}"
            if reference_record.get("temperatures")
            else "unweighted"
        )
        print(
            f"κ reference sample: {reference_record['n']} events ({kind}; independent of the training sample), "
            f"{time.perf_counter() - t0:.0f} s -> {reference_path}"
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
        if is_flow:
            from ..models.fidelity import generator_normalisation

            t0 = time.perf_counter()
            stage.fidelity = generator_normalisation(generator, seed=s_check_bm.spawn(1)[0])
            print(f"  benchmark check, {stage.fidelity} ({time.perf_counter() - t0:.0f} s)")
    if stage.quality:
        record = {k: q.to_dict() for k, q in stage.quality.items()}
        if stage.fidelity is not None:
            record["benchmark_normalisation"] = stage.fidelity.to_dict()
        atomic_write_text(dirs["results"] / QUALITY_FILE, json.dumps(record, indent=2))

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
            "sr_reference": reference_record,
            "quality": {
                k: {"auc": q.auc, "auc_error": q.auc_error, "target_auc": q.target_auc}
                for k, q in stage.quality.items()
            },
            **(extra_metadata or {}),
        }
    )
    path = generator.save(dirs["models"] / generator_dir(config))
    print(f"saved the {'flow' if is_flow else 'CFM'} generator to {path}")
    return stage


def write_reference(generator, mjj_fit, n: int, seed, path: Path) -> dict[str, Any]:
    """Draw the κ reference, importance-weighted for a flow generator, and write it (npz with weights).

    Returns its record (path, digest, size, and for weighted samples the temperatures).
    """
    import numpy as np

    from ..data.io import save_npz

    if path.suffix != ".npz":
        raise InputError(f"the κ reference is written as .npz (it holds weights), not {path.name}")
    if hasattr(generator, "sample_sr_reference"):
        from ..models.flowgen import REFERENCE_TEMPERATURES

        sample, log_w = generator.sample_sr_reference(mjj_fit, n, seed=seed)
        events, weights = sample.to_events(), np.exp(log_w)
        extra = {"temperatures": list(REFERENCE_TEMPERATURES)}
    else:  # a CFM has no density: a plain sample
        events, weights, extra = generator.sample_sr_background(mjj_fit, n=n, seed=seed).to_events(), None, {}
    save_npz(events, path, weights=weights)
    return {"path": str(path.resolve()), "sha256": events_digest(events), "n": len(events), **extra}


def read_reference(path: Path, what: str = "--reference"):
    """(events, SR PAWS features, log-weights or None) of a κ reference (weights stored in its npz)."""
    import numpy as np

    from ..data.io import load_npz_weights
    from ..data.regions import DEFAULT_SR

    events, x = read_background_sample(path, what)
    weights = load_npz_weights(path) if path.suffix == ".npz" else None
    if weights is None:
        return events, x, None
    if not np.any(weights > 0):
        raise InputError(f"{what} {path}: all its weights are 0")
    with np.errstate(divide="ignore"):
        log_w = np.log(weights[DEFAULT_SR.contains(events.mjj)])  # the SR selection of read_background_sample
    return events, x, log_w


def generator_dir(config) -> str:
    """``models/`` subdirectory of a generator: ``generator`` (flow) or ``cfm``."""
    from ..models.flowgen import GeneratorConfig

    return "generator" if isinstance(config, GeneratorConfig) else "cfm"


def benchmark_normalisation(ensemble, out: Path, *, seed: int, progress: bool = False):
    """E_B,true[Λ(x | θ)] − 1 and the signal response μ̂/μ of a trained ensemble on the 50-GeV grid
    (synthetic benchmark only).

    Prints them and writes ``results/paws_normalisation.json`` and ``results/paws_response.json``; returns the
    :class:`~gbi_zfit.models.fidelity.NormalisationCheck`.
    """
    from .._util import atomic_write_text
    from ..models.fidelity import ratio_normalisation, ratio_response

    t0 = time.perf_counter()
    check = ratio_normalisation(ensemble, seed=seed, progress=progress)
    path = out_dirs(out)["results"] / "paws_normalisation.json"
    atomic_write_text(path, json.dumps(check.to_dict(), indent=2))
    print(f"benchmark check, {check} ({time.perf_counter() - t0:.0f} s) -> {path}")
    t0 = time.perf_counter()
    response = ratio_response(ensemble, n_background=50_000, n_signal=10_000, seed=seed, progress=progress)
    path = out_dirs(out)["results"] / "paws_response.json"
    atomic_write_text(path, json.dumps(response.to_dict(), indent=2))
    print(f"benchmark check, {response} ({time.perf_counter() - t0:.0f} s) -> {path}")
    return check


def run_paws(
    background,
    out: Path,
    config,
    *,
    seed: int,
    reference=None,
    reference_log_weights=None,
    executor=None,
    progress: bool = False,
    provenance: dict[str, Any] | None = None,
    extra_metadata: dict[str, Any] | None = None,
):
    """Train the classifier ensemble on ``background`` (n, 6) and save it to ``out/models/paws``.

    ``reference`` (m, 6): an independent background sample for the sampled κ(θ) (default: events held
    out of ``background``), with optional importance ``reference_log_weights`` (m,).
    """
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
            background,
            config,
            seed=seed,
            kappa_reference=reference,
            kappa_reference_log_weights=reference_log_weights,
            executor=executor,
            progress=progress,
            store=store,
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


def generator_config(kind: str, preset: str, epochs: int | None = None):
    """The settings of a ``kind`` ("flow" or "cfm") generator for a preset (``epochs`` overrides)."""
    from ..models.cfm import CFMConfig
    from ..models.flowgen import GeneratorConfig

    overrides = {} if epochs is None else {"epochs": epochs}
    if kind == "flow":
        return GeneratorConfig.preset(preset, **overrides)
    if kind == "cfm":
        return CFMConfig.preset(preset, **overrides)
    raise InputError(f"--generator must be 'flow' or 'cfm', got {kind!r}")


def cmd_train_generator(args: argparse.Namespace) -> int:
    _positive(args.epochs, "--epochs")
    if args.reference_size is not None and args.reference_size < 0:
        raise InputError(f"--reference-size must be ≥ 0, got {args.reference_size}")
    data = Path(args.path)
    read_kwargs = read_options(args, data)
    quiet_tf()
    config = generator_config(args.generator, args.preset, args.epochs)
    reference_size = REFERENCE_SIZES[args.preset] if args.reference_size is None else args.reference_size
    events = read_data(args, data)
    out = Path(args.out)
    t0 = time.perf_counter()
    stage = run_cfm(
        events,
        out,
        config,
        seed=args.seed,
        factor=args.factor,
        reference_size=reference_size,
        benchmark_check=args.check_benchmark,
        progress=progress_enabled(args),
        provenance={"path": str(data.resolve()), "sha256": events_digest(events), "n": len(events)},
    )
    step = f"train {args.model}"
    write_manifest(
        out,
        {
            "command": " ".join(sys.argv),
            "step": step,
            "generator": args.generator,
            "input": str(data),
            **read_kwargs,
            "preset": args.preset,
            "config": config.to_dict(),
            "seed": args.seed,
            "reference_size": reference_size,
            "quality": {k: q.auc for k, q in stage.quality.items()},
        },
    )
    print(f"{step} finished in {time.perf_counter() - t0:.0f} s")
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
    reference_path = Path(args.reference) if args.reference else background_path.with_name(SR_REFERENCE_FILE)
    reference = reference_log_w = None
    if args.reference or reference_path.exists():
        ref_events, reference, reference_log_w = read_reference(reference_path)
        if events_digest(ref_events) == events_digest(events):
            raise InputError(
                f"--reference {reference_path} is the training sample itself; κ needs an independent "
                "sample (data/sr_reference.npz of `gbi train generator`)"
            )
        weighted = "" if reference_log_w is None else " (importance-weighted)"
        print(f"κ reference: {len(reference)} events from {reference_path}{weighted}")
    out = Path(args.out)
    t0 = time.perf_counter()
    use_dask = bool(args.dask or args.scheduler or args.workers is not None)
    provenance = {
        "path": str(background_path.resolve()),
        "sha256": events_digest(events),
        "n_sr": len(background),
        "kappa_reference": None if reference is None else str(reference_path.resolve()),
    }
    with make_executor(dask=use_dask, scheduler=args.scheduler, n_workers=args.workers) as executor:
        ensemble = run_paws(
            background,
            out,
            config,
            seed=args.seed,
            reference=reference,
            reference_log_weights=reference_log_w,
            executor=executor if use_dask else None,
            progress=progress_enabled(args),
            provenance=provenance,
        )
    if args.check_benchmark:
        benchmark_normalisation(ensemble, out, seed=args.seed, progress=progress_enabled(args))
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
    events,
    out: Path,
    *,
    seed: int,
    data_path: Path,
    data_digest: str,
    progress: bool,
    generator: str = "flow",
    preset: str = "quick",
) -> LearnedModels:
    """Generator + PAWS ensemble (``preset``) for ``events``, reusing ``out/models/`` when compatible.

    A cached generator is reused when it was trained on the same data (SHA-256 of the events) with the
    same seed and settings; a cached ensemble when it was trained on the same SR background sample
    (SHA-256) with the same seed and settings. Missing or modified samples of a reused generator are
    drawn again (same seeds).
    """
    import numpy as np

    from ..data.io import read_events, write_events
    from ..data.mjj import MjjFitResult
    from ..models.cfm import CFMGenerator
    from ..models.classifier import ClassifierConfig, ClassifierEnsemble
    from ..models.flowgen import FlowGenerator
    from ..parallel import spawn_seeds

    dirs = out_dirs(out)
    # training seeds: children of SeedSequence([seed, 1]), independent of the data generation's SeedSequence(seed)
    s_gen, s_paws = (int(s.generate_state(1)[0]) for s in spawn_seeds(np.random.SeedSequence([seed, 1]), 2))
    gen_config, paws_config = generator_config(generator, preset), ClassifierConfig.preset(preset)
    reference_size = REFERENCE_SIZES[preset]
    sample_path = dirs["data"] / SR_BACKGROUND_FILE
    reference_path = dirs["data"] / SR_REFERENCE_FILE
    t0 = time.perf_counter()
    reused = {"generator": False, "paws": False}

    gen_key = _jsonable(
        {
            "data_sha256": data_digest,
            "seed": s_gen,
            "factor": 3.0,
            "reference_size": reference_size,
            "config": gen_config.to_dict(),
        }
    )
    loader = FlowGenerator.load if generator == "flow" else CFMGenerator.load
    model = _cached(dirs["models"] / generator_dir(gen_config), gen_key, loader)
    if model is None:
        stage = run_cfm(
            events,
            out,
            gen_config,
            seed=s_gen,
            reference_size=reference_size,
            sideband_check=False,
            benchmark_check=True,
            progress=progress,
            provenance={"path": str(data_path.resolve()), "sha256": data_digest, "n": len(events)},
            extra_metadata={"demo_cache": gen_key},
        )
        model, background = stage.generator, stage.sample.features
        sample_digest = model.metadata["sr_background"]["sha256"]
    else:
        reused["generator"] = True
        seeds = spawn_seeds(s_gen, 6)  # as in run_cfm
        mjj_fit = MjjFitResult.from_dict(model.metadata["mjj_fit"])
        samples = {}
        for key, path in (("sr_background", sample_path), ("sr_reference", reference_path)):
            recorded = (model.metadata.get(key) or {}).get("sha256")
            sample = read_events(path) if path.exists() else None
            if sample is None or events_digest(sample) != recorded:
                print(f"reusing the generator in {out}; drawing {path.name} again")
                if key == "sr_reference":
                    write_reference(model, mjj_fit, reference_size, seeds[5], path)
                    sample = read_events(path)
                else:
                    sample = model.sample_sr_background(mjj_fit, seed=seeds[2], factor=3.0).to_events()
                    write_events(sample, path)
            samples[key] = sample
        print(f"reusing the generator and its SR samples in {out}")
        sample_digest = events_digest(samples["sr_background"])
        background = samples["sr_background"].features("paws")
    quality = dict(model.metadata.get("quality", {}))

    paws_key = _jsonable(
        {"background_sha256": sample_digest, "seed": s_paws, "config": paws_config.to_dict()}
    )
    ensemble = _cached(dirs["models"] / "paws", paws_key, ClassifierEnsemble.load)
    if ensemble is None:
        _, reference, reference_log_w = read_reference(reference_path, "κ reference")
        ensemble = run_paws(
            background,
            out,
            paws_config,
            seed=s_paws,
            reference=reference,
            reference_log_weights=reference_log_w,
            progress=progress,
            provenance={
                "path": str(sample_path.resolve()),
                "sha256": sample_digest,
                "n_sr": len(background),
                "kappa_reference": str(reference_path.resolve()),
            },
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
    add_progress_option(s)


def register(sub) -> None:
    """Add ``gbi train generator`` (and ``cfm``), ``gbi train paws`` and (from :mod:`.ranode`) ``gbi train flows``."""
    t = sub.add_parser(
        "train",
        help="train learned models (GBI-PAWS: generator, then paws)",
        description="Train learned models. GBI-PAWS: first `train generator`, then `train paws`.",
        epilog=(
            "example:\n"
            "  gbi train generator data.root --out run --quick --check-benchmark\n"
            "  gbi train paws --background run/data/sr_background.npz --out run --quick\n"
            "  gbi fit data.root --model run/models/paws --out run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tsub = t.add_subparsers(dest="model", required=True, metavar="MODEL")

    for name, kind in (("generator", "flow"), ("cfm", "cfm")):
        s = tsub.add_parser(
            name,
            help=(
                "sideband background generator (flow by default) and the SR background samples"
                if name == "generator"
                else "= train generator --generator cfm (the conditional flow-matching generator)"
            ),
            description=(
                "Fit p(mjj) in the sidebands, train the background generator p_B(x | mjj) on the sideband "
                "events and write the SR background sample (mjj from the fit, x from the generator) and an "
                "independent κ reference sample. Generators: 'flow' (conditional normalizing flows on "
                "jet-symmetrised features; the default of `train generator`) or 'cfm' (conditional flow "
                "matching). Quality: sideband closure on held-out sideband events, and with "
                "--check-benchmark the true SR background of the synthetic benchmark (C2ST and, for flows, "
                "E_gen[Λ*(x|θ)] − 1 per θ)."
            ),
            epilog=f"example: gbi train {name} data.root --out run --preset standard --check-benchmark",
        )
        s.add_argument("path", help="data file (.root, .h5, .npz); its sideband events train the generator")
        _common_options(s)
        s.add_argument(
            "--generator",
            choices=("flow", "cfm"),
            default=kind,
            help=f"generator model (default {kind})",
        )
        s.add_argument(
            "--factor",
            type=float,
            default=3.0,
            help="SR background sample size / predicted SR count (default 3)",
        )
        s.add_argument(
            "--reference-size",
            type=int,
            help=(
                "events of the independent κ reference sample data/sr_reference.npz (default by preset: "
                + ", ".join(f"{k} {v:,}" for k, v in REFERENCE_SIZES.items())
                + "; 0: none, κ then uses events held out of the training sample)"
            ),
        )
        s.add_argument(
            "--check-benchmark",
            action="store_true",
            help="also compare the SR sample with the true benchmark SR background (synthetic data only)",
        )
        add_read_options(s)
        s.set_defaults(func=cmd_train_generator)

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
        "--reference",
        help=(
            "independent SR background sample for the sampled κ(θ) (default: sr_reference.npz next to "
            "--background, if present; else events held out of --background)"
        ),
    )
    s.add_argument(
        "--check-benchmark",
        action="store_true",
        help="also measure E_B,true[Λ(x|θ)] − 1 on the 50-GeV grid (synthetic benchmark only)",
    )
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
