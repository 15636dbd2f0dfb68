"""Closure of learned GBI-PAWS against the oracle: μ̂, θ̂ and Z = √q0 versus S/√B (paper Fig. 1 and 2).

The learned chain of :mod:`benchmarks.quick_pipeline` (sideband p(mjj) fit → CFM → SR background sample
→ classifier ensemble) is trained ONCE, on an independent background-only data set, and cached in
``--models`` (trained on the first call, loaded afterwards). Then, for every mass point θ, injection
S/√B and data realisation, a benchmark data set (1M background events + signal,
:meth:`~gbi_zfit.data.benchmark.LHCOSim.make_dataset`) is fitted on its SR events twice — with the
learned ensemble (κ mode ``--kappa``, default ``"sampled"``) and with the exact oracle ratio — by the
same fit: by default the blind multi-start fit (:meth:`~gbi_zfit.inference.SignalFitter.fit_multistart`:
μ, mX, mY floating, HESSE errors); ``--start truth`` runs MIGRAD from the truth instead (as DESIGN §7; about
3× cheaper, and it separates the quality of the ratio from the multi-start's look-elsewhere failures).
Recorded per fit: μ̂, θ̂, HESSE errors, the local discovery significance Z = √q0 with θ floating (at θ̂)
and with θ fixed at the truth, and on the same SR events the Pearson correlation of log Λ learned vs
oracle at the true θ (all events, background only, signal only).

Why training once is a fair closure test. In the paper the models are trained per data set (the CFM on
that data set's sidebands). We train once, on a data set with no signal, to keep 60+ fits affordable on
2 CPU cores. The fits only use the SR events; what the models learn comes from the sidebands, where the
signal is negligible: at the largest injection here (S/√B = 3, n_S,SR ≈ 1030) about 230 signal events
leak into ≈ 882k sideband background events (2.6e-4; almost all of it within 300 GeV of the SR, where it
is 9e-4 of the 248k background events), far below what a quick CFM can resolve. A per-data-set training would therefore learn the same background up to its training
noise — which this study does not sample (one model, not one per realisation), so the spread of the
learned results below is a lower bound of the paper's.

Every data realisation r uses the same background (and signal stream) for all θ and S/√B, as the paper
varies the injected signal on fixed background; realisations differ in both. Each finished data set is
appended to ``--store`` (resumable: rerun the same command); ``--dask`` runs them on a Dask cluster.

    python benchmarks/sensitivity.py --models /tmp/sens_models --store /tmp/sens.jsonl \\
        --realisations 5 --out benchmarks/results [--dask --workers 2] [--start truth] [--n-background N]
    python benchmarks/sensitivity.py --summarize-only --store /tmp/sens.jsonl --out benchmarks/results

The committed result (``benchmarks/results/sensitivity.json``) used the default presets (quick CFM,
``standard`` classifier), ``--n-background 30000 --realisations 5``; ``sensitivity_quick.json`` the
``quick`` classifier. ``--n-background`` sets the background events of the fitted data sets (default 1M, ≈ 118k in the SR);
S/√B keeps its meaning at any size (n_S = S/√B · √N_B,SR), μ scales as 1/√N_B,SR. The models are
always trained on ``--train-n-background`` events (default 1M).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from gbi_zfit._util import atomic_write_text
from gbi_zfit.errors import ConfigError, InputError
from gbi_zfit.parallel import ResultStore, make_executor, run_tasks, spawn_seeds

log = logging.getLogger("sensitivity")

MASS_POINTS: tuple[tuple[float, float], ...] = ((300.0, 150.0), (425.0, 225.0))
S_OVER_SQRT_B: tuple[float, ...] = (0.1, 0.3, 0.5, 1.0, 2.0, 3.0)
METHODS = ("learned", "oracle")
_SCHEMA = "gbi_zfit.sensitivity/1"
_TRAINING_FILE = "training.json"


# --------------------------------------------------------------------------------------------------
# models: train once, then reuse


def train_or_load_models(
    models_dir: str | Path,
    *,
    cfm_preset: str = "quick",
    classifier_preset: str = "quick",
    seed: int = 1,
    n_background: int = 1_000_000,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the CFM and classifier ensemble on an independent background data set, or load them.

    The bundles are written to ``models_dir/cfm`` and ``models_dir/classifier`` with a
    ``training.json`` that records the settings; a later call with the same directory loads them
    (different settings raise :class:`~gbi_zfit.errors.ConfigError`).

    Parameters
    ----------
    models_dir
        Cache directory of the trained models.
    cfm_preset, classifier_preset
        :meth:`~gbi_zfit.models.cfm.CFMConfig.preset` / :meth:`~gbi_zfit.models.classifier.ClassifierConfig.preset`.
    seed
        Training seed (independent of the data realisations' seed).
    n_background
        Background events of the training data set (full mjj range).
    progress
        Show progress bars.

    Returns
    -------
    dict
        The training record (settings, timings, generator quality, fingerprint of the classifier bundle).
    """
    models_dir = Path(models_dir)
    settings = {
        "cfm_preset": cfm_preset,
        "classifier_preset": classifier_preset,
        "seed": int(seed),
        "n_background": int(n_background),
    }
    record_path = models_dir / _TRAINING_FILE
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("settings") != settings:
            raise ConfigError(
                f"{models_dir} holds models trained with {record.get('settings')}, not {settings}; "
                "pass another --models directory"
            )
        print(f"models: loaded from {models_dir} (trained in {record['train_time_s']:.0f} s)", flush=True)
        return record

    from gbi_zfit.data.benchmark import LHCOSim
    from gbi_zfit.data.mjj import fit_sidebands
    from gbi_zfit.models.cfm import CFMConfig, generator_quality, train_cfm
    from gbi_zfit.models.classifier import ClassifierConfig, train_classifier_ensemble

    t0 = time.perf_counter()
    sim = LHCOSim()
    s_data, s_cfm, s_gen, s_cls, s_q = spawn_seeds(np.random.SeedSequence([int(seed), 7]), 5)
    timings: dict[str, float] = {}

    def lap(name: str, start: float) -> float:
        timings[name] = time.perf_counter() - start
        print(f"[{name}] {timings[name]:.0f} s", flush=True)
        return time.perf_counter()

    t = time.perf_counter()
    data = sim.sample_background(n_background, seed=s_data)  # no signal: see the module docstring
    sb = sim.signal_region.sidebands(data)
    mjj_fit = fit_sidebands(data.mjj, sim.signal_region)
    t = lap("data + p(mjj) sideband fit", t)
    cfm = train_cfm(sb, CFMConfig.preset(cfm_preset), seed=s_cfm, progress=progress)
    t = lap("CFM training", t)
    gen = cfm.sample_sr_background(mjj_fit, factor=3.0, seed=s_gen)
    t = lap("SR background sample", t)
    truth = sim.sample_background_sr(30_000, seed=s_q).features("paws")
    quality = generator_quality(gen.features[:30_000], truth, seed=s_q)
    print(quality, flush=True)
    t = lap("generator quality", t)
    ensemble = train_classifier_ensemble(
        gen.features, ClassifierConfig.preset(classifier_preset), seed=s_cls, progress=progress
    )
    lap("classifier training", t)
    cfm.save(models_dir / "cfm")
    ensemble.save(models_dir / "classifier")
    record = {
        "settings": settings,
        "train_time_s": time.perf_counter() - t0,
        "timings_s": timings,
        "n_sr_predicted": float(mjj_fit.n_sr),
        "n_generated": len(gen.mjj),
        "generator_quality": quality.to_dict(),
        "kappa_surface_check_rms": ensemble.kappa_surface.check_rms,
        "kappa_surface_mc_error": ensemble.kappa_surface.mc_error,
    }
    atomic_write_text(record_path, json.dumps(record, indent=2, default=float))
    print(f"models: trained and saved to {models_dir} in {record['train_time_s']:.0f} s", flush=True)
    return record


