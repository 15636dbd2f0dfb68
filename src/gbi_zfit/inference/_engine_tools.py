"""Package-internal tools on a :class:`RatioNLL`: constrained minima, compiled Λ, exact Hessian.

Profile scans, Fisher information and discovery tests all need "the minimum of the fitter's NLL with
some parameters fixed and others bounded differently from the fitter's own limits" — many times, so
it must be cheap. These helpers run iminuit directly on the fitter's compiled engine (whatever the
fitter's backend) and take the engine's events/weights (``precomputed``, ``weights``) as graph inputs of
``RatioNLL.nll_tensor``, so one compiled function serves every engine of the same model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from iminuit import Minuit
from scipy.optimize import brentq

from .engine import RatioNLL

_MAX_LOG_RATIO = 600.0  # as gbi_zfit.pdf.ratio: exp() stays finite
_EDM_GOAL = 1e-4  # NLL units; tighter than a plain fit because 2ΔNLL differences are what matter
_DEFAULT_STEPS = {"mu": 1e-3, "mx": 5.0, "my": 5.0}


# ----------------------------------------------------------------------------------------------------
# compiled functions, traced once per ratio model and likelihood configuration
# ----------------------------------------------------------------------------------------------------
# Tracing the oracle's nested-tape Hessian costs seconds; engines of the same model and configuration
# (data, toys, Asimov references) build the same graph, so they share one function whose input
# signature accepts any number of events. Keyed weakly by the ratio model; the function reaches its
# engine through a weak reference (a "template": only its model and configuration matter, events and
# weights are arguments), so the cache keeps neither alive.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(engine: RatioNLL) -> tuple:
    # any event count and chunk size; a scalar (a chunked model's event count) stays a scalar
    return tuple(_any_length_spec(a) for a in engine.precomputed)


def _compiled(engine: RatioNLL, kind: str, build):
    key = (kind, engine.penalty, engine.extended, getattr(engine, "background_yield", None))
    per_model = _COMPILED.setdefault(engine.ratio_model, {})
    entry = per_model.get(key)
    if entry is None or entry[0]() is None:
        entry = (weakref.ref(engine), build(weakref.ref(engine)))
        per_model[key] = entry
    return entry[1]


def engine_weights(engine: RatioNLL) -> np.ndarray:
    """The engine's current per-event weights."""
    return engine.weights.numpy()


def log_ratio(engine: RatioNLL, mx: float, my: float) -> np.ndarray:
    """Per-event log Λ(x | θ) of the engine's events: :meth:`RatioNLL.log_ratio`, compiled (~4× faster)."""
    engine.ratio_model.check_theta(mx, my)

    def build(template):
        scalar = tf.TensorSpec([], tf.float64)

        @tf.function(input_signature=[_signature(engine), scalar, scalar])
        def fn(aux, mx, my):
            return template().ratio_model.log_ratio_precomputed(aux, mx, my)

        return fn

    fn = _compiled(engine, "log_ratio", build)
    return fn(
        engine.precomputed, tf.constant(float(mx), tf.float64), tf.constant(float(my), tf.float64)
    ).numpy()


def hessian(engine: RatioNLL, params) -> np.ndarray:
    """Exact Hessian of the engine's NLL at ``params`` (all parameters, engine order)."""

    def build(template):
        k = len(engine.param_names)
        sig = [tf.TensorSpec([k], tf.float64), _signature(engine), tf.TensorSpec([None], tf.float64)]

        @tf.function(input_signature=sig)
        def fn(p, aux, w):
            with tf.GradientTape() as outer:
                outer.watch(p)
                with tf.GradientTape() as inner:
                    inner.watch(p)
                    value = template().nll_tensor(p, aux, w)
                grad = inner.gradient(value, p)
            return outer.jacobian(grad, p, experimental_use_pfor=False)

        return fn

    fn = _compiled(engine, "hessian", build)
    h = fn(tf.constant(np.asarray(params, np.float64)), engine.precomputed, engine.weights).numpy()
    return 0.5 * (h + h.T)


def penalty_value(engine: RatioNLL, mx: float, my: float) -> float:
    """The engine's low-mass penalty at θ (the formula of ``RatioNLL.nll_tensor``)."""
    if engine.penalty is None:
        return 0.0
    thr, scale, strength = engine.penalty
    d = np.maximum((thr - np.array([mx, my], float)) / scale, 0.0)
    return float(strength * np.sum(np.expm1(d) - d))


# ----------------------------------------------------------------------------------------------------
# constrained minimisation
# ----------------------------------------------------------------------------------------------------
@dataclass
class Minimum:
    """Result of :func:`constrained_minimum`."""

    nll: float
    values: dict[str, float]
    valid: bool


class _CachedNLL:
    """Value and gradient from one engine call: Minuit asks for both at the same point."""

    def __init__(self, engine: RatioNLL):
        self.engine = engine
        self._key: bytes | None = None
        self._cache: tuple[float, np.ndarray] | None = None

    def _eval(self, p) -> tuple[float, np.ndarray]:
        key = np.asarray(p, np.float64).tobytes()
        if key != self._key:
            self._cache, self._key = self.engine.value_and_grad(p), key
        return self._cache

    def __call__(self, p) -> float:
        return self._eval(p)[0]

    def grad(self, p) -> np.ndarray:
        return self._eval(p)[1]


