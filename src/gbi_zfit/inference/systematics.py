"""Spurious-signal systematic on μ: a Gaussian-constrained nuisance parameter on the signal yield.

A learned background model can produce a fake ("spurious") signal: a fitted μ ≠ 0 on data without
signal. Its size σ_ss is measured in sideband validation windows (``gbi validate``) and enters the fit as
a shift of the signal fraction by a nuisance parameter ν with a unit Gaussian constraint:

    L(μ, θ, ν) = L_data(μ + σ_ss ν, θ) · N(ν; 0, 1).

With m = μ + σ_ss ν, the signal fraction the data see, profiling ν and θ turns the ordinary profile
p(m) = ΔNLL(m) (θ profiled, :func:`~gbi_zfit.inference.profile.profile_1d`) into

    ΔNLL_sys(μ) = min_m [ p(m) + (m − μ)² / (2 σ_ss²) ]

(minus its minimum, which is 0 at μ̂). The discovery statistic is q0_sys = 2 ΔNLL_sys(0), with the same
conventions as :func:`~gbi_zfit.inference.fisher.discovery_q0` (q0 = 0 when μ̂ ≤ 0; with θ floating
Z_sys = √q0_sys is a *local* significance), and the Wilks intervals of μ are where 2 ΔNLL_sys crosses
χ²_{cl,1} (:func:`~gbi_zfit.inference.profile.chi2_threshold`). For a parabolic p(m) with error σ_stat
this is the Gaussian convolution: σ_tot = √(σ_stat² + σ_ss²) and Z_sys = μ̂ / σ_tot.

The minimum over m is taken within the scanned range of μ (itself within the fit's μ limits: the data
likelihood is not defined outside them, e.g. for m < 0 with the default μ ≥ 0). This is exact for every
μ inside the scan: when p increases away from μ̂, the minimising m lies between μ̂ and μ. The profile is
interpolated between scan points with a monotone cubic (PCHIP) in the signed root
sign(m − μ̂) √(2ΔNLL), which is linear for a Gaussian likelihood, and minimised on a fine grid refined by
a bounded 1-D minimisation.

Examples
--------
>>> scan = profile_1d(fitter, "mu", best=best)
>>> result = profile_with_spurious_signal(scan, SpuriousSignal.from_file("validate.json"), fitter=fitter)
>>> print(result)          # μ with stat and total errors, local Z with and without the systematic
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq, minimize_scalar

from ..errors import ConfigError, DataFileError, InputError
from .fit import FitResult, SignalFitter
from .profile import DEFAULT_CLS, OpenIntervalWarning, ProfileScan, chi2_threshold, profile_1d

__all__ = ["SpuriousSignal", "SystematicResult", "profile_with_spurious_signal"]

_N_FINE = 4001  # m nodes of the inner minimisation (then refined): fine enough to bracket the minimum
_N_BRACKET = 400  # μ points per side to bracket an interval end before root finding
_MAX_FILL = 12  # profile points added between μ = 0 and a scan that does not reach it


def _is_number(value) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating))
    return numeric and not isinstance(value, (bool, np.bool_))


# ----------------------------------------------------------------------------------------------------
# the systematic
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpuriousSignal:
    """Size σ_ss of the spurious signal, the Gaussian width of the signal-yield nuisance parameter.

    Parameters
    ----------
    sigma_mu : float
        σ_ss in units of the signal fraction μ (finite, ≥ 0; 0 means no systematic).
    source : str
        Where the number comes from (a file name, ``"command line"``); only for printing and records.

    Raises
    ------
    InputError
        ``sigma_mu`` is not a number, not finite, or negative.
    """

    sigma_mu: float
    source: str = ""

    def __post_init__(self) -> None:
        where = f" (from {self.source})" if self.source else ""
        if not _is_number(self.sigma_mu):
            raise InputError(
                f"the spurious signal σ_ss must be a number (a signal fraction), got {self.sigma_mu!r}{where}"
            )
        value = float(self.sigma_mu)
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"the spurious signal σ_ss must be finite and ≥ 0, got {value}{where}")
        if not isinstance(self.source, str):
            raise InputError(f"source must be a string, got {type(self.source).__name__}")
        object.__setattr__(self, "sigma_mu", value)  # frozen: store the plain float

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> SpuriousSignal:
        """Read σ_ss from a ``gbi validate`` JSON, ``{"spurious_signal": {"sigma_mu": x, ...}, ...}``.

        A file holding a bare JSON number is accepted too.

        Raises
        ------
        DataFileError
            The file cannot be read or is not valid JSON (truncated, corrupt).
        ConfigError
            The JSON has no ``spurious_signal.sigma_mu`` number.
        InputError
            The number is negative or not finite.
        """
        path = Path(os.fspath(path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataFileError(f"cannot read the spurious signal from {path}: {exc}") from exc
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFileError(
                f"{path} is not valid JSON ({exc}); is the file truncated or corrupt?"
            ) from exc
        if _is_number(obj):
            return cls(obj, str(path))
        entry = obj.get("spurious_signal") if isinstance(obj, dict) else None
        value = entry.get("sigma_mu") if isinstance(entry, dict) else None
        if not _is_number(value):
            found = "no such entry" if value is None else f"{value!r}"
            raise ConfigError(
                f"{path} has no spurious_signal.sigma_mu number ({found}); expected the JSON of "
                '`gbi validate`, {"spurious_signal": {"sigma_mu": 0.0004, ...}}, or a bare number'
            )
        return cls(value, str(path))

    @classmethod
    def parse(cls, value: str | float | os.PathLike) -> SpuriousSignal:
        """σ_ss from a command-line value: a number (``"0.0004"``) or the path of a JSON file.

        Raises
        ------
        InputError
            Neither a number nor an existing file, or a bad number; otherwise as :meth:`from_file`.
        """
        if _is_number(value):
            return cls(value, "command line")
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                return cls(number, "command line")
        path = Path(os.fspath(value))
        if not path.is_file():
            raise InputError(
                f"spurious signal {os.fspath(value)!r} is neither a number nor an existing file (the JSON "
                "of `gbi validate`)"
            )
        return cls.from_file(path)

    def to_dict(self) -> dict:
        return {"sigma_mu": self.sigma_mu, "source": self.source}


# ----------------------------------------------------------------------------------------------------
# the profile and its convolution
# ----------------------------------------------------------------------------------------------------
class _Profile:
    """2ΔNLL(μ) interpolated between scan points, and its profile with the Gaussian-constrained shift."""

    def __init__(self, x: np.ndarray, t: np.ndarray):
        order = np.argsort(x)
        x, t = x[order], t[order]
        # merge coincident points (the best fit is often a grid point too), keeping the lower NLL
        keep_x, keep_t = [x[0]], [t[0]]
        tol = 1e-12 * max(1.0, float(np.ptp(x)))
        for xi, ti in zip(x[1:], t[1:], strict=True):
            if xi - keep_x[-1] <= tol:
                keep_t[-1] = min(keep_t[-1], ti)
            else:
                keep_x.append(xi)
                keep_t.append(ti)
        x, t = np.array(keep_x), np.array(keep_t)
        if len(x) < 2:
            raise InputError("the μ scan needs at least two distinct points with a finite 2ΔNLL")
        i0 = int(np.argmin(t))
        self.center = float(x[i0])
        self.x, self.t = x, t - t[i0]
        self.lo, self.hi = float(x[0]), float(x[-1])
        # the signed root is ~linear in μ (exactly for a Gaussian likelihood): a smooth, monotone interpolant
        root = np.sign(x - self.center) * np.sqrt(np.clip(self.t, 0.0, None))
        self._root = PchipInterpolator(x, root, extrapolate=False)
        self.m = np.union1d(np.linspace(self.lo, self.hi, _N_FINE), x)
        self.t_m = self.stat(self.m)

    def stat(self, mu) -> np.ndarray:
        """2ΔNLL without the systematic, interpolated (NaN outside the scan)."""
        return np.asarray(self._root(np.asarray(mu, float))) ** 2

    def sys(self, mu, sigma: float, *, refine: bool = True) -> np.ndarray:
        """min_m [2ΔNLL(m) + (m − μ)²/σ²] over the scanned m (σ = 0: the statistical curve itself)."""
        mu = np.atleast_1d(np.asarray(mu, float))
        if sigma == 0.0:
            return self.stat(mu)
        out = np.empty(len(mu))
        n = len(self.m)
        for start in range(0, len(mu), 256):  # chunks bound the (μ, m) table to a few MB
            mc = mu[start : start + 256]
            vals = self.t_m[None, :] + ((self.m[None, :] - mc[:, None]) / sigma) ** 2
            k = np.argmin(vals, axis=1)
            best = vals[np.arange(len(mc)), k]
            if refine:
                for j, (mu_j, k_j) in enumerate(zip(mc, k, strict=True)):
                    a, b = self.m[max(k_j - 1, 0)], self.m[min(k_j + 1, n - 1)]
                    if b <= a:
                        continue
                    res = minimize_scalar(
                        lambda m, mu_j=mu_j: float(self.stat(m)) + ((m - mu_j) / sigma) ** 2,
                        bounds=(a, b),
                        method="bounded",
                        options={"xatol": 1e-12 * max(1.0, self.hi - self.lo)},
                    )
                    best[j] = min(best[j], float(res.fun))
            out[start : start + len(mc)] = best
        return out

    def interval(
        self, f: Callable[..., np.ndarray], cl: float, limits: tuple[float, float]
    ) -> tuple[tuple[float | None, float | None], dict[str, str]]:
        """{f < χ²_{cl,1}} around the minimum: each end found by bracketing and root finding."""
        thr = chi2_threshold(cl, 1)
        ends: list[float | None] = []
        notes: dict[str, str] = {}
        for side, edge, limit in (("lower", self.lo, limits[0]), ("upper", self.hi, limits[1])):
            grid = np.linspace(self.center, edge, _N_BRACKET + 1)
            coarse = f(grid, refine=False)  # ≥ the refined values: a safe first bracket
            end = None
            for i in np.flatnonzero(coarse >= thr):
                if i == 0:
                    continue
                a, b = grid[i - 1], grid[i]
                fa, fb = float(f(a)[0]) - thr, float(f(b)[0]) - thr
                if fa < 0 <= fb:
                    end = float(brentq(lambda v: float(f(v)[0]) - thr, a, b, xtol=1e-14))
                    break
            if end is None:
                if abs(edge - limit) <= 1e-9 * max(1.0, abs(limit)):
                    end, notes[side] = float(limit), "at the parameter limit"
                else:
                    notes[side] = f"open: not crossed within the scan (ends at {edge:.4g})"
                    warnings.warn(
                        f"{cl:.1%} interval of mu is open on the {side} side ({notes[side]}); scan μ "
                        "further (profile_1d span= or values=)",
                        OpenIntervalWarning,
                        stacklevel=3,
                    )
            ends.append(end)
        return (ends[0], ends[1]), notes


def _fill_to_zero(
    scan: ProfileScan, x_min: float, fitter: SignalFitter, best: FitResult | None
) -> tuple[np.ndarray, np.ndarray]:
    """Profile points from μ = 0 up to the scan's first point: (μ values, 2ΔNLL relative to the scan).

    q0_sys needs the profile wherever the minimising m of μ = 0 may be, between 0 and μ̂, not only at 0:
    the GBI profile is far from a parabola there (its signed root is several times steeper near 0 than
    at μ̂), and a single point at 0 misplaces q0_sys by several per cent.
    """
    if not isinstance(fitter, SignalFitter):
        raise InputError(f"fitter must be a SignalFitter, got {type(fitter).__name__}")
    if scan.n_events and scan.n_events != fitter.engine.n_events:
        raise InputError(
            f"the scan was made on {scan.n_events} events but the fitter holds {fitter.engine.n_events}: "
            "pass the fitter of the scan"
        )
    if best is None:  # the scan's best fit, all parameters floating (as profile_1d's default)
        best = FitResult(
            values=dict(scan.best_values),
            nll=float(scan.info.get("best_nll", scan.nll_min)),
            floating=tuple(fitter.param_names),
            valid=True,
        )
    spacing = float(np.median(np.diff(np.unique(scan.values)))) if len(scan.values) > 1 else x_min
    n = int(np.clip(math.ceil(x_min / max(spacing, 1e-300)), 1, _MAX_FILL))
    grid = np.linspace(0.0, x_min, n + 1)[:-1]
    fill = profile_1d(fitter, "mu", values=grid, best=best, progress=False)
    # re-reference the new points' NLL to the scan's minimum
    return fill.values, fill.two_delta_nll + 2.0 * (fill.nll_min - scan.nll_min)


# ----------------------------------------------------------------------------------------------------
# result
# ----------------------------------------------------------------------------------------------------
def _float_or_none(v) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _pairs_to_dict(intervals: dict[float, tuple[float | None, float | None]]) -> dict[str, list]:
    return {f"{cl:g}": [_float_or_none(lo), _float_or_none(hi)] for cl, (lo, hi) in intervals.items()}


def _pairs_from_dict(d: dict) -> dict[float, tuple[float | None, float | None]]:
    return {float(k): (v[0], v[1]) for k, v in d.items()}


def _nan(v) -> float:
    return math.nan if v is None else float(v)


@dataclass(eq=False)
class SystematicResult:
    """The μ profile with the spurious-signal systematic, next to the statistical-only one.

    Attributes
    ----------
    sigma_ss : float
        σ_ss, the width of the signal-yield nuisance parameter.
    source : str
        Where σ_ss comes from.
    values : ndarray
        μ points: those of the scan, plus those added between μ = 0 and the scan for q0.
    two_delta_nll, two_delta_nll_stat : ndarray
        2ΔNLL_sys(μ) with the systematic and 2ΔNLL(μ) without it, at ``values``.
    mu_hat : float
        Best-fit μ (the minimum of both curves).
    intervals, intervals_stat : dict
        ``{cl: (low, high)}`` Wilks intervals of μ with and without the systematic; an end is the μ limit
        if the curve stays below the threshold up to it, ``None`` if the scan ended first.
    q0, Z : float
        Discovery statistic 2ΔNLL_sys(0) and Z = √q0 (0 when μ̂ ≤ 0; NaN if μ = 0 is outside the
        limits); local when θ floated.
    q0_stat, Z_stat : float
        The same without the systematic.
    limits : (float, float)
        Limits of μ.
    info : dict
        Notes on open or limit-bound interval ends, and how many profile points were added below the
        scan (``points_added``).
    """

    sigma_ss: float
    source: str
    values: np.ndarray
    two_delta_nll: np.ndarray
    two_delta_nll_stat: np.ndarray
    mu_hat: float
    intervals: dict[float, tuple[float | None, float | None]]
    intervals_stat: dict[float, tuple[float | None, float | None]]
    q0: float
    Z: float
    q0_stat: float
    Z_stat: float
    limits: tuple[float, float]
    info: dict = field(default_factory=dict)

    def errors(self, cl: float = 0.683, *, stat: bool = False) -> tuple[float, float]:
        """Distances (below, above) from μ̂ to the ends of the ``cl`` interval; NaN for an open end."""
        table = self.intervals_stat if stat else self.intervals
        if cl not in table:
            raise InputError(f"no {cl} interval; computed: {sorted(table)}")
        lo, hi = table[cl]
        return (self.mu_hat - _nan(lo), _nan(hi) - self.mu_hat)

    def summary(self) -> str:
        """One line: σ_ss, μ̂ with stat and total 68.3 % errors, local Z with and without the systematic."""

        def err(stat: bool) -> str:
            if 0.683 not in (self.intervals_stat if stat else self.intervals):
                return "?"
            below, above = self.errors(0.683, stat=stat)
            return "−{}/+{}".format(*(f"{e:.2g}" if math.isfinite(e) else "?" for e in (below, above)))

        src = f" ({self.source})" if self.source else ""
        return (
            f"spurious-signal systematic σ_ss = {self.sigma_ss:.3g}{src}: μ = {self.mu_hat:.4g} "
            f"(stat {err(True)}, total {err(False)}), local Z = {self.Z:.2f} (stat only {self.Z_stat:.2f})"
        )

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """JSON-able record (NaN as ``None``)."""
        return {
            "sigma_ss": self.sigma_ss,
            "source": self.source,
            "values": [_float_or_none(v) for v in self.values],
            "two_delta_nll": [_float_or_none(v) for v in self.two_delta_nll],
            "two_delta_nll_stat": [_float_or_none(v) for v in self.two_delta_nll_stat],
            "mu_hat": self.mu_hat,
            "intervals": _pairs_to_dict(self.intervals),
            "intervals_stat": _pairs_to_dict(self.intervals_stat),
            "q0": _float_or_none(self.q0),
            "Z": _float_or_none(self.Z),
            "q0_stat": _float_or_none(self.q0_stat),
            "Z_stat": _float_or_none(self.Z_stat),
            "limits": list(self.limits),
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SystematicResult:
        d = dict(d)
        for k in ("values", "two_delta_nll", "two_delta_nll_stat"):
            d[k] = np.array([_nan(v) for v in d[k]])
        for k in ("q0", "Z", "q0_stat", "Z_stat"):
            d[k] = _nan(d[k])
        d["intervals"] = _pairs_from_dict(d["intervals"])
        d["intervals_stat"] = _pairs_from_dict(d["intervals_stat"])
        d["limits"] = tuple(d["limits"])
        return cls(**d)


# ----------------------------------------------------------------------------------------------------
def profile_with_spurious_signal(
    scan: ProfileScan,
    ss: SpuriousSignal | float,
    *,
    fitter: SignalFitter | None = None,
    best: FitResult | None = None,
    cls: Sequence[float] = DEFAULT_CLS,
) -> SystematicResult:
    """Profile the spurious-signal nuisance parameter out of a μ profile scan.

    Parameters
    ----------
    scan : ProfileScan
        A 1-D scan of ``"mu"`` (:func:`~gbi_zfit.inference.profile.profile_1d`). It must reach μ = 0 for
        q0, or ``fitter`` is needed; the intervals with the systematic are wider, so scan far enough
        (about ±3 σ_tot: ``span = 3 √(1 + (σ_ss/σ_stat)²)``).
    ss : SpuriousSignal or float
        σ_ss; 0 gives back the statistical result exactly.
    fitter : SignalFitter, optional
        The fitter of the scan: if the scan does not reach μ = 0 (and 0 is within the μ limits), profile
        points from μ = 0 up to the scan (at most 12, about the scan's spacing) are fitted with it.
    best : FitResult, optional
        The best fit of the scan, for that extra point (default: the scan's best values, all parameters
        floating; pass it if some were fixed).
    cls : sequence of float
        Confidence levels of the intervals (default 68.3 % and 95 %).

    Returns
    -------
    SystematicResult
        Curves, μ̂, intervals, q0 and Z with and without the systematic.

    Raises
    ------
    InputError
        Not a μ scan, fewer than two finite points, or the scan does not reach μ = 0 and no fitter.

    Warns
    -----
    OpenIntervalWarning
        An interval (with or without the systematic) does not close within the scan.

    Notes
    -----
    2ΔNLL_sys(μ) = min_m [2ΔNLL(m) + (m − μ)²/σ_ss²] with m over the scanned range (see the module
    notes); q0_sys = 2ΔNLL_sys(0) if μ̂ > 0, else 0, as for the statistical q0.

    Examples
    --------
    >>> scan = profile_1d(fitter, "mu", best=best, span=4.0)
    >>> res = profile_with_spurious_signal(scan, SpuriousSignal(4e-4), fitter=fitter, best=best)
    >>> res.Z < res.Z_stat
    True
    """
    if not isinstance(scan, ProfileScan):
        raise InputError(f"scan must be a ProfileScan (profile_1d), got {type(scan).__name__}")
    if scan.parameter != "mu":
        raise InputError(f"the spurious signal is a systematic on mu; got a scan of {scan.parameter!r}")
    if not isinstance(ss, SpuriousSignal):
        ss = SpuriousSignal(ss)
    cls = tuple(float(c) for c in cls)
    for c in cls:
        chi2_threshold(c, 1)  # validates the level
    lo_lim, hi_lim = (float(v) for v in scan.limits)
    values = np.asarray(scan.values, float)
    t = np.asarray(scan.two_delta_nll, float)
    ok = np.isfinite(values) & np.isfinite(t)
    x, t = values[ok], t[ok]
    best_t = 2.0 * (float(scan.info.get("best_nll", scan.nll_min)) - scan.nll_min)
    x, t = np.append(x, scan.best_value), np.append(t, max(best_t, 0.0))
    n_added = 0
    if lo_lim <= 0.0 <= hi_lim and x.min() > 0.0:
        if fitter is None:
            raise InputError(
                f"the μ scan starts at {x.min():.4g} > 0 but q0 needs the profile down to μ = 0: scan down "
                "to 0 (profile_1d values= or span=), or pass fitter= to compute those points"
            )
        x_fill, t_fill = _fill_to_zero(scan, float(x.min()), fitter, best)
        x, t = np.append(x, x_fill), np.append(t, t_fill)
        values = np.sort(np.append(values, x_fill))
        n_added = len(x_fill)
    prof = _Profile(x, t)
    sigma = ss.sigma_mu

    # the minimum of 2ΔNLL_sys is at μ̂ and 0 up to rounding; subtracting it keeps the curve ≥ 0
    offset = float(prof.sys(prof.center, sigma)[0]) if sigma > 0 else 0.0

    def f_stat(mu, refine: bool = True) -> np.ndarray:
        return np.atleast_1d(prof.stat(mu))

    def f_sys(mu, refine: bool = True) -> np.ndarray:
        return prof.sys(mu, sigma, refine=refine) - offset

    mu_hat = prof.center
    info: dict = {"points_added": n_added, "notes": {}, "notes_stat": {}}
    intervals, intervals_stat = {}, {}
    for c in cls:
        intervals_stat[c], notes_stat = prof.interval(f_stat, c, (lo_lim, hi_lim))
        intervals[c], notes = (
            prof.interval(f_sys, c, (lo_lim, hi_lim)) if sigma > 0 else (intervals_stat[c], notes_stat)
        )
        if notes:
            info["notes"][f"{c:g}"] = notes
        if notes_stat:
            info["notes_stat"][f"{c:g}"] = notes_stat

    def q0_of(f) -> float:
        if not prof.lo <= 0.0 <= prof.hi:
            return math.nan  # μ = 0 outside the limits: no discovery test
        # as discovery_q0: a deficit (μ̂ ≤ 0) is no evidence for a signal
        return max(0.0, float(f(0.0)[0])) if mu_hat > 0 else 0.0

    q0_stat = q0_of(f_stat)
    q0 = q0_of(f_sys) if sigma > 0 else q0_stat
    curve_stat = f_stat(values)
    curve = f_sys(values) if sigma > 0 else curve_stat.copy()
    return SystematicResult(
        sigma_ss=sigma,
        source=ss.source,
        values=values,
        two_delta_nll=curve,
        two_delta_nll_stat=curve_stat,
        mu_hat=float(mu_hat),
        intervals=intervals,
        intervals_stat=intervals_stat,
        q0=q0,
        Z=math.sqrt(q0) if math.isfinite(q0) else math.nan,
        q0_stat=q0_stat,
        Z_stat=math.sqrt(q0_stat) if math.isfinite(q0_stat) else math.nan,
        limits=(lo_lim, hi_lim),
        info=info,
    )
