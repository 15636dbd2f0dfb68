"""Pseudo-experiments: bootstrap replicas, Poisson toys from the fitted model, Asimov data, generator toys.

Every toy is *new events and/or new weights for one reused likelihood*: a
:class:`~gbi_zfit.inference.fit.SignalFitter` (and its compiled
:class:`~gbi_zfit.inference.engine.RatioNLL`) is built once per worker process and each toy only calls
``engine.set_weights`` (cheap) or ``engine.set_data`` (runs the model's θ-independent precomputation once).
Building a new zfit loss per toy would retrace the graph each time (slow, and it leaks memory).

Four kinds of pseudo-data:

* **Bootstrap** of the observed data — :func:`poisson_bootstrap_weights`: every event gets a Poisson(1)
  weight (the Poisson bootstrap; the replica's size fluctuates like a Poisson count). The expected
  replica log-likelihood is the data's, so the replica fits scatter around the data's best fit.
* **Poisson toys from the fitted model** — :func:`model_event_weights` and :func:`model_toy_counts`:
  N ~ Poisson(N_obs) events drawn with replacement from the SR background *reference* sample with
  probabilities ∝ μ̂ Λ(x | θ̂) + 1 − μ̂ (the only exact way to sample a density that is known relative to
  p_B, DESIGN §6). A toy is a vector of multinomial counts on the reference events, passed as weights to
  an engine built once on the reference.
* **Asimov** data — :func:`asimov_weights`, :func:`fit_asimov`: the reference sample weighted by the model,
  normalised to N. Its fit returns the generating parameters *exactly* when the likelihood is normalised
  on the same reference (``normalisation="reference"``, see :func:`fit_asimov`); its HESSE errors are the
  expected (Fisher) uncertainties.
* **Generator toys** of the oracle benchmark — :func:`oracle_toy_sample`: N_B ~ Poisson(N_B,exp) SR
  background events and n_S ~ Poisson(n_S,exp) SR signal events from the exact generator.

One pseudo-experiment is measured by :func:`measure_toy` (fit, HESSE, MINOS, Wilks statistics, pulls,
significance); :func:`run_toys` runs many of them on any executor of :mod:`gbi_zfit.parallel`, resumably,
with task ``i`` seeded by child ``i`` of ``SeedSequence(seed)`` (identical results for 1 or N workers).

A note on model toys and finite references. Toys resampled from a reference of finite size follow the
model *normalised on that reference*; fitted with the ordinary (analytically normalised) likelihood,
their estimates scatter around the **pseudo-truth** — the fit of the Asimov set of the same reference
(``normalisation="analytic"``) — not around (μ̂, θ̂). The difference is the Monte Carlo error of the
reference, ~ √(N / n_ref) standard deviations of a toy estimate; :class:`ToyConfig` toys of kind
``"model"`` therefore measure coverage at the pseudo-truth, and record both.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FitError, InputError, ParameterRangeError
from .fit import PARAM_NAMES, FitResult, SignalFitter

__all__ = [
    "TOY_KINDS",
    "ToyConfig",
    "ToyState",
    "asimov_weights",
    "bootstrap_fits",
    "build_toy_state",
    "fit_asimov",
    "measure_toy",
    "model_event_weights",
    "model_toy_counts",
    "oracle_toy_sample",
    "poisson_bootstrap_weights",
    "run_one_toy",
    "run_toys",
]

log = logging.getLogger(__name__)

#: Kinds of pseudo-experiments :func:`run_toys` generates.
TOY_KINDS = ("oracle", "bootstrap", "model")
_MAX_LOG_RATIO = 600.0  # as gbi_zfit.pdf.ratio: exp() stays finite
#: Default expected SR background of the benchmark (1M background events × P(SR | B)).
N_BACKGROUND_SR = 117_866.0


# ----------------------------------------------------------------------------------------------------
# generators: weights, counts, events
# ----------------------------------------------------------------------------------------------------
def poisson_bootstrap_weights(n: int, seed=None) -> np.ndarray:
    """Poisson(1) weights for ``n`` events: one Poisson-bootstrap replica (mean 1, variance 1).

    Pass them to ``engine.set_weights`` (no new precomputation). ``seed``: anything
    ``numpy.random.default_rng`` accepts (an int, a ``SeedSequence`` or a ``Generator``).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"number of events must be an integer >= 1, got {n!r}")
    return np.random.default_rng(seed).poisson(1.0, int(n)).astype(np.float64)