def _nudge_inside(value: float, lo: float, hi: float, step: float) -> float:
    """Start values must lie strictly inside the limits (Minuit's transform is flat on a limit)."""
    delta = min(1e-3 * (hi - lo), 0.1 * step)
    return float(min(max(value, lo + delta), hi - delta))


def _minimum_in_mu(engine: RatioNLL, values: dict[str, float], mu_limits) -> Minimum:
    """Exact min over μ at fixed θ: ∂NLL/∂μ = −Σ w a/(1 + μ a), a = Λ − 1, increases (the NLL is convex)."""
    a = np.expm1(np.minimum(log_ratio(engine, values["mx"], values["my"]), _MAX_LOG_RATIO))
    w = engine_weights(engine)
    lo, hi = mu_limits
    # keep 1 + μ a > 0 for every event (matters only for negative μ, or μ > 1)
    a_max, a_min = float(a.max()), float(a.min())
    if a_max > 0:
        lo = max(lo, -(1 - 1e-12) / a_max)
    if a_min < 0:
        hi = min(hi, -(1 - 1e-12) / a_min)

    def dnll(mu: float) -> float:
        return float(-np.sum(w * a / (1.0 + mu * a)))

    if dnll(lo) >= 0:
        mu = lo
    elif dnll(hi) <= 0:
        mu = hi
    else:
        mu = brentq(dnll, lo, hi, xtol=1e-14, rtol=1e-12)
    nll = float(-np.sum(w * np.log1p(mu * a))) + penalty_value(engine, values["mx"], values["my"])
    return Minimum(nll, dict(values, mu=float(mu)), bool(np.isfinite(nll)))


def constrained_minimum(
    engine: RatioNLL,
    base_limits: dict[str, tuple[float, float]],
    start: dict[str, float],
    fixed: dict[str, float],
    *,
    limits: dict[str, tuple[float, float]] | None = None,
    steps: dict[str, float] | None = None,
    retries: int = 2,
) -> Minimum:
    """Minimum of the NLL with ``fixed`` parameters held and the others floating within limits.

    Parameters
    ----------
    engine : RatioNLL
    base_limits : dict
        Limits of every parameter (a fitter's ``limits``); ``limits`` overrides some of them.
    start : dict
        Starting values of all parameters not in ``fixed`` (moved strictly inside their limits).
    fixed : dict
        Parameters held constant.
    steps : dict, optional
        Initial step sizes (e.g. HESSE errors).
    retries : int
        MIGRAD reruns of an invalid minimum (with strategy 1, then 2).
    """
    names = engine.param_names
    lim = {**base_limits, **(limits or {})}
    vals = {**start, **fixed}
    if fixed.get("mu") == 0.0:
        # θ is unidentified at μ = 0: the NLL is the penalty alone, minimal (0) for any θ at or above its
        # threshold. MIGRAD on that flat function reports an invalid minimum, so place θ there directly.
        thr = engine.penalty[0] if engine.penalty is not None else -np.inf
        fixed = dict(fixed)
        for n in ("mx", "my"):
            if n not in fixed:
                fixed[n] = vals[n] = float(np.clip(max(vals[n], thr), *lim[n]))
    floating = [n for n in names if n not in fixed]
    if not floating:
        nll = engine([vals[n] for n in names])
        return Minimum(nll, vals, bool(np.isfinite(nll)))
    if floating == ["mu"] and not engine.extended:
        return _minimum_in_mu(engine, vals, lim["mu"])
    step = {**_DEFAULT_STEPS, **(steps or {})}
    if engine.extended:
        step.setdefault("nu_b", engine.background_yield[1])
    for n in floating:
        vals[n] = _nudge_inside(vals[n], *lim[n], step[n])
    fcn = _CachedNLL(engine)
    m = Minuit(fcn, [vals[n] for n in names], grad=fcn.grad, name=names)
    m.errordef = Minuit.LIKELIHOOD
    m.tol = _EDM_GOAL / (0.002 * Minuit.LIKELIHOOD)  # iminuit stops at EDM < 0.002 · tol · errordef
    for n in names:
        m.limits[n] = lim[n]
        m.fixed[n] = n in fixed
        if n in floating:
            m.errors[n] = min(step[n], 0.1 * (lim[n][1] - lim[n][0]))
    # Strategy 0 (no numerical second derivatives: the gradient is exact) needs ~3× fewer calls than
    # the default and gives the same minima on profile points; an invalid minimum is retried with 1, 2.
    m.strategy = 0
    m.migrad()
    for attempt in range(retries):
        if m.valid:
            break
        m.strategy = min(2, attempt + 1)
        m.migrad()
    return Minimum(float(m.fval), {n: float(m.values[n]) for n in names}, bool(m.valid))


def _any_length_spec(a: tf.Tensor) -> tf.TensorSpec:
    """Spec of a precomputed tensor for any number of events: only the feature (last) axis is fixed.

    Scalars stay scalars, e.g. the event count of :class:`~gbi_zfit.models.ClassifierEnsemble`'s
    chunked events ``(chunks (m, c, d), n)``, whose chunk size c also depends on the event count.
    """
    if a.shape.rank <= 1:  # a scalar, or one value per event
        return tf.TensorSpec([None] * a.shape.rank, a.dtype)
    return tf.TensorSpec([None] * (a.shape.rank - 1) + [a.shape[-1]], a.dtype)