def classifier_dir(models: str | Path) -> Path:
    """The classifier bundle: ``models/classifier`` (this study's cache) or ``models`` itself (e.g. the
    ``models/paws`` bundle of ``gbi train paws``)."""
    from gbi_zfit.models.persistence import SIDECAR_NAME

    models = Path(models)
    return models if (models / SIDECAR_NAME).is_file() else models / "classifier"


def _bundle_fingerprint(models_dir: Path) -> str:
    """SHA-256 of the classifier sidecar (it holds the members' checksums): identifies the model."""
    from gbi_zfit.models.persistence import SIDECAR_NAME

    return hashlib.sha256((classifier_dir(models_dir) / SIDECAR_NAME).read_bytes()).hexdigest()[:16]


def pretrained_record(bundle: Path) -> dict[str, Any]:
    """Training record of a classifier bundle trained elsewhere (``--paws-model``): its own metadata."""
    from gbi_zfit.errors import ModelFileError
    from gbi_zfit.models.classifier import ClassifierEnsemble

    if not bundle.is_dir():
        raise ModelFileError(f"--paws-model {bundle}: no such classifier bundle")
    ens = ClassifierEnsemble.load(bundle)
    meta = ens.metadata
    return {
        "settings": {"paws_model": str(bundle.resolve())},
        "train_time_s": float(meta.get("train_time_s", math.nan) or math.nan),
        "background": meta.get("background"),
        "kappa_surface_check_rms": ens.kappa_surface.check_rms if ens.kappa_surface else None,
        "kappa_surface_mc_error": ens.kappa_surface.mc_error if ens.kappa_surface else None,
    }