def _model_weights_from_log_ratio(log_ratio: np.ndarray, mu: float) -> np.ndarray:
    w = 1.0 + mu * np.expm1(np.minimum(log_ratio, _MAX_LOG_RATIO))
    if not np.isfinite(w).all():
        raise InputError("model weights are not finite; check the ratio model")
    negative = w < 0
    if negative.any():
        # only for μ < 0: μΛ + 1 − μ is not a density where Λ > 1 + 1/|μ|; toys use max(0, ·), renormalised
        log.warning(
            "the model density μΛ + 1 − μ is negative on %d of %d events at μ = %.4g (%.3g %% of the "
            "weight); toys and Asimov sets use it clipped at 0",
            int(negative.sum()),
            len(w),
            mu,
            100 * float(-w[negative].sum() / np.abs(w).sum()),
        )
    return np.clip(w, 0.0, None)


def model_event_weights(engine, mu: float, mx: float, my: float) -> np.ndarray:
    """μ Λ(x_i | θ) + 1 − μ on the engine's events: the model density relative to p_B (≥ 0).

    For μ < 0 the mixture is negative where Λ > 1 + 1/|μ|; those weights are set to 0 (the toys and
    Asimov sets then come from the clipped, renormalised density) and a warning says how many.

    With the engine built on an SR *background reference* sample these are the resampling weights of
    toys from the model (:func:`model_toy_counts`) and, normalised, the Asimov weights.
    """
    if not (np.isfinite(mu) and -1.0 < mu <= 1.0):
        raise ParameterRangeError(f"mu = {mu} must be finite and in (-1, 1]")
    return _model_weights_from_log_ratio(engine.log_ratio(float(mx), float(my)), float(mu))


