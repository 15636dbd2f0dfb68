"""Global significance: the look-elsewhere effect of the floating signal masses θ = (mX, mY).

The discovery test statistic of a fit with θ floating is

    q0 = 2 [NLL(μ = 0) − NLL(μ̂, θ̂)] = −2 NLL(μ̂, θ̂)     (0 when μ̂ ≤ 0),

since without signal the likelihood does not depend on θ (NLL(μ = 0) = 0: the constant Σ log p_B is
omitted and the low-mass penalty vanishes above its threshold). Z_local = √q0 is the significance *at*
θ̂: by Wilks/Chernoff, q0 at a fixed θ follows ½χ²₀ + ½χ²₁ under the background-only hypothesis. But θ̂
is the best of many places the fit could have looked, so under the background-only hypothesis the
maximum over θ is larger, and Z_local overstates the evidence. Wilks' theorem does not apply to the
maximum (θ is not identified at μ = 0), so its distribution comes from pseudo-experiments:

1. **Background-only toys of the fitted model.** At μ = 0 the model is p_B, of which the SR background
   *reference* sample is an iid sample. A toy is N ~ Poisson(N_obs) reference events drawn *without*
   replacement, as 0/1 weights on the reference events (:func:`background_toy_weights`): a uniformly
   random subset of an iid sample is itself an iid sample, so every toy is an exact background-only data
   set (for the oracle's benchmark reference exactly; for a learned model as exactly as its reference
   is p_B). A toy is never a bootstrap of the observed data (that would contain the signal it should
   not), and not a resampling *with* replacement either (the Poisson/multinomial model toys of
   :mod:`gbi_zfit.inference.toys`): duplicated events matter here, because the maximum over θ is often
   made by a handful of events in sparse corners of feature space, where Λ is huge — a copy of such an
   event nearly doubles its pull. With replacement, on the oracle with N = 5000 SR events, the toys'
   mean maximum q0 was 6.3 ± 0.4 even from a reference 16 times larger, against 4.7 ± 0.4 for new
   generator events (and for subsamples without replacement).
2. **Each toy is fitted blind**: μ, mX, mY free, with the multi-start of the data fit (same coarse θ
   grid, same probe μ, same number of starts; :meth:`~gbi_zfit.inference.fit.SignalFitter.fit_multistart`)
   *plus* starts at the best points of the exact profile likelihood on that grid
   (:class:`GridProfile`: μ profiled at every grid point, vectorised over the toy's weights), and its
   maximum local q0 is recorded (never below the grid's best profile value). The extra starts matter:
   the data fit's probe μ = 2/√N is sized for a real signal and, on background-only toys, whose best
   excess sits at a much smaller μ, it ranks the grid poorly — the plain multi-start missed the maximum
   of about one toy in six in the tests, which would make the toys' maxima too small and the global
   significance too high. With the extra starts the toys' statistic is at least the data procedure's,
   so the global p-value is valid and, if anything, conservative.
3. **One fitter for all toys.** A :class:`~gbi_zfit.inference.fit.SignalFitter` is built once per worker
   on the reference events: the model's θ-independent precomputation runs once and, for learned models,
   every θ-table node is computed once and reused by every toy (the table reads the weights live); each
   toy only calls ``engine.set_weights``. No new zfit loss per toy (new losses retrace and leak memory).

The global p-value with N toys of which k have q0 ≥ q0_obs is

    p = (1 + k) / (1 + N),

the Monte Carlo p-value of Davison & Hinkley (1997) / North et al. (2002): counting the observation
itself among the N + 1 equally likely outcomes under the null makes it *valid* (P(p ≤ α) ≤ α exactly,
for any N), never 0, and for k = 0 it is the natural bound p ≲ 1/N. The plain fraction k/N is unbiased
but is 0 whenever no toy exceeds the observation, which is not a p-value one can report; it is kept in
:attr:`GlobalSignificance.p_fraction`. The uncertainty is binomial, √(p (1 − p) / N); Z = Φ⁻¹(1 − p),
clipped at 0. With k = 0 the result is a bound (also given as the Clopper–Pearson 95 % upper limit
1 − 0.05^{1/N} ≈ 3/N), and the tail of the toy distribution is extrapolated by a fit of
P(q0 > u) ∝ P(χ²_ν > u) with the effective number of degrees of freedom ν free, to the toys above
their median (:func:`chi2_tail_extrapolation`): the survival function of the maximum of a χ² random
field falls as u^{(ν−2)/2} e^{−u/2} at large u (Gross & Vitells 2010; ν = 3 for a one-dof field over a
2-d θ domain), which the fit reproduces with the toys' own ν. It is an approximation, labelled as such.

A note on finite references. The reference must hold more events than a toy (n_ref ≥ N_obs +
5 √N_obs). Each toy is then exactly distributed, whatever n_ref, but two toys share on average a
fraction f = N_obs / n_ref of their events, so the toys are positively correlated and the binomial
error above underestimates the Monte Carlo uncertainty of p when f is not small; more toys do not help
beyond the information in the reference. :attr:`GlobalSignificance.info` records f (``"overlap"``); use
a reference several times larger than the data for a precise p-value.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from .._util import dump_json
from ..errors import FitError, InputError
from ..models.base import RatioModel
from .fit import FitResult, SignalFitter

__all__ = [
    "GlobalSignificance",
    "GridProfile",
    "LeeSpec",
    "LeeState",
    "background_toy_weights",
    "build_lee_state",
    "chi2_tail_extrapolation",
    "global_significance",
    "local_significance",
    "p_value_from_toys",
    "run_one_lee_toy",
    "summarize_lee_toys",
]

log = logging.getLogger(__name__)

SCHEMA = "gbi_zfit.lee/1"


# ----------------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------------
def local_significance(result: FitResult) -> tuple[float, float]:
    """(q0, Z_local) of a fit with μ, θ floating: q0 = −2 NLL_min for μ̂ > 0, else 0; Z = √q0.

    Valid for the ordinary (non-extended) likelihood of :class:`~gbi_zfit.inference.fit.SignalFitter`,
    whose background-only NLL is 0.

    Raises
    ------
    InputError
        ``result`` is not a :class:`~gbi_zfit.inference.fit.FitResult` or comes from the extended
        likelihood (its NLL(μ = 0) is not 0).
    FitError
        The fit has no finite NLL.
    """
    if not isinstance(result, FitResult):
        raise InputError(f"result must be a FitResult, got {type(result).__name__}")
    if "nu_b" in result.values:
        raise InputError(
            "local_significance needs the ordinary likelihood; the extended one (background_yield) has "
            "NLL(μ = 0) ≠ 0"
        )
    if not math.isfinite(result.nll):
        raise FitError(f"the fit has no finite NLL ({result.nll}); no significance can be computed")
    q0 = max(0.0, -2.0 * float(result.nll)) if result.values.get("mu", 0.0) > 0 else 0.0
    return q0, math.sqrt(q0)


def _z_of_p(p: float) -> float:
    """Φ⁻¹(1 − p), clipped at 0 (p ≥ 0.5 is no excess)."""
    return max(0.0, float(stats.norm.isf(p)))


def p_value_from_toys(toy_q0: Sequence[float], q0_obs: float) -> dict[str, Any]:
    """Global p-value of ``q0_obs`` from the toys' maximum q0 values.

    Parameters
    ----------
    toy_q0 : sequence of float
        Maximum local q0 of each background-only toy (finite, ≥ 0).
    q0_obs : float
        The observed local q0 (= Z_local²).

    Returns
    -------
    dict
        ``n`` (toys), ``k`` (toys with q0 ≥ q0_obs), ``p`` = (1 + k)/(1 + n) with its binomial error
        ``p_error`` = √(p (1 − p)/n), ``p_fraction`` = k/n, ``bound`` (k = 0: ``p`` is then the bound
        p ≲ 1/n) and ``p_upper_95``: the one-sided Clopper–Pearson 95 % upper limit of k/n.

    Raises
    ------
    InputError
        No toys, or a q0 that is negative or not finite.
    """
    q = np.asarray(toy_q0, dtype=np.float64).ravel()
    if q.size == 0:
        raise InputError("no toys: the global p-value needs at least one toy")
    if not np.isfinite(q).all() or (q < 0).any():
        raise InputError("toy q0 values must be finite and ≥ 0")
    if not (
        isinstance(q0_obs, (int, float, np.integer, np.floating)) and math.isfinite(q0_obs) and q0_obs >= 0
    ):
        raise InputError(f"q0_obs must be a finite number ≥ 0, got {q0_obs!r}")
    n, k = int(q.size), int(np.count_nonzero(q >= q0_obs))
    p = (1.0 + k) / (1.0 + n)
    upper = 1.0 if k == n else float(stats.beta.ppf(0.95, k + 1, n - k))
    return {
        "n": n,
        "k": k,
        "p": p,
        "p_error": math.sqrt(p * (1.0 - p) / n),
        "p_fraction": k / n,
        "bound": k == 0,
        "p_upper_95": upper,
    }


def chi2_tail_extrapolation(
    toy_q0: Sequence[float], q0_obs: float, *, threshold: float | None = None, min_tail: int = 5
) -> dict[str, Any] | None:
    """Extrapolate the toys' tail to ``q0_obs``: a maximum-likelihood χ²_ν fit of the toys above a threshold.

    The toys above ``threshold`` (default: their median) are fitted with the χ²_ν density truncated there
    (ν free, the e^{−u/2} fall-off of a χ² field fixed), and

        p ≈ (fraction of toys above the threshold) · P(χ²_ν > q0_obs) / P(χ²_ν > threshold).

    Returns
    -------
    dict or None
        ``method``, ``ndf`` ν̂ and its error (from the curvature of the log-likelihood), ``threshold``,
        ``n_tail``, ``p`` and ``z`` at ν̂, and ``p_range`` at ν̂ ± σ_ν. ``None`` with fewer than
        ``min_tail`` toys above the threshold or ``q0_obs`` not above it (nothing to extrapolate).
    """
    q = np.asarray(toy_q0, dtype=np.float64).ravel()
    q = q[np.isfinite(q)]
    if q.size < min_tail:
        return None
    u0 = float(np.median(q)) if threshold is None else float(threshold)
    u0 = max(u0, 1e-6)
    tail = q[q > u0]
    if tail.size < min_tail or not q0_obs > u0:
        return None
    frac = tail.size / q.size

    def nll(nu: float) -> float:
        return -float(np.sum(stats.chi2.logpdf(tail, nu)) - tail.size * stats.chi2.logsf(u0, nu))

    lo, hi = 0.05, 60.0
    fit = optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    nu = float(fit.x)
    h = 1e-3 * max(nu, 0.1)
    curv = (nll(nu + h) - 2 * nll(nu) + nll(max(nu - h, 1e-3))) / h**2
    err = 1.0 / math.sqrt(curv) if curv > 0 else math.nan

    def p_at(v: float) -> float:
        v = min(max(v, lo), hi)
        return float(frac * math.exp(stats.chi2.logsf(q0_obs, v) - stats.chi2.logsf(u0, v)))

    p = p_at(nu)
    p_range = sorted((p_at(nu - err), p_at(nu + err))) if math.isfinite(err) else [math.nan, math.nan]
    return {
        "method": "chi2_ndf_tail_fit",
        "ndf": nu,
        "ndf_error": err,
        "threshold": u0,
        "n_tail": int(tail.size),
        "p": p,
        "z": _z_of_p(p),
        "p_range": p_range,
        "at_limit": bool(nu < lo + 1e-3 or nu > hi - 1e-3),
    }


# ----------------------------------------------------------------------------------------------------
# the result
# ----------------------------------------------------------------------------------------------------
@dataclass
class GlobalSignificance:
    """Global significance of a local excess from background-only toys (look-elsewhere effect over θ).

    Attributes
    ----------
    n_toys : int
        Toys run; ``n_used`` of them gave a fit (failed ones are listed in ``info["failures"]`` and left
        out of the p-value).
    z_local_obs, q0_obs : float
        The observed local significance and q0 = Z².
    toy_z : list of float
        Each used toy's maximum local Z (√q0 of its blind multi-start fit), in toy order.
    n_exceed : int
        Toys with Z ≥ Z_local,obs.
    p_global, p_global_error : float
        (1 + k)/(1 + N) and its binomial error.
    z_global, z_global_error : float
        Φ⁻¹(1 − p) (clipped at 0) and the error propagated from ``p_global_error``.
    bound : bool
        No toy exceeded the observation: p is then a bound p ≲ 1/N (``p_upper_95``: Clopper–Pearson 95 %
        upper limit; ``z_lower_95`` the matching lower limit of Z) and ``extrapolation`` estimates it.
    extrapolation : dict or None
        :func:`chi2_tail_extrapolation` of the toys to the observation (an approximation).
    method : str
        How the p-value was computed.
    """

    n_toys: int
    n_used: int
    z_local_obs: float
    q0_obs: float
    toy_z: list[float]
    n_exceed: int
    p_global: float
    p_global_error: float
    z_global: float
    z_global_error: float
    p_fraction: float
    bound: bool
    p_upper_95: float
    z_lower_95: float
    extrapolation: dict | None = None
    method: str = "background-only toys, p = (1 + k) / (1 + N)"
    time_per_toy_s: float = math.nan
    info: dict = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return self.n_toys - self.n_used

    @property
    def toy_q0(self) -> np.ndarray:
        """The toys' maximum local q0 (= Z²)."""
        return np.square(np.asarray(self.toy_z, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GlobalSignificance:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown GlobalSignificance field(s) {sorted(unknown)}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` if given."""
        return dump_json(self.to_dict(), path, indent=2)

    def summary(self) -> str:
        """The one-line result: ``global significance: Z = … (p = … ± …) from N background-only toys …``."""
        if self.bound:
            text = (
                f"global significance: Z > {self.z_global:.2f} (p < {self.p_global:.2g}, no toy exceeds; "
                f"95 % CL: p < {self.p_upper_95:.2g}, Z > {self.z_lower_95:.2f})"
            )
        else:
            text = (
                f"global significance: Z = {self.z_global:.2f} ± {self.z_global_error:.2f} "
                f"(p = {self.p_global:.3g} ± {self.p_global_error:.2g})"
            )
        return f"{text} from {self.n_used} background-only toys (local Z = {self.z_local_obs:.2f})"

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.n_failed:
            lines.append(f"  {self.n_failed} of {self.n_toys} toys failed and are left out")
        z = np.asarray(self.toy_z)
        if z.size:
            lines.append(
                f"  toys' max local Z: median {np.median(z):.2f}, 90 % quantile {np.quantile(z, 0.9):.2f}, "
                f"max {z.max():.2f}; {self.n_exceed} of {z.size} ≥ the observed {self.z_local_obs:.2f}"
            )
        ex = self.extrapolation
        if ex:
            lines.append(
                f"  χ²_ν tail extrapolation (ν = {ex['ndf']:.2f} ± {ex['ndf_error']:.2f}, {ex['n_tail']} toys "
                f"above q0 = {ex['threshold']:.2f}): p ≈ {ex['p']:.3g}, Z ≈ {ex['z']:.2f} (approximate)"
            )
        overlap = self.info.get("overlap")
        if overlap is not None:
            note = "" if overlap <= 0.25 else ": the toys are correlated, the binomial error is too small"
            lines.append(
                f"  toys drawn without replacement from {self.info.get('n_reference')} reference events; "
                f"two toys share {overlap:.0%} of their events on average{note}"
            )
        if math.isfinite(self.time_per_toy_s):
            lines.append(f"  {self.time_per_toy_s:.2f} s per toy")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# toys
# ----------------------------------------------------------------------------------------------------
def background_toy_weights(n_reference: int, n_expected: float, seed=None) -> np.ndarray:
    """One background-only toy as 0/1 weights on ``n_reference`` reference events (for ``engine.set_weights``).

    N ~ Poisson(``n_expected``) events drawn uniformly *without* replacement: an exact iid sample of the
    density the reference was drawn from (see the module notes). ``seed``: anything
    ``numpy.random.default_rng`` accepts.

    Raises
    ------
    InputError
        Bad arguments, or N larger than the reference.
    """
    if isinstance(n_reference, bool) or not isinstance(n_reference, (int, np.integer)) or n_reference < 1:
        raise InputError(f"n_reference must be an integer ≥ 1, got {n_reference!r}")
    if not (isinstance(n_expected, (int, float, np.integer, np.floating)) and 0 <= n_expected < math.inf):
        raise InputError(f"n_expected must be a finite number ≥ 0, got {n_expected!r}")
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(float(n_expected)))
    if n > n_reference:
        raise InputError(
            f"the toy has {n} events but the reference only {n_reference}: use a larger reference sample"
        )
    w = np.zeros(int(n_reference))
    w[rng.choice(int(n_reference), size=n, replace=False)] = 1.0
    return w


@dataclass(frozen=True)
class LeeSpec:
    """What a worker needs to build its toy fitter (picklable for Dask when ``ratio_model`` is).

    Attributes
    ----------
    ratio_model : RatioModel or callable
        The fitted model, or a zero-argument callable that builds it (used to ship models that do not
        pickle once compiled, e.g. the oracle).
    reference : ndarray (n_ref, d)
        SR background reference events in the model's features.
    n_expected : float
        Expected events per toy (the observed SR count).
    fitter_kwargs : dict
        :class:`~gbi_zfit.inference.fit.SignalFitter` settings of the data fit.
    grid_step, n_starts, mu_probe
        The multi-start of the data fit.
    """

    ratio_model: Any
    reference: np.ndarray
    n_expected: float
    fitter_kwargs: dict
    grid_step: float = 50.0
    n_starts: int = 3
    mu_probe: float | None = None

    def store_config(self, seed) -> dict[str, Any]:
        """What identifies the toys of this spec and seed in a :class:`~gbi_zfit.parallel.ResultStore`."""
        ref = np.ascontiguousarray(self.reference, dtype=np.float64)
        model = self.ratio_model
        return {
            "schema": SCHEMA,
            "seed": seed if isinstance(seed, (int, np.integer)) else str(seed),
            "model": repr(model if isinstance(model, RatioModel) else model()),
            "reference_sha256": hashlib.sha256(ref.tobytes()).hexdigest(),
            "reference_shape": list(ref.shape),
            "n_expected": float(self.n_expected),
            "fitter": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.fitter_kwargs.items()},
            "grid_step": float(self.grid_step),
            "n_starts": int(self.n_starts),
            "mu_probe": self.mu_probe,
        }


class GridProfile:
    """The exact profile likelihood in μ at every point of the fitter's canonical θ grid, for any weights.

    Λ(x_i | θ_k) − 1 of the fitter's events at the K grid points is computed once (float32, K × n) — the
    events do not change between toys, only their weights — and :meth:`profile` then minimises the convex
    NLL_k(μ) = −Σ_i w_i log(1 + μ (Λ_ik − 1)) + penalty(θ_k) over μ ≥ 0 at all grid points at once
    (safeguarded Newton), in matrix–vector products over the events with w > 0.

    Parameters
    ----------
    fitter : SignalFitter
        Its events, μ limits, penalty and :meth:`~gbi_zfit.inference.fit.SignalFitter.theta_grid`.
    grid_step : float
        Grid spacing in GeV.
    """

    _MAX_LOG_RATIO = 80.0  # Λ stays finite in float32; a clipped Λ only lowers the grid's q0

    def __init__(self, fitter: SignalFitter, grid_step: float = 50.0):
        engine = fitter.engine
        self.grid = fitter.theta_grid(grid_step)
        lr = fitter.ratio_model.log_ratio_nodes(engine.precomputed, self.grid)
        if not np.isfinite(lr).all():
            raise FitError("the ratio model returned NaN/inf log Λ on the θ grid of the toys")
        self.d = np.expm1(np.minimum(lr, self._MAX_LOG_RATIO)).astype(np.float32)
        self.mu_max = min(float(fitter.limits["mu"][1]), 1.0 - 1e-9)
        self.penalty = np.zeros(len(self.grid))
        if engine.penalty is not None:
            thr, scale, strength = engine.penalty
            for col in (0, 1):
                u = np.maximum((thr - self.grid[:, col]) / scale, 0.0)
                self.penalty += strength * (np.expm1(u) - u)

    def profile(self, weights: np.ndarray, *, chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(μ̂_k, NLL_k(μ̂_k)) at every grid point for event weights ``weights`` (μ̂ ≥ 0; NLL as the fitter's)."""
        w = np.asarray(weights, np.float64)
        keep = w > 0
        w = w[keep]
        mu_hat = np.zeros(len(self.grid))
        nll = np.zeros(len(self.grid))
        for start in range(0, len(self.grid), chunk):
            d = self.d[start : start + chunk][:, keep].astype(np.float64)
            mu = np.zeros(len(d))
            lo, hi = np.zeros(len(d)), np.full(len(d), self.mu_max)
            active = d @ w > 0  # the score at μ = 0: no excess, μ̂ = 0
            for _ in range(60):
                r = d / (1.0 + mu[:, None] * d)
                g, h = -(r @ w), (r * r) @ w
                lo, hi = np.where(g < 0, mu, lo), np.where(g > 0, mu, hi)
                with np.errstate(divide="ignore", invalid="ignore"):
                    new = mu - g / h
                new = np.where((new > lo) & (new < hi), new, 0.5 * (lo + hi))
                new = np.where(active, new, 0.0)
                done = np.all(np.abs(new - mu) <= 1e-12 + 1e-10 * mu)
                mu = new
                if done:
                    break
            mu_hat[start : start + chunk] = mu
            nll[start : start + chunk] = -(np.log1p(mu[:, None] * d) @ w)
        return mu_hat, nll + self.penalty


@dataclass
class LeeState:
    """Per-worker state: one fitter on the reference events, reused by every toy, and its grid profile."""

    spec: LeeSpec
    fitter: SignalFitter
    grid: GridProfile

    @property
    def n_reference(self) -> int:
        return int(self.fitter.engine.n_events)


def build_lee_state(spec: LeeSpec) -> LeeState:
    """Build the toy fitter of ``spec`` (the ``factory`` of :func:`gbi_zfit.parallel.run_tasks`)."""
    model = spec.ratio_model if isinstance(spec.ratio_model, RatioModel) else spec.ratio_model()
    fitter = SignalFitter(model, spec.reference, backend="fast", **spec.fitter_kwargs)
    return LeeState(spec, fitter, GridProfile(fitter, spec.grid_step))


def _blind_fit(state: LeeState) -> tuple[FitResult, float, dict[str, float]]:
    """The toy's blind fit of the engine's current weights: (fit, best grid-profile q0, its grid point).

    The multi-start of the data fit, plus starts at the ``n_starts`` best grid points of the exact profile.
    """
    s, fitter = state.spec, state.fitter
    mu_hat, nll = state.grid.profile(fitter.engine.weights.numpy())
    lo, hi = fitter.limits["mu"]
    extra = []
    for k in np.argsort(nll)[: s.n_starts]:
        if mu_hat[k] > 0:
            mu = float(np.clip(mu_hat[k], lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo)))
            extra.append({"mu": mu, "mx": float(state.grid.grid[k, 0]), "my": float(state.grid.grid[k, 1])})
    res = fitter.fit_multistart(
        grid_step=s.grid_step,
        n_starts=s.n_starts,
        mu_probe=s.mu_probe,
        hesse=False,
        extra_starts=tuple(extra),
    )
    k = int(np.argmin(nll))
    best = {"mu": float(mu_hat[k]), "mx": float(state.grid.grid[k, 0]), "my": float(state.grid.grid[k, 1])}
    return res, max(0.0, -2.0 * float(nll[k])) if mu_hat[k] > 0 else 0.0, best


def _toy_q0(res: FitResult, q0_grid: float) -> float:
    """The toy's maximum q0: the fit's, or the grid's best profile value if the fit ended lower."""
    return max(local_significance(res)[0], q0_grid)


def _nodes_computed(fitter: SignalFitter) -> int:
    """θ-table nodes computed so far by this fitter (0 without a table)."""
    return int(sum(t.stats["nodes"] + t.stats["probe_nodes"] for t in fitter._tables.values()))


def run_one_lee_toy(state: LeeState, seed: np.random.SeedSequence) -> dict[str, Any]:
    """The task of a global-significance run: draw background-only toy ``seed`` and fit it blind.

    Returns pure data: ``q0`` and ``z`` (the toy's maximum local q0 and Z), ``q0_fit`` (of the fit) and
    ``q0_grid`` (best exact profile value on the θ grid, at ``grid_best``), the fitted values, ``valid``,
    ``n_drawn``, ``time_s`` and ``nodes`` (θ-table nodes this worker has computed so far). A toy whose fit
    raises is recorded as ``{"ok": False, "error": ...}``, never dropped.
    """
    index = int(seed.spawn_key[-1]) if seed.spawn_key else -1
    t0 = time.perf_counter()
    engine = state.fitter.engine
    try:
        w = background_toy_weights(state.n_reference, state.spec.n_expected, seed)
        engine.set_weights(w)
        res, q0_grid, grid_best = _blind_fit(state)
        q0 = _toy_q0(res, q0_grid)
        out: dict[str, Any] = {
            "ok": True,
            "q0": q0,
            "z": math.sqrt(q0),
            "q0_fit": local_significance(res)[0],
            "q0_grid": q0_grid,
            "grid_best": grid_best,
            "valid": bool(res.valid),
            "values": {k: float(res.values[k]) for k in ("mu", "mx", "my")},
            "nll": float(res.nll),
            "n_drawn": int(w.sum()),
        }
    except Exception as exc:  # noqa: BLE001 -- record, do not drop: a failure is a result of the study
        log.warning("global-significance toy %d failed: %r", index, exc)
        out = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=4),
        }
    out["index"] = index
    out["time_s"] = time.perf_counter() - t0
    out["nodes"] = _nodes_computed(state.fitter)
    return out


def _fitter_kwargs(fitter: SignalFitter) -> dict[str, Any]:
    """The likelihood settings of ``fitter``, to build the toy fitter with (fast backend)."""
    penalty = fitter.engine.penalty
    return {
        "mu_bounds": tuple(fitter.limits["mu"]),
        "penalty": penalty is not None,
        "penalty_threshold": penalty[0] if penalty is not None else 85.0,
        "tol": fitter.tol,
        "theta_table": fitter.theta_table,
        "table_steps": tuple(fitter.table_steps),
        "table_tol": fitter.table_tol,
    }


def _portable(model: RatioModel) -> Any:
    """``model`` or a picklable recipe of it for Dask workers (the oracle holds compiled functions once
    used, which do not pickle)."""
    from ..models.oracle import OracleRatio

    if type(model) is OracleRatio:
        return functools.partial(OracleRatio, model.sim, model.feature_set.name)
    return model


def global_significance(
    fitter: SignalFitter,
    z_local: float,
    n_toys: int,
    seed: int | np.random.SeedSequence = 0,
    *,
    reference: np.ndarray | None = None,
    n_expected: float | None = None,
    executor=None,
    store_path: str | Path | None = None,
    progress: bool = True,
    grid_step: float = 50.0,
    n_starts: int = 3,
    mu_probe: float | None = None,
) -> GlobalSignificance:
    """Global significance of the local excess ``z_local`` from ``n_toys`` background-only toys.

    A :class:`~gbi_zfit.inference.fit.SignalFitter` with the likelihood settings of ``fitter`` (μ bounds,
    penalty, tolerance, θ table) is built once per worker on the ``reference`` events; toy ``i`` sets the
    weights :func:`background_toy_weights` (seed: child ``i`` of ``seed``, :func:`~gbi_zfit.parallel.spawn_seeds`)
    and fits μ, mX, mY blind with the multi-start of the data fit. See the module notes for the method.

    Parameters
    ----------
    fitter : SignalFitter
        The fitter of the observed data (its ratio model and settings; its event count is N_obs).
    z_local : float
        The observed local significance, e.g. ``local_significance(result)[1]``.
    n_toys : int
        Number of background-only toys (≥ 1).
    seed : int or SeedSequence
        Root seed of the toys.
    reference : ndarray (n_ref, d), optional
        SR background reference events in the model's features; default: the reference of
        ``fitter.pdf`` (``SignalFitter(..., reference=...)``). At least N_obs + 5 √N_obs events; use one
        several times larger than N_obs (toys share a fraction N_obs / n_ref of their events).
    n_expected : float, optional
        Expected events per toy (default: the observed count, ``fitter.engine.sum_weights``).
    executor : Executor, optional
        Where the toys run (:func:`gbi_zfit.parallel.make_executor`; default in-process).
    store_path : path, optional
        Append every finished toy to this :class:`~gbi_zfit.parallel.ResultStore` (JSON Lines); a rerun
        resumes, and a larger ``n_toys`` adds toys. A store of other settings is refused (ConfigError).
    progress : bool
        tqdm progress bar.
    grid_step, n_starts, mu_probe
        Multi-start of the blind toy fits; use those of the data fit (``mu_probe`` default 2/√N_obs, as
        :meth:`~gbi_zfit.inference.fit.SignalFitter.fit_multistart` of the data).

    Returns
    -------
    GlobalSignificance

    Raises
    ------
    InputError
        ``n_toys`` < 1, ``z_local`` not a finite number ≥ 0, no reference, a reference of the wrong shape
        or smaller than a toy, the extended likelihood, or a bad seed.
    FitError
        Every toy failed.
    """
    from ..parallel import ResultStore, SerialExecutor, run_tasks, spawn_seeds

    if not isinstance(fitter, SignalFitter):
        raise InputError(f"fitter must be a SignalFitter, got {type(fitter).__name__}")
    if isinstance(n_toys, bool) or not isinstance(n_toys, (int, np.integer)) or n_toys < 1:
        raise InputError(f"n_toys must be an integer ≥ 1, got {n_toys!r}")
    if not (
        isinstance(z_local, (int, float, np.integer, np.floating))
        and not isinstance(z_local, bool)
        and math.isfinite(z_local)
        and z_local >= 0
    ):
        raise InputError(f"z_local must be a finite number ≥ 0 (a local significance), got {z_local!r}")
    if fitter.engine.extended:
        raise InputError(
            "global significance toys support the ordinary likelihood only (no background_yield): the "
            "extended likelihood's NLL(μ = 0) is not 0"
        )
    if reference is None:
        reference = fitter.pdf.reference
    if reference is None:
        raise InputError(
            "no background reference sample: pass reference= (SR background events in the model's "
            "features) or build the fitter with SignalFitter(..., reference=...)"
        )
    ref = np.asarray(reference, dtype=np.float64)
    d = fitter.ratio_model.feature_set.dim
    if ref.ndim != 2 or ref.shape[1] != d or len(ref) < 2 or not np.isfinite(ref).all():
        raise InputError(
            f"reference must be a finite (n ≥ 2, {d}) array of SR background events; got {ref.shape}"
        )
    n_exp = fitter.engine.sum_weights if n_expected is None else n_expected
    if not (isinstance(n_exp, (int, float, np.integer, np.floating)) and math.isfinite(n_exp) and n_exp > 0):
        raise InputError(f"n_expected must be a finite number > 0, got {n_exp!r}")
    if not (math.isfinite(grid_step) and grid_step > 0) or int(n_starts) < 1:
        raise InputError(f"grid_step must be > 0 and n_starts ≥ 1, got {grid_step!r}, {n_starts!r}")
    if mu_probe is None:
        mu_probe = 2.0 / math.sqrt(float(n_exp))  # as the data fit's default (2/√N_obs)
    if len(ref) < n_exp + 5 * math.sqrt(n_exp) + 1:
        raise InputError(
            f"the reference has {len(ref)} events, too few for toys of {n_exp:.0f} expected events drawn "
            f"without replacement; give at least {math.ceil(n_exp + 5 * math.sqrt(n_exp) + 1)} (better: "
            "several times N_obs)"
        )
    seeds = spawn_seeds(seed, int(n_toys))  # InputError for a bad seed
    spec = LeeSpec(
        fitter.ratio_model,
        ref,
        float(n_exp),
        _fitter_kwargs(fitter),
        float(grid_step),
        int(n_starts),
        float(mu_probe),
    )
    store = None
    if store_path is not None:
        store = ResultStore(store_path, config=spec.store_config(seed))

    own = executor is None
    executor = executor or SerialExecutor()
    # built once per worker, and only if a toy is left to run; Dask workers get a picklable model recipe
    shipped = (
        spec
        if isinstance(executor, SerialExecutor)
        else dataclasses.replace(spec, ratio_model=_portable(spec.ratio_model))
    )
    try:
        t0 = time.perf_counter()
        results = run_tasks(
            executor,
            functools.partial(build_lee_state, shipped),
            run_one_lee_toy,
            seeds,
            store=store,
            desc="global-significance toys",
            progress=progress,
        )
        wall = time.perf_counter() - t0
    finally:
        if own:
            executor.close()
    return summarize_lee_toys(results, float(z_local), spec=spec, wall_s=wall)


def summarize_lee_toys(
    results: Sequence[Mapping[str, Any]],
    z_local: float,
    *,
    spec: LeeSpec | None = None,
    wall_s: float = math.nan,
) -> GlobalSignificance:
    """The :class:`GlobalSignificance` of ``z_local`` from toy results of :func:`run_one_lee_toy`.

    Failed toys (``ok`` false) are left out of the p-value and listed in ``info["failures"]``.

    Raises
    ------
    InputError
        ``z_local`` is not a finite number ≥ 0.
    FitError
        No toy gave a fit.
    """
    if not (
        isinstance(z_local, (int, float, np.integer, np.floating)) and math.isfinite(z_local) and z_local >= 0
    ):
        raise InputError(f"z_local must be a finite number ≥ 0, got {z_local!r}")
    ok = [r for r in results if r and r.get("ok")]
    failures = [
        {"index": r.get("index"), "reason": r.get("error", "missing")}
        for r in results
        if not (r and r.get("ok"))
    ]
    if not ok:
        raise FitError(
            f"all {len(results)} global-significance toys failed; first: {failures[0]['reason'] if failures else '?'}"
        )
    if failures:
        log.warning("%d of %d global-significance toys failed and are left out", len(failures), len(results))
    toy_q0 = np.array([float(r["q0"]) for r in ok])
    q0_obs = float(z_local) ** 2
    pv = p_value_from_toys(toy_q0, q0_obs)
    z = _z_of_p(pv["p"])
    z_err = pv["p_error"] / float(stats.norm.pdf(z)) if z > 0 else math.nan
    extrap = chi2_tail_extrapolation(toy_q0, q0_obs)
    times = [float(r.get("time_s", math.nan)) for r in ok]
    info: dict[str, Any] = {
        "failures": failures,
        "n_valid_fits": int(sum(bool(r.get("valid")) for r in ok)),
        "mean_n_drawn": float(np.mean([r.get("n_drawn", math.nan) for r in ok])),
        "wall_time_s": wall_s,
        "p_fraction": pv["p_fraction"],
    }
    if spec is not None:
        info.update(
            n_reference=int(len(spec.reference)),
            overlap=spec.n_expected / len(spec.reference),
            n_expected=spec.n_expected,
            grid_step=spec.grid_step,
            n_starts=spec.n_starts,
            mu_probe=spec.mu_probe,
        )
    return GlobalSignificance(
        n_toys=len(results),
        n_used=len(ok),
        z_local_obs=float(z_local),
        q0_obs=q0_obs,
        toy_z=[float(r["z"]) for r in ok],
        n_exceed=pv["k"],
        p_global=pv["p"],
        p_global_error=pv["p_error"],
        z_global=z,
        z_global_error=z_err,
        p_fraction=pv["p_fraction"],
        bound=pv["bound"],
        p_upper_95=pv["p_upper_95"],
        z_lower_95=_z_of_p(pv["p_upper_95"]),
        extrapolation=extrap,
        time_per_toy_s=float(np.nanmedian(times)) if times else math.nan,
        info=info,
    )