# --------------------------------------------------------------------------------------------------
# per-worker state and the task


class FitState:
    """Per-worker state: one fitter (one compiled NLL) per method, reused for every data set."""

    def __init__(
        self,
        models_dir: str,
        kappa: str,
        n_starts: int,
        n_background: int,
        penalty_threshold: float,
        start: str = "multistart",
    ):
        from gbi_zfit.data.benchmark import LHCOSim
        from gbi_zfit.inference import SignalFitter
        from gbi_zfit.models.classifier import ClassifierEnsemble
        from gbi_zfit.models.oracle import OracleRatio

        self.sim = LHCOSim()
        self.n_starts = int(n_starts)
        self.start = start
        self.n_background = int(n_background)
        ensemble = ClassifierEnsemble.load(classifier_dir(models_dir)).with_kappa(kappa)
        warm = self.sim.sample_background_sr(500, seed=0).features("paws")
        kw = {"penalty_threshold": penalty_threshold}
        self.fitters = {
            "learned": SignalFitter(ensemble, warm, **kw),
            "oracle": SignalFitter(OracleRatio(self.sim), warm, **kw),
        }
        for fitter in self.fitters.values():  # trace for two event counts: later data sets never retrace
            for k in (len(warm), len(warm) - 1):
                fitter.engine.set_data(warm[:k])
                fitter.engine.value_and_grad([0.01, 300.0, 150.0])
                fitter.engine([0.01, 300.0, 150.0])

    def fit(self, name: str, x: np.ndarray, truth: Mapping[str, float]):
        """Fit the SR events ``x`` with method ``name``: (FitResult, its discovery test at θ̂)."""
        from gbi_zfit.inference.fisher import discovery_q0

        fitter = self.fitters[name]
        fitter.engine.set_data(x)
        if self.start == "truth":
            res = fitter.fit(truth, hesse=True, truth=truth)
        else:
            res = fitter.fit_multistart(n_starts=self.n_starts, truth=truth)
        return res, discovery_q0(fitter, res)


def _build_state(
    models_dir: str, kappa: str, n_starts: int, n_background: int, penalty: float, start: str
) -> FitState:
    return FitState(models_dir, kappa, n_starts, n_background, penalty, start)