def model_toy_counts(model_weights: np.ndarray, n_expected: float, seed=None) -> np.ndarray:
    """One Poisson toy from the model as multinomial counts on the reference events.

    N ~ Poisson(``n_expected``), then N draws with replacement with probabilities ∝ ``model_weights``
    (weighted resampling of the reference). Returns float counts for ``engine.set_weights``; they sum to N.
    """
    w = np.asarray(model_weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise InputError("model_weights must be a non-empty 1-d array of finite values ≥ 0, not all 0")
    if not (np.isfinite(n_expected) and n_expected >= 0):
        raise InputError(f"n_expected = {n_expected} must be finite and ≥ 0")
    rng = np.random.default_rng(seed)
    n = rng.poisson(float(n_expected))
    return rng.multinomial(n, w / w.sum()).astype(np.float64)


def asimov_weights(model_weights: np.ndarray, n: float) -> np.ndarray:
    """The unbinned Asimov data set: reference events weighted by the model, normalised to ``n`` events."""
    w = np.asarray(model_weights, dtype=np.float64)
    if w.ndim != 1 or len(w) == 0 or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise InputError("model_weights must be a non-empty 1-d array of finite values ≥ 0, not all 0")
    if not (isinstance(n, (int, float, np.integer, np.floating)) and np.isfinite(n) and n > 0):
        raise InputError(f"n = {n!r} must be a finite number > 0 (events of the Asimov set)")
    return float(n) * w / w.sum()


def oracle_toy_sample(
    sim,
    *,
    n_background: float,
    n_signal: float,
    mx: float,
    my: float,
    seed=None,
    feature_set: str = "paws",
) -> tuple[np.ndarray, int, int]:
    """One generator toy of the benchmark: SR events with Poisson-fluctuated background and signal counts.

    N_B ~ Poisson(``n_background``) background events with mjj in the SR (exact SR sampler) and
    n_S ~ Poisson(``n_signal``) signal events at θ = (mX, mY) with mjj in the SR.

    Returns
    -------
    (x, n_b, n_s)
        Features (``feature_set``) of the N_B + n_S events (background first), and the two counts.
    """
    from ..data.events import get_feature_set

    if not (np.isfinite(n_background) and n_background > 0 and np.isfinite(n_signal) and n_signal >= 0):
        raise InputError(
            f"expected counts must be finite, background > 0, signal ≥ 0; got {n_background}, {n_signal}"
        )
    fs = get_feature_set(feature_set)
    rng = np.random.default_rng(seed)
    n_b = max(1, int(rng.poisson(float(n_background))))
    n_s = int(rng.poisson(float(n_signal)))
    parts = [fs.extract(sim.sample_background_sr(n_b, seed=rng))]
    if n_s:
        parts.append(fs.extract(sim.sample_signal(n_s, mx, my, seed=rng, region="sr")))
    return np.concatenate(parts, axis=0), n_b, n_s


# ----------------------------------------------------------------------------------------------------
# in-process helpers for any fitter (e.g. a learned ratio model)
# ----------------------------------------------------------------------------------------------------
def bootstrap_fits(
    fitter: SignalFitter,
    n_replicas: int,
    seed=None,
    *,
    start: Mapping[str, float] | None = None,
    fix: tuple[str, ...] = (),
    hesse: bool = False,
    progress: bool = False,
) -> list[FitResult]:
    """Fit ``n_replicas`` Poisson-bootstrap replicas of the fitter's current events, in this process.

    Each replica is a ``set_weights`` on the fitter's engine (no new loss, no new precomputation); the
    engine's weights are restored afterwards. Replica ``i`` uses child ``i`` of ``SeedSequence(seed)``.
    ``start`` defaults to the fitter's current values (fit the data first). The spread of the replica
    estimates estimates the sampling spread of the data's estimates.
    """
    from tqdm import tqdm

    from ..parallel import spawn_seeds

    engine = fitter.engine
    start = dict(start or fitter.values)
    saved = engine.weights.numpy()  # restore exactly what the caller had
    out = []
    try:
        for s in tqdm(spawn_seeds(seed, n_replicas), disable=not progress, desc="bootstrap", unit="fit"):
            engine.set_weights(poisson_bootstrap_weights(engine.n_events, s))
            out.append(fitter.fit(_inside(fitter, start), fix=fix, hesse=hesse))
    finally:
        engine.set_weights(saved)
    return out


def _inside(fitter: SignalFitter, values: Mapping[str, float]) -> dict[str, float]:
    """Start values strictly inside the limits (Minuit cannot start on a limit)."""
    out = {}
    for name, v in values.items():
        lo, hi = fitter.limits[name]
        eps = 1e-6 * (hi - lo) if name == "mu" else 1e-3 * (hi - lo)
        out[name] = float(min(max(v, lo + eps), hi - eps))
    return out


class _ReferenceNorm:
    """mean_i (μ Λ(x_i | θ) + 1 − μ) over the engine's events (unweighted), and its gradient, compiled."""

    def __init__(self, engine):
        import tensorflow as tf

        self._tf = tf
        self.engine = engine
        self._fn = tf.function(self._value_and_grad, reduce_retracing=True)

    def _value_and_grad(self, p, aux):
        tf = self._tf
        with tf.GradientTape() as tape:
            tape.watch(p)
            lr = self.engine.ratio_model.log_ratio_precomputed(aux, p[1], p[2])
            s = tf.reduce_mean(1.0 + p[0] * tf.math.expm1(tf.minimum(lr, _MAX_LOG_RATIO)))
        return s, tape.gradient(s, p)

    def __call__(self, p) -> tuple[float, np.ndarray]:
        # the engine's cached θ-independent precomputation; not part of its public API
        s, g = self._fn(self._tf.constant(np.asarray(p, np.float64)), self.engine._aux)
        return float(s), g.numpy()


def fit_asimov(
    fitter: SignalFitter,
    truth: Mapping[str, float],
    n: float | None = None,
    *,
    normalisation: str = "reference",
    hesse: bool = True,
    tol: float = 1e-8,
    set_weights: bool = True,
) -> FitResult:
    """Fit the unbinned Asimov data set of ``truth`` built on the fitter's events (a background reference).

    The engine's weights are set to :func:`asimov_weights` (``n`` events, default the number of
    reference events) and μ, mX, mY are fitted from ``truth`` with a tight tolerance.

    Parameters
    ----------
    normalisation : {"reference", "analytic"}
        ``"reference"``: the likelihood is normalised on the reference itself,
        NLL = −Σ w_i log q_i + N log(mean_ref q), q = μΛ + 1 − μ; the Asimov set is then reproduced
        exactly (μ̂ = μ, θ̂ = θ to the minimiser's tolerance), whatever the reference size, and HESSE gives
        the expected (Fisher) errors of that model. ``"analytic"``: the ordinary likelihood (E_B[Λ] = 1
        assumed exact), as used for data and toys; its Asimov fit is shifted from ``truth`` by the
        reference's Monte Carlo error and is the pseudo-truth of model toys drawn from this reference.
    set_weights : bool
        Set the Asimov weights (default). ``False`` fits the engine's current weights (already Asimov).

    Returns
    -------
    FitResult
        With ``info["normalisation"]`` and, for ``"reference"``, the normalisation at the minimum.
    """
    from iminuit import Minuit

    if normalisation not in ("reference", "analytic"):
        raise InputError(f"normalisation must be 'reference' or 'analytic', got {normalisation!r}")
    engine = fitter.engine
    if engine.extended:
        raise InputError("fit_asimov supports the non-extended likelihood only")
    truth = {k: float(truth[k]) for k in PARAM_NAMES}
    if set_weights:
        q0 = model_event_weights(engine, truth["mu"], truth["mx"], truth["my"])
        engine.set_weights(asimov_weights(q0, engine.n_events if n is None else n))
    n_w = engine.sum_weights
    if normalisation == "analytic":
        fitter.tol, old_tol = tol, fitter.tol
        try:
            res = fitter.fit(_inside(fitter, truth), hesse=hesse, truth=truth)
        finally:
            fitter.tol = old_tol
        res.info["normalisation"] = "analytic"
        return res

    norm = _ReferenceNorm(engine)

    def value_and_grad(p):
        v, g = engine.value_and_grad(p)
        s, gs = norm(p)
        return v + n_w * math.log(s), g + n_w * gs / s

    cache: dict[tuple, tuple[float, np.ndarray]] = {}

    def f(p):
        key = tuple(np.asarray(p, float))
        if key not in cache:
            cache.clear()
            cache[key] = value_and_grad(p)
        return cache[key][0]

    def grad(p):
        f(p)
        return cache[tuple(np.asarray(p, float))][1]

    t0 = time.perf_counter()
    start = _inside(fitter, truth)
    m = Minuit(f, [start[k] for k in PARAM_NAMES], grad=grad, name=PARAM_NAMES)
    m.errordef = Minuit.LIKELIHOOD
    m.tol = tol / (0.002 * Minuit.LIKELIHOOD)
    for k in PARAM_NAMES:
        m.limits[k] = fitter.limits[k]
    m.migrad()
    for attempt in range(2):
        if m.valid:
            break
        m.strategy = 2 if attempt else m.strategy
        m.migrad()
    res = FitResult(
        values={k: float(m.values[k]) for k in PARAM_NAMES},
        valid=bool(m.valid),
        converged=bool(m.fmin.is_valid and not m.fmin.has_reached_call_limit),
        at_limit=bool(m.fmin.has_parameters_at_limit),
        nll=float(m.fval),
        edm=float(m.fmin.edm),
        truth=truth,
        n_events=int(engine.n_events),
        info={"normalisation": "reference"},
    )
    if hesse and m.valid:
        m.hesse()
        res.errors = {k: float(m.errors[k]) for k in PARAM_NAMES}
        res.covariance = np.asarray(m.covariance).tolist()
        res.valid = bool(m.valid and m.fmin.has_accurate_covar)
    res.n_calls = int(m.nfcn + m.ngrad)
    res.time_s = time.perf_counter() - t0
    res.info["mean_q"] = norm([res.values[k] for k in PARAM_NAMES])[0]
    if res.values["mx"] < res.values["my"]:  # report the canonical mirror image
        sw = {"mx": "my", "my": "mx"}
        res.values = {sw.get(k, k): v for k, v in res.values.items()}
        res.errors = {sw.get(k, k): v for k, v in res.errors.items()}
        if res.covariance is not None:
            res.covariance = np.asarray(res.covariance)[np.ix_([0, 2, 1], [0, 2, 1])].tolist()
    return res


# ----------------------------------------------------------------------------------------------------
# one pseudo-experiment
# ----------------------------------------------------------------------------------------------------
def _fit_summary(res: FitResult) -> dict[str, Any]:
    return {
        "values": dict(res.values),
        "errors": dict(res.errors),
        "minos": {k: list(v) for k, v in res.minos.items()},
        "valid": bool(res.valid),
        "at_limit": bool(res.at_limit),
        "nll": float(res.nll),
        "edm": float(res.edm),
        "n_calls": int(res.n_calls),
        "retries": int(res.info.get("retries", 0)),
    }


def _canonical_theta(mx: float, my: float) -> tuple[float, float]:
    return (mx, my) if mx >= my else (my, mx)


def measure_toy(fitter: SignalFitter, truth: Mapping[str, float], *, minos: bool = True) -> dict[str, Any]:
    """Measure one pseudo-experiment: whatever events and weights the fitter's engine holds now.

    Four fits, all from (or next to) the truth, as in DESIGN §7:

    1. μ, mX, mY floating, started at the truth, with HESSE and (``minos``) MINOS(μ): μ̂, θ̂, σ_HESSE;
    2. μ fixed at μ_true, θ profiled (started at θ̂): t_μ = 2 [NLL(μ_true, θ̂̂) − NLL_min];
    3. θ fixed at θ_true, μ profiled, with HESSE: t_θ = 2 [NLL(μ̂̂, θ_true) − NLL_min] and the θ-fixed
       μ pull (μ̂̂ − μ_true) / σ_HESSE(θ fixed);
    4. the background-only NLL, NLL(μ = 0) — exactly 0 here (no θ dependence but the penalty, which is 0
       above its threshold) — giving Z0 = √(2 [NLL(0) − NLL_min]).

    NLL_min is the lowest NLL of all fits (a profile fit that beats the global fit means the latter stopped
    in a local minimum; flagged as ``global_not_min``). θ is compared with the truth in the canonical
    order mX ≥ mY (the mirror image is the same point).

    Returns
    -------
    dict
        Pure data (JSON-ready): ``fit``, ``profile_mu``, ``fixed_theta`` summaries, ``t_mu``, ``t_theta``,
        ``pull``, ``pull_fixed``, ``z0``, ``z0_fixed``, ``minos_covers``, ``hesse_covers``,
        ``hesse_covers_fixed``, ``valid`` (all fits valid) and ``time_s``.
    """
    missing = [k for k in PARAM_NAMES if k not in truth]
    if missing:
        raise InputError(f"truth lacks {missing}; give the true values of {PARAM_NAMES}")
    t0 = time.perf_counter()
    engine = fitter.engine
    mx_t, my_t = _canonical_theta(float(truth["mx"]), float(truth["my"]))
    mu_t = float(truth["mu"])
    truth_c = {"mu": mu_t, "mx": mx_t, "my": my_t}

    full = fitter.fit(_inside(fitter, truth_c), hesse=True, minos=("mu",) if minos else (), truth=truth_c)
    mx_h, my_h = full.values["mx"], full.values["my"]
    prof_mu = fitter.fit(
        {"mu": mu_t, **_inside(fitter, {"mx": mx_h, "my": my_h})}, fix=("mu",), hesse=False, truth=truth_c
    )
    fixed = fitter.fit(_inside(fitter, truth_c), fix=("mx", "my"), hesse=True, truth=truth_c)
    nll0 = engine([0.0, mx_t, my_t] + [fitter.values[n] for n in fitter.param_names[3:]])
    nll_min = min(full.nll, prof_mu.nll, fixed.nll)
    global_not_min = bool(nll_min < full.nll - 1e-3)

    mu_h = full.values["mu"]
    sig = full.errors.get("mu", math.nan)
    sig_f = fixed.errors.get("mu", math.nan)
    mu_f = fixed.values["mu"]
    lo_hi = full.minos.get("mu")
    out: dict[str, Any] = {
        "ok": True,
        "n_events": int(engine.n_events),
        "sum_weights": float(engine.sum_weights),
        "truth": truth_c,
        "fit": _fit_summary(full),
        "profile_mu": {"nll": prof_mu.nll, "valid": prof_mu.valid, "values": dict(prof_mu.values)},
        "fixed_theta": {"mu": mu_f, "error": sig_f, "nll": fixed.nll, "valid": fixed.valid},
        "nll0": float(nll0),
        "nll_min": float(nll_min),
        "global_not_min": global_not_min,
        "t_mu": 2.0 * (prof_mu.nll - nll_min),
        "t_theta": 2.0 * (fixed.nll - nll_min),
        "pull": (mu_h - mu_t) / sig if sig > 0 else math.nan,
        "pull_fixed": (mu_f - mu_t) / sig_f if sig_f > 0 else math.nan,
        "z0": math.sqrt(max(0.0, 2.0 * (nll0 - nll_min))),
        "z0_fixed": math.sqrt(max(0.0, 2.0 * (nll0 - fixed.nll))),
        "minos_covers": (mu_h + lo_hi[0] <= mu_t <= mu_h + lo_hi[1]) if lo_hi else None,
        "hesse_covers": bool(abs(mu_h - mu_t) <= sig) if sig > 0 else None,
        "hesse_covers_fixed": bool(abs(mu_f - mu_t) <= sig_f) if sig_f > 0 else None,
        "valid": bool(full.valid and prof_mu.valid and fixed.valid and not math.isnan(sig)),
    }
    out["time_s"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------------------------------
# configuration, per-worker state, tasks
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    """What a toy run generates and measures (everything but the number of toys and the seed).

    The benchmark's generating point is set by ``s_over_sqrt_b``, ``mx``, ``my`` and the *expected* SR
    background ``n_background_sr``: n_S,exp = S/√B · √N_B,exp and μ_true = n_S,exp / (n_S,exp + N_B,exp).

    Parameters
    ----------
    s_over_sqrt_b : float
        Injected significance S/√B (expected counts).
    mx, my : float
        True signal masses θ in GeV.
    n_background_sr : float
        Expected number of SR background events (default 117,866 ≈ 1M background events × P(SR | B)).
    kind : {"oracle", "bootstrap", "model"}
        ``"oracle"``: exact generator toys (new events per toy, ``set_data``). ``"bootstrap"``: Poisson
        bootstrap of one observed data set (seed ``data_seed``); truth = its best fit. ``"model"``:
        Poisson toys resampled from a background reference of ``reference_factor`` · N_B,exp events with
        the model fitted to the observed data; truth = the pseudo-truth (see the module notes).
    minos_toys : int or None
        Run MINOS(μ) on toys with index < ``minos_toys`` only (``None``: on all toys; 0: never). MINOS is
        the most expensive step; its 68 % interval is the t_μ < 1 profile interval, which every toy has.
    data_seed : int
        Seed of the observed data set (``"bootstrap"``, ``"model"``); the reference uses a child of it.
    reference_factor : float
        ``"model"``: size of the background reference in units of N_B,exp.
    penalty, penalty_threshold : bool, float
        Low-mass penalty of the likelihood (DESIGN §1).
    mu_lower : float
        Lower limit of μ (default 0).
    tol : float
        Minuit EDM goal of the toy fits (NLL units).
    feature_set : str
        Features of the oracle ratio.
    model : str, optional
        Directory of a trained classifier ensemble (:class:`~gbi_zfit.models.classifier.ClassifierEnsemble`
        bundle): the toys are still drawn from the exact generator (or the data), but fitted with this
        learned ratio (on its θ table) instead of the oracle — the coverage of the learned fit.
    """

    s_over_sqrt_b: float = 1.0
    mx: float = 300.0
    my: float = 150.0
    n_background_sr: float = N_BACKGROUND_SR
    kind: str = "oracle"
    minos_toys: int | None = None
    data_seed: int = 0
    reference_factor: float = 4.0
    penalty: bool = True
    penalty_threshold: float = 85.0
    mu_lower: float = 0.0
    tol: float = 1e-3
    feature_set: str = "paws"
    model: str | None = None

    def __post_init__(self):
        if self.kind not in TOY_KINDS:
            raise InputError(f"kind must be one of {TOY_KINDS}, got {self.kind!r}")
        if not (math.isfinite(self.s_over_sqrt_b) and self.s_over_sqrt_b >= 0):
            raise InputError(f"s_over_sqrt_b = {self.s_over_sqrt_b} must be finite and ≥ 0")
        if not (math.isfinite(self.n_background_sr) and self.n_background_sr >= 1):
            raise InputError(f"n_background_sr = {self.n_background_sr} must be ≥ 1")
        if self.minos_toys is not None and self.minos_toys < 0:
            raise InputError(f"minos_toys must be None or ≥ 0, got {self.minos_toys}")
        if self.reference_factor <= 0:
            raise InputError(f"reference_factor must be > 0, got {self.reference_factor}")
        if not (-1.0 < self.mu_lower < 1.0):
            raise InputError(f"mu_lower = {self.mu_lower} must be in (-1, 1)")
        from ..data.benchmark import THETA_RANGE
        from ..data.events import get_feature_set

        get_feature_set(self.feature_set)  # InputError for an unknown name
        lo, hi = THETA_RANGE
        for name in ("mx", "my"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.integer, np.floating)) and lo <= value <= hi):
                raise ParameterRangeError(
                    f"{name} = {value!r} GeV is outside the benchmark's range [{lo}, {hi}] GeV"
                )
        if self.model is not None:
            if not isinstance(self.model, (str, os.PathLike)):
                raise InputError(f"model must be the path of a classifier bundle, got {self.model!r}")
            object.__setattr__(self, "model", str(self.model))
        if self.mx < self.my:  # canonical order; the mirror is the same point
            mx, my = self.my, self.mx
            object.__setattr__(self, "mx", mx)
            object.__setattr__(self, "my", my)

    @property
    def n_signal_sr(self) -> float:
        """Expected SR signal count n_S,exp = S/√B · √N_B,exp."""
        return self.s_over_sqrt_b * math.sqrt(self.n_background_sr)

    @property
    def mu_true(self) -> float:
        """The generating SR signal fraction n_S,exp / (n_S,exp + N_B,exp)."""
        return self.n_signal_sr / (self.n_signal_sr + self.n_background_sr)

    @property
    def truth(self) -> dict[str, float]:
        return {"mu": self.mu_true, "mx": float(self.mx), "my": float(self.my)}

    def minos_for(self, index: int) -> bool:
        return self.minos_toys is None or index < self.minos_toys

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["model"] is None:  # stores written before learned toys existed stay valid
            del d["model"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ToyConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown ToyConfig field(s) {sorted(unknown)}; fields are {sorted(names)}")
        return cls(**d)


@dataclass
class ToyState:
    """Per-worker state: one fitter (one compiled NLL) reused for every toy, and what the toys need."""

    config: ToyConfig
    fitter: SignalFitter
    sim: Any
    truth: dict[str, float]
    model_weights: np.ndarray | None = None
    n_expected: float | None = None
    info: dict = dataclasses.field(default_factory=dict)


def _warm_up(engine, x: np.ndarray) -> None:
    """Trace the compiled NLL for two event counts so that later toys of any size never retrace."""
    p = [0.01, 300.0, 150.0] + ([engine.background_yield[0]] if engine.extended else [])
    for k in (len(x), len(x) - 1):
        engine.set_data(x[:k])
        engine.value_and_grad(p)
        engine(p)


def build_toy_state(config: ToyConfig) -> ToyState:
    """Build the per-worker state of a toy run (the ``factory`` of :func:`gbi_zfit.parallel.run_tasks`).

    Deterministic: every worker builds the same state (same observed data, same data fit).
    """
    from ..data.benchmark import LHCOSim
    from ..models.oracle import OracleRatio

    sim = LHCOSim()
    oracle = OracleRatio(sim, feature_set=config.feature_set)
    ratio = oracle  # what the toys are fitted with
    if config.model is not None:
        from ..models.classifier import ClassifierEnsemble

        ratio = ClassifierEnsemble.load(config.model, feature_set=config.feature_set)
    truth = config.truth
    ss = np.random.SeedSequence(config.data_seed)
    data_ss, ref_ss, warm_ss = ss.spawn(3)
    info: dict[str, Any] = {}
    kw = {
        "mu_bounds": (config.mu_lower, 1.0),
        "penalty": config.penalty,
        "penalty_threshold": config.penalty_threshold,
        "tol": config.tol,
        # every toy fit starts at (or next to) the truth: no coarse θ table to find the basin first
        "table_steps": (6.25,),
    }
    if config.kind == "oracle":
        warm = oracle.feature_set.extract(sim.sample_background_sr(500, seed=warm_ss))
        fitter = SignalFitter(ratio, warm, **kw)
        _warm_up(fitter.engine, warm)
        return ToyState(config, fitter, sim, truth, info=info)

    x, n_b, n_s = oracle_toy_sample(
        sim,
        n_background=config.n_background_sr,
        n_signal=config.n_signal_sr,
        mx=config.mx,
        my=config.my,
        seed=data_ss,
        feature_set=config.feature_set,
    )
    fitter = SignalFitter(ratio, x, **kw)
    data_fit = fitter.fit(_inside(fitter, truth), hesse=True, truth=truth)
    if not data_fit.valid:
        raise FitError(f"the fit of the observed data set (data_seed={config.data_seed}) is not valid")
    fitted = {k: data_fit.values[k] for k in PARAM_NAMES}
    info.update(data_fit=_fit_summary(data_fit), n_b=n_b, n_s=n_s, generating_truth=truth)
    if config.kind == "bootstrap":
        return ToyState(config, fitter, sim, fitted, info=info)

    # model: engine on a background reference, toys = multinomial counts of the fitted model
    n_ref = max(1000, int(round(config.reference_factor * config.n_background_sr)))
    ref = oracle.feature_set.extract(sim.sample_background_sr(n_ref, seed=ref_ss))
    fitter.engine.set_data(ref)
    q0 = model_event_weights(fitter.engine, fitted["mu"], fitted["mx"], fitted["my"])
    n_obs = float(len(x))
    fitter.engine.set_weights(asimov_weights(q0, n_obs))
    pseudo = fit_asimov(fitter, fitted, normalisation="analytic", hesse=False, tol=1e-6, set_weights=False)
    pseudo_truth = {k: pseudo.values[k] for k in PARAM_NAMES}
    info.update(fitted_model=fitted, pseudo_truth=pseudo_truth, n_reference=n_ref)
    fitter.engine.set_weights(None)
    return ToyState(config, fitter, sim, pseudo_truth, model_weights=q0, n_expected=n_obs, info=info)


def _load_toy(state: ToyState, seed: np.random.SeedSequence) -> dict[str, Any]:
    """Put toy ``seed`` into the state's engine; returns what was drawn."""
    c = state.config
    engine = state.fitter.engine
    rng = np.random.default_rng(seed)
    if c.kind == "oracle":
        x, n_b, n_s = oracle_toy_sample(
            state.sim,
            n_background=c.n_background_sr,
            n_signal=c.n_signal_sr,
            mx=c.mx,
            my=c.my,
            seed=rng,
            feature_set=c.feature_set,
        )
        engine.set_data(x)
        return {"n_b": n_b, "n_s": n_s}
    if c.kind == "bootstrap":
        engine.set_weights(poisson_bootstrap_weights(engine.n_events, rng))
        return {}
    counts = model_toy_counts(state.model_weights, state.n_expected, rng)
    engine.set_weights(counts)
    return {"n_drawn": int(counts.sum()), "n_distinct": int(np.count_nonzero(counts))}


def run_one_toy(state: ToyState, seed: np.random.SeedSequence) -> dict[str, Any]:
    """The task of a toy run: draw toy ``seed`` into the shared fitter and measure it (pure-data result).

    A toy whose measurement raises is *recorded* as ``{"ok": False, "error": ...}``, never dropped.
    """
    index = int(seed.spawn_key[-1]) if seed.spawn_key else -1
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        drawn = _load_toy(state, seed)
        out = measure_toy(state.fitter, state.truth, minos=state.config.minos_for(index))
        out.update(drawn)
    except Exception as exc:  # noqa: BLE001 -- record, do not drop: a failure is a result of the study
        log.warning("toy %d failed: %r", index, exc)
        out = {
            "ok": False,
            "valid": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=4),
        }
    out["index"] = index
    out["time_total_s"] = time.perf_counter() - t0
    out["cpu_time_s"] = time.process_time() - c0  # CPU seconds of this process (all its threads)
    return out


