"""Parametric fit of the background dijet-mass spectrum p(mjj) in the sidebands.

The background mjj shape in the signal region (SR) is interpolated from the sidebands (SB) with the
standard dijet function of the LHC resonance searches,

    f(y) ∝ (1 − y)^p1 / y^(p2 + p3 ln y),    y = mjj / √s,

fitted to the SB events only (the SR is blinded). The fit is an unbinned maximum-likelihood fit in zfit
with the PDF normalised over the two SB intervals; the result predicts the SR background yield with its
uncertainty and samples mjj in the SR (used to build the SR background for the GBI-PAWS generator).

Two numerical facts shape the implementation:

* ``log f`` is linear in the parameters, log f = T(mjj) · p with T = (ln(1 − y), −ln y, −ln² y), so the
  gradient of any log-integral is an expectation of T. We use this for the delta-method error of the
  SR yield: ∂ ln ∫_A f / ∂p = E_A[T] (exact, no finite differences).
* The integrals of f have no closed form for real exponents, but f is analytic on the mjj range (its
  singularities sit at mjj = 0 and mjj = √s), so fixed Gauss–Legendre quadrature is exact to machine
  precision. We register it as the "analytic" integral of :class:`DijetPDF`, so zfit never falls back to
  its Simpson integration (which is inaccurate across the blinded window, see :class:`DijetPDF`).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import zfit
import zfit.z.numpy as znp
from zfit.core.space import ANY_LOWER, ANY_UPPER

from ..errors import ConfigError, FitError, InputError, RegionError
from .events import _MIN_PLAUSIBLE_MJJ_GEV, Events
from .regions import DEFAULT_SR, SignalRegion

__all__ = [
    "DEFAULT_MJJ_RANGE",
    "DEFAULT_SQRT_S",
    "DijetPDF",
    "MjjFit",
    "MjjFitResult",
    "YieldPrediction",
    "fit_sidebands",
]

#: Centre-of-mass energy in GeV that sets the dimensionless y = mjj / √s.
DEFAULT_SQRT_S: float = 13000.0
#: Default mjj fit range in GeV (the lhco-sim support).
DEFAULT_MJJ_RANGE: tuple[float, float] = (2650.0, 7000.0)

_PARAM_NAMES: tuple[str, ...] = ("p1", "p2", "p3")
# Generous bounds: they only keep MIGRAD away from overflow; a fit that ends on one is flagged invalid.
_PARAM_LIMITS: dict[str, tuple[float, float]] = {
    "p1": (-100.0, 300.0),
    "p2": (-100.0, 100.0),
    "p3": (-50.0, 50.0),
}
_DEFAULT_START: dict[str, float] = {"p1": 10.0, "p2": 5.0, "p3": 0.0}
# Composite Gauss–Legendre rule on [0, 1]: 4 panels × 32 nodes. The nearest singularity of f is ≥ 0.4
# interval lengths away for any sensible range, so the rule is exact to ~1e-15 (tested against quad).
_N_PANELS, _N_NODES = 4, 32
_CDF_STEP_GEV = 1.0  # spacing of the CDF table used to start Newton's method in inverse_cdf

_fit_counter = itertools.count()  # only gives zfit parameters unique names across fits in one process


def _unit_rule() -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(_N_NODES)
    edges = np.linspace(0.0, 1.0, _N_PANELS + 1)
    half = 0.5 * np.diff(edges)
    nodes = (edges[:-1, None] + half[:, None] * (x[None, :] + 1.0)).ravel()
    weights = (half[:, None] * w[None, :]).ravel()
    return nodes, weights


_UNIT_NODES, _UNIT_WEIGHTS = _unit_rule()


def _check_n_params(n_params: int) -> int:
    if n_params not in (2, 3):
        raise ConfigError(f"n_params must be 2 (p1, p2) or 3 (p1, p2, p3), got {n_params!r}")
    return int(n_params)


def _check_range(mjj_range, sqrt_s: float) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in mjj_range)
    except (TypeError, ValueError):
        raise ConfigError(f"mjj_range must be a pair (low, high) in GeV, got {mjj_range!r}") from None
    if not (math.isfinite(sqrt_s) and sqrt_s > 0):
        raise ConfigError(f"sqrt_s must be a positive finite energy in GeV, got {sqrt_s!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi < sqrt_s):
        raise ConfigError(
            f"mjj_range ({lo}, {hi}) is invalid: need 0 < low < high < √s = {sqrt_s:g} GeV "
            "(the dijet function is singular at mjj = 0 and mjj = √s)"
        )
    return lo, hi


def _check_exclude(exclude, lo: float, hi: float) -> tuple[float, float]:
    a, b = (float(v) for v in exclude)
    if not (lo <= a < b <= hi):
        raise RegionError(
            f"the blinded window [{a:g}, {b:g}) must lie inside the mjj range [{lo:g}, {hi:g}] GeV"
        )
    if a == lo and b == hi:
        raise RegionError(f"the blinded window [{a:g}, {b:g}) covers the whole mjj range: no sidebands left")
    return a, b


def _space_limits(space):
    """(lower, upper) of a 1-d zfit space (floats, or tensors inside a graph)."""
    with warnings.catch_warnings():
        # zfit 0.28's recommended `v1.lower` itself calls the deprecated `rect_lower`
        warnings.simplefilter("ignore", DeprecationWarning)
        return space.v1.lower[0], space.v1.upper[0]


# ----------------------------------------------------------------------------------------------------
# zfit PDF


class DijetPDF(zfit.pdf.BasePDF):
    """The dijet function f(mjj) ∝ (1 − y)^p1 / y^(p2 + p3 ln y), y = mjj / √s, as a zfit PDF.

    Parameters
    ----------
    obs : zfit.Space
        One-dimensional space of mjj (GeV) with finite limits inside (0, √s).
    p1, p2 : zfit parameter or float
        Exponents of (1 − y) and of 1/y.
    p3 : zfit parameter or float, optional
        Coefficient of the ln y term in the exponent of 1/y; ``None`` (default) leaves it out.
    sqrt_s : float
        Centre-of-mass energy in GeV (default 13000).
    exclude : (float, float), optional
        A blinded window ``[low, high)`` where the PDF is zero, e.g. the signal region. The PDF is then
        normalised over ``obs`` minus the window, i.e. over the sidebands. We do this rather than use
        ``zfit.pdf.TruncatedPDF``: inside compiled zfit graphs that functor normalises by Simpson
        integration of a discontinuous function (5e-5 relative error measured here), while the window
        is handled exactly by the integral registered for this class.
    extended, norm, name, label
        As for every zfit PDF.

    Notes
    -----
    The integral over any interval is a fixed-order Gauss–Legendre sum, exact to ~1e-15 (registered
    as the analytic integral, so it also serves ``integrate`` and the normalisation, differentiably).
    Internally log f is shifted by its value at the lower edge of ``obs`` to keep exp() in range; this
    constant cancels in every normalised quantity.

    Examples
    --------
    >>> obs = zfit.Space("mjj", 2650.0, 7000.0)
    >>> pdf = DijetPDF(obs, p1=10.0, p2=5.0)
    >>> round(float(pdf.integrate(obs)[0]), 12)
    1.0
    """

    _N_OBS = 1

    def __init__(
        self,
        obs,
        p1,
        p2,
        p3=None,
        *,
        sqrt_s: float = DEFAULT_SQRT_S,
        exclude: tuple[float, float] | None = None,
        extended=None,
        norm=None,
        name: str = "DijetPDF",
        label: str | None = None,
    ):
        params = {"p1": p1, "p2": p2}
        if p3 is not None:
            params["p3"] = p3
        self._sqrt_s = float(sqrt_s)
        super().__init__(obs=obs, params=params, extended=extended, norm=norm, name=name, label=label)
        if not self.space.has_limits:
            raise ConfigError("DijetPDF needs an obs space with finite mjj limits")
        lo, hi = _check_range(_space_limits(self.space), self._sqrt_s)
        self._exclude = None if exclude is None else _check_exclude(exclude, lo, hi)
        self._ref = lo

    @property
    def sqrt_s(self) -> float:
        return self._sqrt_s

    @property
    def exclude(self) -> tuple[float, float] | None:
        """The blinded window ``[low, high)`` where the PDF vanishes, or ``None``."""
        return self._exclude

    def _log_shape(self, m, params):
        """log f(m) − log f(ref), the same expression as :func:`_sufficient_stats` in numpy."""
        y, y0 = m / self._sqrt_s, self._ref / self._sqrt_s
        ly, ly0 = znp.log(y), math.log(y0)
        val = params["p1"] * (znp.log1p(-y) - math.log1p(-y0)) - params["p2"] * (ly - ly0)
        if "p3" in params:
            val = val - params["p3"] * (ly * ly - ly0 * ly0)
        return val

    @zfit.supports()
    def _unnormalized_pdf(self, x, params):
        m = x[0]
        val = znp.exp(self._log_shape(m, params))
        if self._exclude is not None:
            lo, hi = self._exclude
            val = znp.where((m >= lo) & (m < hi), znp.zeros_like(val), val)
        return val


def _gauss_legendre_tf(lower, upper, params, model: DijetPDF):
    nodes = lower + (upper - lower) * _UNIT_NODES
    return znp.sum(znp.exp(model._log_shape(nodes, params)) * _UNIT_WEIGHTS) * (upper - lower)


def _dijet_integral(limits, params, model: DijetPDF):
    lower, upper = _space_limits(limits)
    if model.exclude is None:
        return _gauss_legendre_tf(lower, upper, params, model)
    a, b = model.exclude
    # The window cut out of [lower, upper]: two (possibly empty) pieces, each integrated exactly.
    return _gauss_legendre_tf(lower, znp.clip(a, lower, upper), params, model) + _gauss_legendre_tf(
        znp.clip(b, lower, upper), upper, params, model
    )


DijetPDF.register_analytic_integral(
    func=_dijet_integral, limits=zfit.Space(axes=0, lower=ANY_LOWER, upper=ANY_UPPER)
)


# ----------------------------------------------------------------------------------------------------
# numpy side: the fitted shape, its integrals and sampling


def _sufficient_stats(m: np.ndarray, n_params: int, sqrt_s: float, ref: float) -> np.ndarray:
    """T(m) with log f(m) − log f(ref) = T(m) · p; shape ``m.shape + (n_params,)``."""
    y, y0 = np.asarray(m, dtype=np.float64) / sqrt_s, ref / sqrt_s
    ly, ly0 = np.log(y), np.log(y0)
    cols = [np.log1p(-y) - np.log1p(-y0), -(ly - ly0), -(ly * ly - ly0 * ly0)]
    return np.stack(cols[:n_params], axis=-1)


class YieldPrediction(NamedTuple):
    """Predicted background yield in an mjj window with its uncertainty.

    ``error`` is the quadrature sum of ``error_stat`` (Poisson error of the sideband count) and
    ``error_shape`` (propagated parameter covariance).
    """

    value: float
    error: float
    error_stat: float
    error_shape: float


@dataclass(eq=False)
class MjjFitResult:
    """Result of the sideband fit of the dijet function: parameters, covariance and predictions.

    All predictions are pure numpy; the zfit objects of the fit are not kept, so the result is cheap,
    picklable and JSON round-trips with :meth:`to_dict` / :meth:`from_dict`.

    Parameters
    ----------
    param_names : tuple of str
        ``("p1", "p2")`` or ``("p1", "p2", "p3")``.
    values : array (k,)
        Fitted parameter values.
    covariance : array (k, k)
        HESSE covariance of the parameters.
    n_sb : int
        Number of sideband events in the fit.
    signal_region : (float, float)
        The blinded SR ``[low, high)`` in GeV.
    mjj_range : (float, float)
        The fit range in GeV; :meth:`pdf` is normalised over it.
    sqrt_s : float
        √s in GeV.
    valid : bool
        MIGRAD converged, HESSE gave an accurate positive-definite covariance and no parameter is at
        a limit. (A fit that did not converge raises :class:`~gbi_zfit.errors.FitError` instead.)
    nll, edm : float
        Minimum of the negative log-likelihood and Minuit's estimated distance to the minimum.
    n_calls : int
        Function calls of the minimisation (all attempts) and HESSE.
    fit_time : float
        Wall time of the fit in seconds.
    diagnostics : dict
        JSON-compatible minimizer details (converged, attempts, covariance flags, at-limit, starts).
    """

    param_names: tuple[str, ...]
    values: np.ndarray
    covariance: np.ndarray
    n_sb: int
    signal_region: tuple[float, float]
    mjj_range: tuple[float, float]
    sqrt_s: float = DEFAULT_SQRT_S
    valid: bool = True
    nll: float = float("nan")
    edm: float = float("nan")
    n_calls: int = 0
    fit_time: float = 0.0
    diagnostics: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.param_names = tuple(self.param_names)
        k = len(self.param_names)
        self.values = np.asarray(self.values, dtype=np.float64).reshape(k)
        self.covariance = np.asarray(self.covariance, dtype=np.float64).reshape(k, k)
        self.signal_region = (float(self.signal_region[0]), float(self.signal_region[1]))
        self.mjj_range = _check_range(self.mjj_range, float(self.sqrt_s))
        self.n_sb = int(self.n_sb)

    # -- parameters ---------------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, float]:
        """Fitted values by name."""
        return {n: float(v) for n, v in zip(self.param_names, self.values, strict=True)}

    @property
    def errors(self) -> dict[str, float]:
        """HESSE errors by name."""
        return {n: float(np.sqrt(self.covariance[i, i])) for i, n in enumerate(self.param_names)}

    @property
    def correlation(self) -> np.ndarray:
        s = np.sqrt(np.diag(self.covariance))
        return self.covariance / np.outer(s, s)

    # -- integrals ----------------------------------------------------------------------------------
    def _clip_window(self, low: float, high: float) -> tuple[float, float]:
        lo, hi = self.mjj_range
        return min(max(float(low), lo), hi), min(max(float(high), lo), hi)

    def _moments(self, low: float, high: float) -> tuple[float, np.ndarray]:
        """∫_low^high f and E[T] over that window (unnormalised f, shifted as in :class:`DijetPDF`)."""
        low, high = self._clip_window(low, high)
        if high <= low:
            return 0.0, np.zeros(len(self.values))
        nodes = low + (high - low) * _UNIT_NODES
        t = _sufficient_stats(nodes, len(self.values), self.sqrt_s, self.mjj_range[0])
        w = np.exp(t @ self.values) * _UNIT_WEIGHTS * (high - low)
        total = float(w.sum())
        return total, (w @ t) / total

    def _sb_moments(self) -> tuple[float, np.ndarray]:
        (lo, hi), (a, b) = self.mjj_range, self.signal_region
        i1, t1 = self._moments(lo, a)
        i2, t2 = self._moments(b, hi)
        return i1 + i2, (i1 * t1 + i2 * t2) / (i1 + i2)

    def _delta_error(self, grad_log: np.ndarray) -> float:
        """Relative error σ_g / g from the gradient of ln g (delta method)."""
        return float(np.sqrt(max(grad_log @ self.covariance @ grad_log, 0.0)))

    def fraction(self, low: float | None = None, high: float | None = None) -> tuple[float, float]:
        """Probability of the fitted shape in ``[low, high]`` (of the full range) and its error.

        Defaults to the signal region. The error propagates the parameter covariance exactly to first
        order: ∂ ln P / ∂p = E_window[T] − E_range[T].
        """
        low = self.signal_region[0] if low is None else low
        high = self.signal_region[1] if high is None else high
        i_w, t_w = self._moments(low, high)
        i_all, t_all = self._moments(*self.mjj_range)
        frac = i_w / i_all
        return frac, (frac * self._delta_error(t_w - t_all) if i_w > 0 else 0.0)

    def predicted_yield(self, low: float | None = None, high: float | None = None) -> YieldPrediction:
        """Expected background events in ``[low, high]`` (default the SR) from the sideband fit.

        N = N_SB · ∫_window f / ∫_SB f. The error adds in quadrature the Poisson error of N_SB and the
        parameter covariance propagated with the delta method (∂ ln N / ∂p = E_window[T] − E_SB[T]).
        """
        low = self.signal_region[0] if low is None else low
        high = self.signal_region[1] if high is None else high
        i_w, t_w = self._moments(low, high)
        i_sb, t_sb = self._sb_moments()
        ratio = i_w / i_sb
        value = self.n_sb * ratio
        stat = ratio * math.sqrt(self.n_sb)
        shape = value * self._delta_error(t_w - t_sb) if i_w > 0 else 0.0
        return YieldPrediction(float(value), float(math.hypot(stat, shape)), float(stat), float(shape))

    @property
    def n_sr(self) -> float:
        """Predicted background yield in the SR."""
        return self.predicted_yield().value

    @property
    def n_sr_error(self) -> float:
        """Total uncertainty of :attr:`n_sr` (Poisson of N_SB ⊕ parameter covariance)."""
        return self.predicted_yield().error

    @property
    def sr_fraction(self) -> float:
        """Fraction of the fitted background in the SR, over the full mjj range."""
        return self.fraction()[0]

    # -- density, CDF, sampling ---------------------------------------------------------------------
    def _table(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(grid, normalised CDF on the grid, log normalisation), built once per result."""
        if "table" not in self._cache:
            lo, hi = self.mjj_range
            grid = np.linspace(lo, hi, max(int(np.ceil((hi - lo) / _CDF_STEP_GEV)), 1) + 1)
            cells = self._cell_integrals(grid[:-1], grid[1:])
            cum = np.concatenate([[0.0], np.cumsum(cells)])
            self._cache["table"] = (grid, cum / cum[-1], math.log(cum[-1]))
        return self._cache["table"]

    def _cell_integrals(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """∫_a^b f (unnormalised) for short intervals, with an 8-node Gauss–Legendre rule each."""
        x, w = np.polynomial.legendre.leggauss(8)
        half = 0.5 * (b - a)
        nodes = a[:, None] + half[:, None] * (x[None, :] + 1.0)
        t = _sufficient_stats(nodes, len(self.values), self.sqrt_s, self.mjj_range[0])
        return (np.exp(t @ self.values) * w).sum(axis=1) * half

    def log_pdf(self, mjj) -> np.ndarray:
        """Log density per GeV, normalised over :attr:`mjj_range` (−inf outside)."""
        m = np.asarray(mjj, dtype=np.float64)
        lo, hi = self.mjj_range
        inside = (m >= lo) & (m <= hi)
        mc = np.clip(m, lo, hi)
        val = _sufficient_stats(mc, len(self.values), self.sqrt_s, lo) @ self.values - self._table()[2]
        return np.where(inside, val, -np.inf)

    def pdf(self, mjj) -> np.ndarray:
        """Density per GeV, normalised over :attr:`mjj_range` (0 outside)."""
        return np.exp(self.log_pdf(mjj))

    def cdf(self, mjj) -> np.ndarray:
        """CDF over :attr:`mjj_range`, exact to ~1e-15 (table of cell integrals plus a partial cell)."""
        grid, cum, log_norm = self._table()
        m = np.clip(np.asarray(mjj, dtype=np.float64), grid[0], grid[-1])
        k = np.clip(np.searchsorted(grid, m, side="right") - 1, 0, len(grid) - 2)
        part = self._cell_integrals(grid[k].ravel(), m.ravel()).reshape(m.shape)
        return cum[k] + part / math.exp(log_norm)

    def inverse_cdf(self, u) -> np.ndarray:
        """mjj with CDF(mjj) = u: table interpolation refined by Newton steps (error ≪ 1e-6 GeV)."""
        grid, cum, _ = self._table()
        u = np.asarray(u, dtype=np.float64)
        if np.any((u < 0) | (u > 1)) or not np.all(np.isfinite(u)):
            raise InputError("inverse_cdf needs probabilities u in [0, 1]")
        m = np.interp(u, cum, grid)  # error ~ 1e-4 GeV for 1 GeV cells; Newton converges quadratically
        for _ in range(2):
            m = np.clip(m - (self.cdf(m) - u) / self.pdf(m), grid[0], grid[-1])
        return m

    def sample_sr(self, n: int, seed=None) -> np.ndarray:
        """Draw ``n`` mjj values in the SR ``[low, high)`` from the fitted shape (exact inverse CDF).

        Parameters
        ----------
        n : int
            Number of values.
        seed : int, SeedSequence or Generator, optional
            Random seed.
        """
        if not float(n).is_integer() or n < 0:
            raise InputError(f"number of samples must be a non-negative integer, got {n!r}")
        rng = np.random.default_rng(seed)
        a, b = self._clip_window(*self.signal_region)
        u = rng.uniform(*self.cdf(np.array([a, b])), int(n))
        # keep the half-open SR convention of SignalRegion.contains
        return np.clip(self.inverse_cdf(u), a, np.nextafter(b, -np.inf))

    # -- zfit ---------------------------------------------------------------------------------------
    def zfit_pdf(self, obs=None, *, floating: bool = False, name: str | None = None) -> DijetPDF:
        """A :class:`DijetPDF` at the fitted values (normalised over the full range unless ``obs`` says).

        Parameters
        ----------
        obs : zfit.Space, optional
            Defaults to ``mjj`` on :attr:`mjj_range`.
        floating : bool
            Whether the new zfit parameters float (default fixed).
        name : str, optional
            Prefix of the (unique) parameter names.
        """
        uid = next(_fit_counter)
        prefix = name or "mjjfit"
        obs = zfit.Space("mjj", *self.mjj_range) if obs is None else obs
        params = [
            zfit.Parameter(f"{n}_{prefix}{uid}", float(v), *_PARAM_LIMITS[n], floating=floating)
            for n, v in zip(self.param_names, self.values, strict=True)
        ]
        return DijetPDF(obs, *params, sqrt_s=self.sqrt_s, name=f"DijetPDF_{prefix}{uid}")

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (floats, ints, lists)."""
        return {
            "kind": "gbi_zfit.MjjFitResult",
            "version": 1,
            "param_names": list(self.param_names),
            "values": self.values.tolist(),
            "covariance": self.covariance.tolist(),
            "n_sb": self.n_sb,
            "signal_region": list(self.signal_region),
            "mjj_range": list(self.mjj_range),
            "sqrt_s": float(self.sqrt_s),
            "valid": bool(self.valid),
            "nll": float(self.nll),
            "edm": float(self.edm),
            "n_calls": int(self.n_calls),
            "fit_time": float(self.fit_time),
            "diagnostics": _jsonable(self.diagnostics),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MjjFitResult:
        """Inverse of :meth:`to_dict`; raises :class:`~gbi_zfit.errors.InputError` on a malformed dict."""
        if data.get("kind") != "gbi_zfit.MjjFitResult":
            raise InputError(f"not a serialised MjjFitResult (kind = {data.get('kind')!r})")
        keys = ("param_names", "values", "covariance", "n_sb", "signal_region", "mjj_range", "sqrt_s")
        missing = [k for k in keys if k not in data]
        if missing:
            raise InputError(f"serialised MjjFitResult lacks {missing}")
        extra = {k: data[k] for k in ("valid", "nll", "edm", "n_calls", "fit_time") if k in data}
        try:
            return cls(
                param_names=tuple(data["param_names"]),
                values=data["values"],
                covariance=data["covariance"],
                n_sb=data["n_sb"],
                signal_region=tuple(data["signal_region"]),
                mjj_range=tuple(data["mjj_range"]),
                sqrt_s=data["sqrt_s"],
                diagnostics=dict(data.get("diagnostics", {})),
                **extra,
            )
        except (TypeError, ValueError) as exc:
            raise InputError(f"malformed serialised MjjFitResult: {exc}") from exc

    def __str__(self) -> str:
        status = "valid" if self.valid else "INVALID"
        lines = [
            (
                f"MjjFitResult: dijet fit with {len(self.values)} shape parameters ({status}), "
                f"{self.n_sb:,} sideband events, SR [{self.signal_region[0]:g}, {self.signal_region[1]:g}) "
                f"GeV, range [{self.mjj_range[0]:g}, {self.mjj_range[1]:g}] GeV, √s = {self.sqrt_s:g} GeV"
            ),
        ]
        for name, v in self.params.items():
            lines.append(f"  {name} = {v:.5g} ± {self.errors[name]:.2g}")
        if len(self.values) > 1:
            corr = self.correlation
            pairs = [
                f"ρ({a},{b}) = {corr[i, j]:+.3f}"
                for i, a in enumerate(self.param_names)
                for j, b in enumerate(self.param_names)
                if j > i
            ]
            lines.append("  " + ", ".join(pairs))
        y = self.predicted_yield()
        frac, frac_err = self.fraction()
        lines.append(
            f"  predicted SR background: {y.value:,.1f} ± {y.error:,.1f} "
            f"(stat {y.error_stat:,.1f}, shape {y.error_shape:,.1f}); SR fraction {frac:.5f} ± {frac_err:.5f}"
        )
        lines.append(
            f"  NLL = {self.nll:.6g}, EDM = {self.edm:.2g}, {self.n_calls} calls, {self.fit_time:.2f} s"
        )
        return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj)
    return obj if obj is None or isinstance(obj, str) else str(obj)


# ----------------------------------------------------------------------------------------------------
# the fit


class MjjFit:
    """Unbinned maximum-likelihood fit of the dijet function to the sideband mjj values.

    Every call of :meth:`fit` builds its own zfit parameters (with unique names), PDF, data and loss,
    so fits are independent and can be repeated in one process. MIGRAD uses Minuit's numerical
    gradient (faster than TensorFlow autodiff for this 2–3 parameter loss); HESSE gives the covariance.
    On ~880k sideband events a fit (MIGRAD + HESSE, ~40 calls) takes 2.3–3 s on 2 CPU cores, ~0.9 s of
    it TensorFlow graph tracing; an evaluation of the NLL costs ~20 ms.

    Parameters
    ----------
    signal_region : SignalRegion or (float, float)
        The blinded SR ``[low, high)`` in GeV.
    mjj_range : (float, float)
        Fit range in GeV; events outside it are ignored.
    n_params : int
        2 (p1, p2) or 3 (p1, p2, p3).
    sqrt_s : float
        √s in GeV.
    tol : float, optional
        Minuit tolerance (zfit default 1e-3: EDM < 2e-6 for an NLL).
    maxiter : int, optional
        Call limit of the minimiser (zfit default if ``None``).
    n_retries : int
        Extra MIGRAD attempts from jittered starts if the first one does not converge.
    """

    def __init__(
        self,
        signal_region: SignalRegion | tuple[float, float] = DEFAULT_SR,
        *,
        mjj_range: tuple[float, float] = DEFAULT_MJJ_RANGE,
        n_params: int = 2,
        sqrt_s: float = DEFAULT_SQRT_S,
        tol: float | None = None,
        maxiter: int | None = None,
        n_retries: int = 2,
    ):
        if not isinstance(signal_region, SignalRegion):
            try:
                signal_region = SignalRegion(*(float(v) for v in signal_region))
            except RegionError:
                raise
            except (TypeError, ValueError):
                raise RegionError(
                    f"signal_region must be a SignalRegion or (low, high), got {signal_region!r}"
                ) from None
        self.signal_region = signal_region
        self.sqrt_s = float(sqrt_s)
        self.mjj_range = _check_range(mjj_range, self.sqrt_s)
        _check_exclude((signal_region.low, signal_region.high), *self.mjj_range)
        self.n_params = _check_n_params(n_params)
        self.tol = tol
        self.maxiter = maxiter
        self.n_retries = int(n_retries)

    @property
    def param_names(self) -> tuple[str, ...]:
        return _PARAM_NAMES[: self.n_params]

    def select_sidebands(self, mjj) -> np.ndarray:
        """Validated sideband mjj values (inside the range, outside the SR) as float64.

        Raises
        ------
        InputError
            NaN/inf, wrong shape or TeV-like values.
        RegionError
            Too few sideband events to fit.
        """
        m = mjj.mjj if isinstance(mjj, Events) else mjj
        try:
            m = np.asarray(m, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"mjj must be a 1-d array of numbers in GeV; {type(mjj).__name__} {str(mjj)[:40]!r} is not"
            ) from None
        if m.ndim != 1:
            raise InputError(f"mjj must be a 1-d array, got shape {m.shape}")
        bad = ~np.isfinite(m)
        if bad.any():
            raise InputError(
                f"mjj has {int(bad.sum())} non-finite value(s) (NaN/inf), first at row(s) "
                f"{np.flatnonzero(bad)[:5].tolist()}; drop or repair those events before the fit"
            )
        if len(m) and np.median(m) < _MIN_PLAUSIBLE_MJJ_GEV:
            raise InputError(
                f"median mjj is {np.median(m):.4g}, which looks like TeV; gbi_zfit expects GeV (multiply by 1000)"
            )
        lo, hi = self.mjj_range
        sb = m[(m >= lo) & (m <= hi) & ~self.signal_region.contains(m)]
        if len(sb) <= self.n_params:
            raise RegionError(
                f"the sidebands of {self.signal_region} within [{lo:g}, {hi:g}] GeV hold {len(sb)} event(s) "
                f"(of {len(m)}); a {self.n_params}-parameter fit needs more. Check the regions and GeV units."
            )
        return sb

    def _start_values(self, sb: np.ndarray) -> np.ndarray:
        """Starting point from a weighted least-squares fit of log counts in SB bins (log f is linear)."""
        (lo, hi), (a, b) = self.mjj_range, (self.signal_region.low, self.signal_region.high)
        edges = [np.linspace(x0, x1, 41) for x0, x1 in ((lo, a), (b, hi)) if x1 > x0]
        counts = [np.histogram(sb, e)[0] for e in edges]
        centres = np.concatenate([0.5 * (e[1:] + e[:-1]) for e in edges])
        widths = np.concatenate([np.diff(e) for e in edges])
        counts = np.concatenate(counts).astype(np.float64)
        ok = counts > 0
        default = np.array([_DEFAULT_START[n] for n in self.param_names])
        if ok.sum() <= self.n_params + 1:
            return default
        t = _sufficient_stats(centres[ok], self.n_params, self.sqrt_s, lo)
        design = np.column_stack([np.ones(ok.sum()), t])
        w = np.sqrt(counts[ok])  # var(log n) ≈ 1/n
        coef, *_ = np.linalg.lstsq(design * w[:, None], np.log(counts[ok] / widths[ok]) * w, rcond=None)
        start = coef[1:]
        if not np.all(np.isfinite(start)):
            return default
        limits = np.array([_PARAM_LIMITS[n] for n in self.param_names])
        return np.clip(start, limits[:, 0] * 0.9, limits[:, 1] * 0.9)

    def fit(self, mjj, *, seed=None) -> MjjFitResult:
        """Fit the sideband events of ``mjj`` (array in GeV or :class:`~gbi_zfit.data.events.Events`).

        Parameters
        ----------
        mjj : array or Events
            All events; the SR and events outside :attr:`mjj_range` are dropped here.
        seed : int, SeedSequence or Generator, optional
            Seeds the jittered starting points of retries (only used if the first MIGRAD fails).

        Raises
        ------
        InputError, RegionError
            Bad input values or empty sidebands (see :meth:`select_sidebands`).
        FitError
            MIGRAD did not converge in any attempt or HESSE gave no covariance; ``.diagnostics`` holds
            Minuit's report.
        """
        t0 = time.perf_counter()
        sb = self.select_sidebands(mjj)
        n_input = len(mjj) if isinstance(mjj, Events) else int(np.size(mjj))
        start = self._start_values(sb)
        uid = next(_fit_counter)
        obs = zfit.Space("mjj", *self.mjj_range)
        params = [
            zfit.Parameter(f"{n}_mjjfit{uid}", float(v), *_PARAM_LIMITS[n])
            for n, v in zip(self.param_names, start, strict=True)
        ]
        pdf = DijetPDF(
            obs,
            *params,
            sqrt_s=self.sqrt_s,
            exclude=(self.signal_region.low, self.signal_region.high),
            name=f"DijetPDF_mjjfit{uid}",
        )
        # the events are already cut to the range, so zfit need not filter them again
        data = zfit.Data.from_numpy(obs=obs, array=sb[:, None], name=f"mjj_sb{uid}", guarantee_limits=True)
        loss = zfit.loss.UnbinnedNLL(model=pdf, data=data)
        minimizer = zfit.minimize.Minuit(tol=self.tol, maxiter=self.maxiter)

        rng = np.random.default_rng(seed)
        attempts: list[dict] = []
        n_calls = 0
        result = None
        for attempt in range(self.n_retries + 1):
            x0 = start if attempt == 0 else start + rng.normal(0.0, 0.1 * np.abs(start) + 0.5)
            limits = np.array([_PARAM_LIMITS[n] for n in self.param_names])
            x0 = np.clip(x0, limits[:, 0] * 0.9, limits[:, 1] * 0.9)
            for p, v in zip(params, x0, strict=True):
                p.set_value(float(v))
            result = minimizer.minimize(loss)
            fmin = result.info["minuit"].fmin
            n_calls += int(fmin.nfcn)
            attempts.append(
                {
                    "start": x0.tolist(),
                    "valid": bool(result.valid),
                    "converged": bool(result.converged),
                    "edm": float(fmin.edm),
                    "nfcn": int(fmin.nfcn),
                    "fval": float(fmin.fval),
                    "is_above_max_edm": bool(fmin.is_above_max_edm),
                    "has_reached_call_limit": bool(fmin.has_reached_call_limit),
                    "values": [float(result.params[p]["value"]) for p in params],
                    "message": str(result.message),
                }
            )
            if result.valid:
                break
        diagnostics: dict[str, Any] = {"attempts": attempts, "n_sb": len(sb), "n_input": n_input}
        if not result.valid:
            raise FitError(
                f"the sideband mjj fit did not converge in {len(attempts)} attempt(s) "
                f"(last: EDM {attempts[-1]['edm']:.3g}, {attempts[-1]['nfcn']} calls, "
                f"call limit reached: {attempts[-1]['has_reached_call_limit']}); "
                "check the input spectrum, or try n_params=2, a larger maxiter or another seed",
                diagnostics,
            )

        minuit = result.info["minuit"]
        minuit.hesse()  # the same Minuit object MIGRAD used: its flags describe this covariance
        fmin = minuit.fmin
        n_calls += int(fmin.nfcn) - attempts[-1]["nfcn"]
        if minuit.covariance is None:
            raise FitError("HESSE did not return a covariance matrix for the sideband mjj fit", diagnostics)
        order = [list(minuit.parameters).index(p.name) for p in params]
        cov = np.array(minuit.covariance)[np.ix_(order, order)]
        values = np.array([float(minuit.values[p.name]) for p in params])
        at_limit = bool(result.params_at_limit)
        diagnostics.update(
            {
                "hesse_failed": bool(fmin.hesse_failed),
                "has_accurate_covar": bool(fmin.has_accurate_covar),
                "has_posdef_covar": bool(fmin.has_posdef_covar),
                "has_made_posdef_covar": bool(fmin.has_made_posdef_covar),
                "params_at_limit": at_limit,
            }
        )
        valid = bool(
            fmin.is_valid
            and fmin.has_accurate_covar
            and fmin.has_posdef_covar
            and not fmin.hesse_failed
            and not at_limit
        )
        return MjjFitResult(
            param_names=self.param_names,
            values=values,
            covariance=cov,
            n_sb=len(sb),
            signal_region=(self.signal_region.low, self.signal_region.high),
            mjj_range=self.mjj_range,
            sqrt_s=self.sqrt_s,
            valid=valid,
            nll=float(result.fmin),  # the full NLL (zfit ≥ 0.24 no longer subtracts an offset here)
            edm=float(fmin.edm),
            n_calls=n_calls,
            fit_time=time.perf_counter() - t0,
            diagnostics=diagnostics,
        )


def fit_sidebands(
    mjj,
    signal_region: SignalRegion | tuple[float, float] = DEFAULT_SR,
    *,
    mjj_range: tuple[float, float] = DEFAULT_MJJ_RANGE,
    n_params: int = 2,
    seed=None,
    **options,
) -> MjjFitResult:
    """Fit the dijet function to the sidebands of ``mjj``; shorthand for ``MjjFit(...).fit(mjj)``.

    Parameters
    ----------
    mjj : array or Events
        Dijet masses in GeV (all events; the SR is excluded here).
    signal_region : SignalRegion or (float, float)
        The blinded SR (default [3300, 3700) GeV).
    mjj_range : (float, float)
        Fit range in GeV.
    n_params : int
        2 or 3 shape parameters.
    seed : optional
        Seeds the retry starting points (see :meth:`MjjFit.fit`).
    **options
        ``sqrt_s``, ``tol``, ``maxiter``, ``n_retries`` of :class:`MjjFit`.

    Examples
    --------
    >>> from gbi_zfit.data.benchmark import LHCOSim
    >>> sim = LHCOSim()
    >>> res = fit_sidebands(sim.sample_background(200_000, seed=1).mjj, sim.signal_region)
    >>> n, err = res.n_sr, res.n_sr_error
    >>> mjj_sr = res.sample_sr(1000, seed=2)
    """
    return MjjFit(signal_region, mjj_range=mjj_range, n_params=n_params, **options).fit(mjj, seed=seed)