def _fit_summary(res, disc, disc_fixed) -> dict[str, Any]:
    return {
        "values": dict(res.values),
        "errors": dict(res.errors),
        "valid": bool(res.valid),
        "at_limit": bool(res.at_limit),
        "nll": float(res.nll),
        "z": float(disc.Z),
        "z_fixed_theta": float(disc_fixed.Z),
        "mu_fixed_theta": float(disc_fixed.mu_hat),
        "time_s": float(res.time_s),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def measure_dataset(state: FitState, item: Mapping[str, Any]) -> dict[str, Any]:
    """Generate one data set, fit its SR events with the learned ensemble and the oracle (pure-data result).

    A data set whose measurement raises is recorded as ``{"ok": False, "error": ...}``, never dropped.
    """
    from gbi_zfit.inference.fisher import discovery_q0

    t0 = time.perf_counter()
    mx, my, sosb = float(item["mx"]), float(item["my"]), float(item["s_over_sqrt_b"])
    out: dict[str, Any] = {k: item[k] for k in ("mx", "my", "s_over_sqrt_b", "realisation")}
    try:
        data = state.sim.make_dataset(
            s_over_sqrt_b=sosb, mx=mx, my=my, n_background=state.n_background, seed=item["seed"]
        )
        sr = state.sim.signal_region.signal_region(data)
        x, label = sr.features("paws"), np.asarray(sr.label, bool)
        n_s, n_b = int(label.sum()), int((~label).sum())
        mu_true = n_s / (n_s + n_b)
        truth = {"mu": mu_true, "mx": max(mx, my), "my": min(mx, my)}
        out.update(n_signal=n_s, n_background=n_b, mu_true=mu_true, ok=True)
        log_ratios = {}
        for name, fitter in state.fitters.items():
            res, disc = state.fit(name, x, truth)
            disc_fixed = discovery_q0(fitter, res, theta=(truth["mx"], truth["my"]))
            out[name] = _fit_summary(res, disc, disc_fixed)
            log_ratios[name] = fitter.engine.log_ratio(truth["mx"], truth["my"])
        a, b = log_ratios["learned"], log_ratios["oracle"]
        out["pearson"] = {
            "all": _pearson(a, b),
            "background": _pearson(a[~label], b[~label]),
            "signal": _pearson(a[label], b[label]),
        }
    except Exception as exc:  # noqa: BLE001 -- record, do not drop: a failure is a result of the study
        log.warning("data set %s failed: %r", item.get("index"), exc)
        out.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=4))
    out["time_s"] = time.perf_counter() - t0
    return out


def make_items(
    seed: int,
    n_realisations: int,
    mass_points: Sequence[tuple[float, float]] = MASS_POINTS,
    s_over_sqrt_b: Sequence[float] = S_OVER_SQRT_B,
) -> list[dict[str, Any]]:
    """Task list, realisation outermost: raising ``n_realisations`` keeps the earlier tasks' indices."""
    seeds = spawn_seeds(np.random.SeedSequence([int(seed), 11]), n_realisations)
    items = []
    for r, ss in enumerate(seeds):
        for mx, my in mass_points:
            for s in s_over_sqrt_b:
                items.append(
                    {
                        "index": len(items),
                        "realisation": r,
                        "mx": float(mx),
                        "my": float(my),
                        "s_over_sqrt_b": float(s),
                        "seed": ss,
                    }
                )
    return items