def store_config(config: ToyConfig, seed: int) -> dict[str, Any]:
    """What identifies the results of a toy run in a :class:`~gbi_zfit.parallel.ResultStore`."""
    return {"schema": "gbi_zfit.toys/1", "toys": config.to_dict(), "seed": seed}


def run_toys(
    config: ToyConfig,
    n_toys: int,
    seed: int,
    executor=None,
    store_path: str | Path | None = None,
    *,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run ``n_toys`` pseudo-experiments of ``config`` on ``executor`` (default in-process).

    Task ``i`` draws from child ``i`` of ``SeedSequence(seed)``, so results do not depend on the executor,
    the number of workers or on interruptions: with ``store_path`` every finished toy is appended to a
    JSON Lines :class:`~gbi_zfit.parallel.ResultStore` and a rerun skips the toys already there (also when
    extending a run to more toys). The fitter is built once per worker (:func:`build_toy_state`).

    Returns
    -------
    list of dict
        One :func:`run_one_toy` result per toy, in toy order.
    """
    from ..parallel import ResultStore, SerialExecutor, run_tasks, spawn_seeds

    if not isinstance(config, ToyConfig):
        raise InputError(f"config must be a ToyConfig, got {type(config).__name__}")
    if n_toys < 1:
        raise InputError(f"n_toys must be >= 1, got {n_toys}")
    if not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an int (it is stored to make the run resumable), got {seed!r}")
    seed = int(seed)
    store = None
    if store_path is not None:
        store = ResultStore(store_path, config=store_config(config, seed))
    own = executor is None
    executor = executor or SerialExecutor()
    try:
        return run_tasks(
            executor,
            functools.partial(build_toy_state, config),
            run_one_toy,
            spawn_seeds(seed, n_toys),
            store=store,
            desc=f"toys ({config.kind}, S/√B={config.s_over_sqrt_b:g})",
            progress=progress,
        )
    finally:
        if own:
            executor.close()
