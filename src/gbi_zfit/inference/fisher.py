"""Fisher information of the GBI likelihood: observed and expected (Asimov) errors, discovery q0.

* **Observed** information: the Hessian of the data NLL at the best fit — what Minuit's HESSE computes
  (numerically) and what :attr:`FitResult.errors` report; :func:`observed_fisher` gives it from the
  HESSE covariance or exactly (nested automatic differentiation).
* **Expected** information I(θ̂) = N E[−∂² log p]: the Hessian of the NLL of the *Asimov* data set of
  the fitted model. Because the model is a density relative to the SR background p_B, that data set is
  the background reference sample weighted by μ̂ Λ(x | θ̂) + 1 − μ̂, normalised to N events
  (:func:`expected_fisher`). Its errors are the ones a typical experiment would quote at the fitted
  point; observed and expected errors agree when the model is right and the sample is large.
* **Discovery** test statistic q0 = 2 [NLL(μ = 0) − NLL_min] and Z = √q0 (:func:`discovery_q0`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..data.events import Events
from ..errors import InputError
from ._engine_tools import constrained_minimum, hessian, log_ratio
from .engine import RatioNLL
from .fit import FitResult, SignalFitter

__all__ = ["Discovery", "FisherInfo", "discovery_q0", "expected_fisher", "nll_hessian", "observed_fisher"]

_MAX_LOG_RATIO = 600.0  # as gbi_zfit.pdf.ratio


# ----------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class FisherInfo:
    """An information matrix and the covariance / errors it implies.

    Unpacks as ``information, covariance, errors = fisher_info``.

    Attributes
    ----------
    kind : str
        ``"observed (HESSE)"``, ``"observed (exact Hessian)"`` or ``"expected (Asimov)"``.
    names : tuple of str
        Parameter order of the matrices.
    information, covariance : ndarray (k, k)
        Information matrix and its inverse (NaN if the information is not positive definite, e.g. θ
        unidentified at μ̂ = 0).
    values : dict
        Parameter values where it was evaluated.
    n_events : float
        Number of (weighted) events of the likelihood.
    """

    kind: str
    names: tuple[str, ...]
    information: np.ndarray
    covariance: np.ndarray
    values: dict[str, float]
    n_events: float = math.nan
    info: dict = field(default_factory=dict)

    @property
    def errors(self) -> dict[str, float]:
        """√diag(covariance) by parameter name."""
        return {
            n: float(np.sqrt(c)) if c >= 0 else math.nan
            for n, c in zip(self.names, np.diag(self.covariance), strict=True)
        }

    @property
    def positive_definite(self) -> bool:
        return bool(np.all(np.isfinite(self.covariance)))

    @property
    def correlation(self) -> np.ndarray:
        s = np.sqrt(np.abs(np.diag(self.covariance)))
        return self.covariance / np.outer(s, s)

    def __iter__(self) -> Iterator:
        return iter((self.information, self.covariance, self.errors))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "names": list(self.names),
            "information": _matrix_to_lists(self.information),
            "covariance": _matrix_to_lists(self.covariance),
            "values": dict(self.values),
            "n_events": self.n_events,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FisherInfo:
        d = dict(d)
        d.update(
            names=tuple(d["names"]),
            information=_lists_to_matrix(d["information"]),
            covariance=_lists_to_matrix(d["covariance"]),
        )
        return cls(**d)

    def __str__(self) -> str:
        lines = [
            f"FisherInfo, {self.kind}, {self.n_events:.0f} events"
            + ("" if self.positive_definite else " — NOT positive definite")
        ]
        errs = self.errors
        for n in self.names:
            fmt = (lambda v: f"{v:.4g}") if n in ("mu", "nu_b") else (lambda v: f"{v:.2f}")
            lines.append(f"  {n:<6}{fmt(self.values.get(n, math.nan)):>12}  ± {fmt(errs[n])}")
        if "signal_effective_events" in self.info:
            lines.append(
                f"  (Asimov signal carried by {self.info['signal_effective_events']:.0f} effective "
                f"reference events of {self.info['reference_events']})"
            )
        return "\n".join(lines)


def _matrix_to_lists(a: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if np.isfinite(v) else None for v in row] for row in np.asarray(a, float)]


def _lists_to_matrix(rows) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], float)


def _covariance(information: np.ndarray) -> np.ndarray:
    """Inverse of a positive-definite information matrix; NaN otherwise (an unidentified direction)."""
    try:
        chol = np.linalg.cholesky(information)
    except np.linalg.LinAlgError:
        return np.full_like(information, np.nan)
    inv = np.linalg.inv(chol)
    return inv.T @ inv


# ----------------------------------------------------------------------------------------------------
# exact Hessian of an engine's NLL
# ----------------------------------------------------------------------------------------------------
def nll_hessian(
    engine: RatioNLL, values: dict[str, float], names: tuple[str, ...] | None = None
) -> np.ndarray:
    """Exact Hessian ∂²NLL/∂p_a ∂p_b of a :class:`RatioNLL` (nested automatic differentiation).

    Parameters
    ----------
    engine : RatioNLL
        The likelihood (its current events and weights).
    values : dict
        All parameter values (``engine.param_names``).
    names : tuple of str, optional
        Rows/columns to return (default all parameters).
    """
    names = tuple(names or engine.param_names)
    missing = [n for n in (*engine.param_names, *names) if n not in values]
    unknown = [n for n in names if n not in engine.param_names]
    if missing or unknown:
        raise InputError(f"need values of {engine.param_names}; missing {missing}, unknown {unknown}")
    h = hessian(engine, [float(values[n]) for n in engine.param_names])
    idx = [engine.param_names.index(n) for n in names]
    return h[np.ix_(idx, idx)]


# ----------------------------------------------------------------------------------------------------
def observed_fisher(fitter: SignalFitter, result: FitResult, *, method: str = "hesse") -> FisherInfo:
    """Observed information at a fit result, for its floating parameters.

    Parameters
    ----------
    fitter : SignalFitter
        The fitter that produced ``result`` (needed for ``method="exact"``).
    result : FitResult
        A fit; ``method="hesse"`` needs its HESSE covariance (``fit(..., hesse=True)``).
    method : {"hesse", "exact"}
        ``"hesse"``: Minuit's numerical covariance (:attr:`FitResult.covariance`, the errors the fit
        reports); ``"exact"``: inverse of the exact Hessian of the data NLL at ``result.values``.
    """
    names = tuple(result.floating)
    if method == "hesse":
        if result.covariance is None:
            raise InputError("the fit has no HESSE covariance; fit with hesse=True or use method='exact'")
        cov = np.asarray(result.covariance, float)
        try:
            information = np.linalg.inv(cov)
        except np.linalg.LinAlgError:
            information = np.full_like(cov, np.nan)
        kind = "observed (HESSE)"
    elif method == "exact":
        information = nll_hessian(fitter.engine, {**fitter.values, **result.values}, names)
        cov = _covariance(information)
        kind = "observed (exact Hessian)"
    else:
        raise InputError(f"method must be 'hesse' or 'exact', got {method!r}")
    return FisherInfo(kind, names, information, cov, dict(result.values), float(fitter.engine.sum_weights))


def _features(fitter: SignalFitter, events: Events | np.ndarray) -> np.ndarray:
    fs = fitter.ratio_model.feature_set
    x = events.features(fs) if isinstance(events, Events) else np.asarray(events, np.float64)
    if x.ndim != 2 or x.shape[1] != fs.dim:
        raise InputError(f"events must have shape (n, {fs.dim}) in the {fs.name} features; got {x.shape}")
    return x


def _reference_engine(fitter: SignalFitter, reference, signal) -> RatioNLL:
    if isinstance(reference, RatioNLL):
        if signal is not None:
            raise InputError("with signal=, pass the reference as events, not as a RatioNLL")
        if reference.param_names != fitter.param_names or reference.penalty != fitter.engine.penalty:
            raise InputError("the reference engine must have the fitter's parameters and penalty")
        return reference
    x = _features(fitter, reference)
    if signal is not None:
        x = np.concatenate([x, _features(fitter, signal)])
    penalty = fitter.engine.penalty or (None, 10.0, 1.0)
    return RatioNLL(
        fitter.ratio_model,
        x,
        penalty_threshold=penalty[0],
        penalty_scale=penalty[1],
        penalty_strength=penalty[2],
        background_yield=fitter.engine.background_yield if fitter.engine.extended else None,
    )


def expected_fisher(
    fitter: SignalFitter,
    reference: Events | np.ndarray | RatioNLL,
    values: FitResult | dict[str, float],
    n_expected: float | None = None,
    *,
    names: tuple[str, ...] | None = None,
    signal: Events | np.ndarray | None = None,
) -> FisherInfo:
    """Expected (Asimov) Fisher information of the fitted model at ``values``.

    The Asimov data set of the model μ Λ(x | θ) + 1 − μ (relative to p_B) is the SR background
    reference sample with weights w_i = (μ Λ(x_i | θ) + 1 − μ) · N / Σ_j (μ Λ(x_j | θ) + 1 − μ); the
    information is the exact Hessian of the weighted NLL at ``values`` (same penalty and, if used,
    extended terms as the fitter), I = N E[−∂² log p].

    The signal part of that Asimov set is carried by the few reference events with large Λ: its Kish
    effective size (Σ Λ)² / Σ Λ², ``info["signal_effective_events"]``, is only ~300 for 100k reference
    events at θ = (300, 150) on the benchmark, and the expected errors of θ are then noisy at the tens
    of per cent level (μ is fine). Use a larger reference (≳ 300k), or pass ``signal``.

    Parameters
    ----------
    fitter : SignalFitter
        Defines the model (ratio model, penalty, extended term) and the default N.
    reference : Events, ndarray (n_ref, d) or RatioNLL
        SR background sample (e.g. ``sim.sample_background_sr``; for learned models the generated
        background). Pass a :class:`RatioNLL` built on it to reuse its per-event precomputation across
        calls (its weights are overwritten).
    values : FitResult or dict
        Parameter values (μ̂, mX̂, mŶ); a FitResult also sets ``names`` to its floating parameters.
    n_expected : float, optional
        Events of the Asimov set (default: the fitter's weighted event count).
    names : tuple of str, optional
        Parameters of the information matrix (default: all, or the FitResult's floating ones).
    signal : Events or ndarray, optional
        Events drawn from p_S(x | θ) *at the θ of* ``values`` (e.g. ``sim.sample_signal(n, mx, my,
        region="sr")`` on the benchmark). The Asimov set is then the explicit mixture: reference with
        total weight (1 − μ) N plus signal with total weight μ N — the same expectation without the
        reweighting noise.

    Returns
    -------
    FisherInfo
        Unpacks as ``(information, covariance, errors)``.
    """
    if isinstance(values, FitResult):
        names = names or tuple(values.floating)
        values = values.values
    vals = {**fitter.values, **values}
    names = tuple(names or fitter.param_names)
    n = float(fitter.engine.sum_weights if n_expected is None else n_expected)
    if not (np.isfinite(n) and n > 0):
        raise InputError(f"n_expected must be a positive number, got {n_expected}")
    mu = float(vals["mu"])
    engine = _reference_engine(fitter, reference, signal)
    if signal is None:
        engine.set_weights(None)
        lam = np.exp(np.minimum(log_ratio(engine, vals["mx"], vals["my"]), _MAX_LOG_RATIO))
        density = 1.0 + mu * (lam - 1.0)  # μ Λ + 1 − μ
        if not np.all(density > 0):
            raise InputError(f"μ Λ + 1 − μ ≤ 0 for some reference events at μ = {mu}")
        weights = density * (n / density.sum())
        info = {
            "asimov": "reweighted reference",
            "reference_events": int(engine.n_events),
            "signal_effective_events": float(lam.sum() ** 2 / np.sum(lam**2)),
        }
    else:
        if not 0.0 <= mu <= 1.0:
            raise InputError(f"an explicit signal mixture needs 0 ≤ μ ≤ 1, got μ = {mu}")
        n_sig = len(_features(fitter, signal))
        n_ref = engine.n_events - n_sig
        weights = np.concatenate([np.full(n_ref, (1 - mu) * n / n_ref), np.full(n_sig, mu * n / n_sig)])
        info = {"asimov": "reference + signal mixture", "reference_events": n_ref, "signal_events": n_sig}
    engine.set_weights(weights)
    information = nll_hessian(engine, vals, names)
    return FisherInfo(
        "expected (Asimov)",
        names,
        information,
        _covariance(information),
        {k: float(v) for k, v in vals.items()},
        n,
        info=info,
    )


# ----------------------------------------------------------------------------------------------------
@dataclass
class Discovery:
    """Discovery test statistic q0 = 2 [NLL(μ = 0) − NLL_min] and Z = √q0; unpacks as ``(q0, Z)``.

    ``local_theta`` is the θ at which the significance is local: the fixed θ given to
    :func:`discovery_q0`, or the best-fit θ̂ when θ floated (then Z ignores the look-elsewhere effect).
    """

    q0: float
    Z: float
    mu_hat: float
    nll_null: float
    nll_min: float
    local_theta: tuple[float, float]
    theta_floating: bool

    def __iter__(self) -> Iterator[float]:
        return iter((self.q0, self.Z))

    def to_dict(self) -> dict:
        return {**self.__dict__, "local_theta": list(self.local_theta)}

    @classmethod
    def from_dict(cls, d: dict) -> Discovery:
        return cls(**{**d, "local_theta": tuple(d["local_theta"])})

    def __str__(self) -> str:
        where = (
            f"θ floating, θ̂ = ({self.local_theta[0]:.1f}, {self.local_theta[1]:.1f}): LOCAL significance, "
            "no look-elsewhere correction"
            if self.theta_floating
            else f"θ fixed at ({self.local_theta[0]:.1f}, {self.local_theta[1]:.1f})"
        )
        return f"Discovery: q0 = {self.q0:.3f}, Z = {self.Z:.2f} σ (μ̂ = {self.mu_hat:.4g}; {where})"


def discovery_q0(
    fitter: SignalFitter, best: FitResult | None, *, theta: tuple[float, float] | None = None
) -> Discovery:
    """Discovery test statistic q0 = 2 [NLL(μ = 0) − NLL_min] and its asymptotic Z = √q0.

    Parameters
    ----------
    fitter : SignalFitter
        The fitter holding the data.
    best : FitResult or None
        The best fit with μ and θ floating. With ``theta`` it only provides a start (None: the
        fitter's current values).
    theta : (float, float), optional
        Fix θ = (mX, mY): NLL_min comes from a μ-only fit at that θ and Z is the local significance
        there (Wilks: q0 ~ ½χ²₁ + ½δ₀ under the background-only hypothesis).

    Notes
    -----
    At μ = 0 this likelihood is exactly the background: NLL = 0 plus the low-mass penalty of θ (zero
    above its threshold, 85 GeV by default), whatever θ is; NLL(μ = 0) is minimised over θ (and ν_B for
    the extended likelihood). With θ floating, q0 is the maximum over θ of the local q0: θ does not
    exist under the null, Wilks' theorem does not apply, and √q0 is the *local* significance at θ̂ — the
    global one is lower (look-elsewhere effect; toys or Gross–Vitells are needed). q0 = 0 when μ̂ ≤ 0.
    """
    if best is not None and not isinstance(best, FitResult):
        raise InputError(f"best must be a FitResult (or None), got {type(best).__name__}")
    engine = fitter.engine
    start = {**fitter.values, **(best.values if best is not None else {})}
    if theta is None:
        if best is None or not {"mu", "mx", "my"} <= set(best.floating):
            raise InputError("best must have mu, mx and my floating (or pass theta=(mx, my))")
        nll_min, vals = float(best.nll), start
        # any θ above the penalty threshold minimises NLL(μ = 0); keep θ̂ where it is already there
        thr = fitter.engine.penalty[0] if fitter.engine.penalty is not None else -math.inf
        null_theta = {n: max(vals[n], thr) for n in ("mx", "my")}
    else:
        mx, my = (float(t) for t in theta)
        fitter.ratio_model.check_theta(mx, my)
        fit = constrained_minimum(engine, fitter.limits, start, {"mx": mx, "my": my})
        nll_min, vals = fit.nll, fit.values
        null_theta = {"mx": mx, "my": my}
    null = constrained_minimum(engine, fitter.limits, vals, {"mu": 0.0, **null_theta})
    mu_hat = float(vals["mu"])
    q0 = max(0.0, 2.0 * (null.nll - nll_min)) if mu_hat > 0 else 0.0
    return Discovery(
        q0=q0,
        Z=math.sqrt(q0),
        mu_hat=mu_hat,
        nll_null=float(null.nll),
        nll_min=float(nll_min),
        local_theta=(float(vals["mx"]), float(vals["my"])),
        theta_floating=theta is None,
    )