# --------------------------------------------------------------------------------------------------
# aggregation


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    """Median and 16/84 % quantiles of the finite values (NaN if none), and their count."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return {"median": math.nan, "q16": math.nan, "q84": math.nan, "n": 0}
    q16, med, q84 = np.quantile(a, [0.16, 0.5, 0.84])
    return {"median": float(med), "q16": float(q16), "q84": float(q84), "n": len(a)}


def _pull(fit: Mapping[str, Any], mu_true: float) -> float:
    """(μ̂ − μ_true) / σ_HESSE (NaN without a positive error)."""
    err = fit["errors"].get("mu")
    return (fit["values"]["mu"] - mu_true) / err if err and err > 0 else math.nan


def _width(values: Sequence[float]) -> float:
    """Half the 16–84 % range of the finite values (a robust standard deviation; NaN if < 3)."""
    a = np.asarray(values, np.float64)
    a = a[np.isfinite(a)]
    return float(0.5 * np.diff(np.quantile(a, [0.16, 0.84]))[0]) if len(a) >= 3 else math.nan


def null_calibration(
    rows: Sequence[Mapping[str, Any]], *, margin: float = 0.5, z_max: float = 4.0
) -> list[dict]:
    """The background-only rows (S/√B = 0) against issue 13's null targets.

    Passed when median Z_learned ≤ median Z_oracle + ``margin`` and no data set has Z_learned > ``z_max``.
    """
    out = []
    for r in rows:
        if r["s_over_sqrt_b"] != 0:
            continue
        zl, zo = r["learned"]["z"]["median"], r["oracle"]["z"]["median"]
        out.append(
            {
                "mx": r["mx"],
                "my": r["my"],
                "n": r["n_datasets"] - r["n_failed"],
                "median_z_learned": zl,
                "median_z_oracle": zo,
                "max_z_learned": r["learned"]["z_max"],
                "max_z_oracle": r["oracle"]["z_max"],
                "passed": bool(zl <= zo + margin and r["learned"]["z_max"] <= z_max),
            }
        )
    return out


def summarize(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate per (θ, S/√B): medians with 16–84 % bands of μ̂/μ_true, μ̂, θ̂, Z, and Z ratios.

    Parameters
    ----------
    records
        Results of :func:`measure_dataset` (failed ones, ``ok`` False, are counted and skipped).

    Returns
    -------
    list of dict
        One row per (mx, my, s_over_sqrt_b), sorted. Per method (``"learned"``, ``"oracle"``):
        ``mu_hat``, ``mu_ratio`` (μ̂/μ_true), ``mx``, ``my``, ``err_mu`` (HESSE), ``z`` (θ floating),
        ``z_fixed`` (θ = truth) as quantile dicts and ``valid_fraction``. Also ``mu_true``,
        ``z_ratio`` (median Z learned / median Z oracle), ``z_ratio_fixed`` (same, θ fixed),
        ``z_ratio_paired`` (quantiles of the per-data-set ratio, where the oracle Z > 0) and
        ``pearson`` (quantiles of the correlations ``all``, ``background``, ``signal``).
    """
    groups: dict[tuple[float, float, float], list[Mapping[str, Any]]] = {}
    for r in records:
        key = (float(r["mx"]), float(r["my"]), float(r["s_over_sqrt_b"]))
        groups.setdefault(key, []).append(r)
    rows = []
    for (mx, my, sosb), recs in sorted(groups.items()):
        ok = [r for r in recs if r.get("ok")]
        row: dict[str, Any] = {
            "mx": mx,
            "my": my,
            "s_over_sqrt_b": sosb,
            "n_datasets": len(recs),
            "n_failed": len(recs) - len(ok),
            "mu_true": _quantiles([r["mu_true"] for r in ok]),
        }
        for m in METHODS:
            fits = [r[m] for r in ok]
            pulls = [_pull(f, r["mu_true"]) for f, r in zip(fits, ok, strict=True)]
            row[m] = {
                "mu_hat": _quantiles([f["values"]["mu"] for f in fits]),
                "mu_ratio": _quantiles(
                    [
                        f["values"]["mu"] / r["mu_true"] if r["mu_true"] > 0 else math.nan
                        for f, r in zip(fits, ok, strict=True)
                    ]
                ),
                "pull": _quantiles(pulls),
                "pull_width": _width(pulls),
                "mx": _quantiles([f["values"]["mx"] for f in fits]),
                "my": _quantiles([f["values"]["my"] for f in fits]),
                "err_mu": _quantiles([f["errors"].get("mu") for f in fits]),
                "z": _quantiles([f["z"] for f in fits]),
                "z_max": float(max((f["z"] for f in fits), default=math.nan)),
                "z_fixed": _quantiles([f["z_fixed_theta"] for f in fits]),
                "valid_fraction": float(np.mean([f["valid"] for f in fits])) if fits else math.nan,
            }
        zl, zo = row["learned"]["z"]["median"], row["oracle"]["z"]["median"]
        row["z_ratio"] = zl / zo if zo > 0 else math.nan
        zlf, zof = row["learned"]["z_fixed"]["median"], row["oracle"]["z_fixed"]["median"]
        row["z_ratio_fixed"] = zlf / zof if zof > 0 else math.nan
        row["z_ratio_paired"] = _quantiles(
            [r["learned"]["z"] / r["oracle"]["z"] for r in ok if r["oracle"]["z"] > 0]
        )
        row["pearson"] = {
            k: _quantiles([r["pearson"][k] for r in ok]) for k in ("all", "background", "signal")
        }
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The summary as a fixed-width text table (one line per θ and S/√B)."""

    def band(q: Mapping[str, float], fmt: str = "{:.2f}") -> str:
        return f"{fmt.format(q['median'])} [{fmt.format(q['q16'])}, {fmt.format(q['q84'])}]"

    head = (
        f"{'θ':>11} {'S/√B':>5} {'n':>3} {'μ_true':>8} | {'μ̂/μ learned':>20} {'μ̂/μ oracle':>20} | "
        f"{'Z lrn':>6} {'Z orc':>6} {'ratio':>6} {'Zθ ratio':>8} | {'m̂X lrn':>7} {'m̂Y lrn':>7} "
        f"{'m̂X orc':>7} {'m̂Y orc':>7} | {'ρ all':>6} {'ρ sig':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lrn, orc = r["learned"], r["oracle"]
        lines.append(
            f"({r['mx']:>4.0f},{r['my']:>4.0f}) {r['s_over_sqrt_b']:>5g} {r['n_datasets'] - r['n_failed']:>3d} "
            f"{r['mu_true']['median']:>8.2e} | {band(lrn['mu_ratio']):>20} {band(orc['mu_ratio']):>20} | "
            f"{lrn['z']['median']:>6.2f} {orc['z']['median']:>6.2f} {r['z_ratio']:>6.2f} "
            f"{r['z_ratio_fixed']:>8.2f} | {lrn['mx']['median']:>7.0f} {lrn['my']['median']:>7.0f} "
            f"{orc['mx']['median']:>7.0f} {orc['my']['median']:>7.0f} | "
            f"{r['pearson']['all']['median']:>6.3f} {r['pearson']['signal']['median']:>6.3f}"
        )
    return "\n".join(lines)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf → None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("sensitivity_models"), help="model cache directory")
    ap.add_argument(
        "--paws-model",
        type=Path,
        default=None,
        help="use this trained classifier bundle (e.g. RUN/models/paws of `gbi train paws`) instead of --models",
    )
    ap.add_argument("--cfm-preset", default="quick")
    ap.add_argument(
        "--classifier-preset", default="standard", help="standard (default; ≈ 11 min on 2 cores) or quick"
    )
    ap.add_argument("--train-seed", type=int, default=1)
    ap.add_argument("--seed", type=int, default=2, help="root seed of the data realisations")
    ap.add_argument("--realisations", type=int, default=5)
    ap.add_argument("--s-over-sqrt-b", type=float, nargs="+", default=list(S_OVER_SQRT_B))
    ap.add_argument(
        "--theta", type=float, nargs=2, action="append", metavar=("MX", "MY"), help="mass point (repeatable)"
    )
    ap.add_argument("--n-background", type=int, default=1_000_000, help="background events per data set")
    ap.add_argument("--kappa", choices=("sampled", "fixed"), default="sampled")
    ap.add_argument("--n-starts", type=int, default=2, help="multi-start fits per data set")
    ap.add_argument(
        "--start",
        choices=("multistart", "truth"),
        default="multistart",
        help="blind multi-start fit (default) or MIGRAD from the truth (cheaper; as DESIGN §7)",
    )
    ap.add_argument(
        "--train-n-background", type=int, default=1_000_000, help="background events of the training set"
    )
    ap.add_argument("--penalty-threshold", type=float, default=85.0)
    ap.add_argument("--dask", action="store_true", help="run on a Dask LocalCluster")
    ap.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    ap.add_argument("--workers", type=int, default=None, help="local Dask workers (default: one per core)")
    ap.add_argument("--store", type=Path, default=None, help="JSON Lines result store (default OUT/...)")
    ap.add_argument("--out", type=Path, default=Path("sensitivity_out"))
    ap.add_argument("--train-only", action="store_true", help="train (or check) the models and stop")
    ap.add_argument("--summarize-only", action="store_true", help="summarise --store, no fits")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.realisations < 1:
        raise InputError(f"--realisations must be ≥ 1, got {args.realisations}")
    mass_points = [tuple(t) for t in args.theta] if args.theta else list(MASS_POINTS)
    store_path = args.store or args.out / "sensitivity.jsonl"
    t0 = time.perf_counter()

    if args.summarize_only:
        store = ResultStore(store_path, read_only=True)  # safe while a run still appends
        config, training = store.header["config"], store.header["meta"].get("training", {})
        records = list(store.results().values())
    elif args.paws_model is not None:
        args.models = args.paws_model
        training = pretrained_record(args.paws_model)
    else:
        training = train_or_load_models(
            args.models,
            cfm_preset=args.cfm_preset,
            classifier_preset=args.classifier_preset,
            seed=args.train_seed,
            n_background=args.train_n_background,
            progress=not args.no_progress,
        )
    if not args.summarize_only:
        if args.train_only:
            return {"training": training}
        config = {
            "schema": _SCHEMA,
            "model": _bundle_fingerprint(args.models),
            "kappa": args.kappa,
            "n_starts": args.n_starts,
            "start": args.start,
            "penalty_threshold": args.penalty_threshold,
            "n_background": args.n_background,
            "mass_points": [list(p) for p in mass_points],
            "s_over_sqrt_b": list(args.s_over_sqrt_b),
            "seed": args.seed,
        }
        store = ResultStore(store_path, config, meta={"training": training})
        items = make_items(args.seed, args.realisations, mass_points, args.s_over_sqrt_b)
        factory = functools.partial(
            _build_state,
            str(args.models),
            args.kappa,
            args.n_starts,
            args.n_background,
            args.penalty_threshold,
            args.start,
        )
        print(f"{len(items)} data sets ({len(store)} already in {store_path})", flush=True)
        with make_executor(dask=args.dask, scheduler=args.scheduler, n_workers=args.workers) as ex:
            print(f"executor: {type(ex).__name__} with {ex.n_workers} worker(s)", flush=True)
            records = run_tasks(
                ex,
                factory,
                measure_dataset,
                items,
                store=store,
                desc="data sets",
                progress=not args.no_progress,
            )
    rows = summarize(records)
    result = {
        "schema": _SCHEMA,
        "config": config,
        "training": training,
        "n_datasets": len(records),
        "wall_time_s": time.perf_counter() - t0,
        "fit_time_s": {
            m: float(np.median([r[m]["time_s"] for r in records if r.get("ok")] or [math.nan]))
            for m in METHODS
        },
        "summary": rows,
        "null_calibration": null_calibration(rows),
        "records": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "sensitivity.json", json.dumps(_clean(result), indent=1))
    if not args.no_plots:
        from gbi_zfit.plotting.sensitivity import plot_mass_scatter, plot_mu_hat

        plot_mu_hat(rows, args.out / "sensitivity_fig1.png", records=records)
        plot_mass_scatter(records, args.out / "sensitivity_fig2.png")
    print(format_table(rows))
    for n in result["null_calibration"]:
        print(
            f"background only at ({n['mx']:g}, {n['my']:g}), {n['n']} data sets: median Z learned "
            f"{n['median_z_learned']:.2f} vs oracle {n['median_z_oracle']:.2f}, max learned {n['max_z_learned']:.2f} "
            f"(oracle {n['max_z_oracle']:.2f}): {'passed' if n['passed'] else 'FAILED'} (median ≤ oracle + 0.5, max ≤ 4)"
        )
    print(f"wall time {time.perf_counter() - t0:.0f} s; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
