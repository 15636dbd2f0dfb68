"""Profile-likelihood (Wilks) scans: 1-D intervals of μ, mX, mY and 2-D (mX, mY) regions.

The profile likelihood ratio of a parameter (or pair) ψ is

    t(ψ) = 2 ΔNLL(ψ) = 2 [min_{ν} NLL(ψ, ν) − min_{ψ, ν} NLL],

minimised over all other floating parameters ν. Wilks' theorem gives the confidence regions
{ψ : t(ψ) < χ²_{cl, k}} with k = dim ψ (k = 1 for a single parameter, k = 2 for (mX, mY)).

Every point of a scan is a fit with ψ fixed. Fits run iminuit directly on the fitter's compiled
:class:`~gbi_zfit.inference.engine.RatioNLL` (same numbers as :meth:`SignalFitter.fit`, whatever its
backend) so that the limits can change from point to point; with θ fixed and μ the only floating
parameter the convex 1-D problem is solved exactly (root of ∂NLL/∂μ on the per-event Λ) instead,
about ten times faster than MIGRAD.

Two properties of the GBI likelihood shape the scans:

* **Mirror symmetry.** Jets are ordered by mass and the signal density sums both assignments, so
  NLL(μ, mX, mY) = NLL(μ, mY, mX). Results are canonical (mX ≥ mY). A scan of mX at a value v keeps
  mY ≤ v (and a scan of mY at v keeps mX ≥ v); otherwise the profile over the other mass would jump to
  the mirror image, e.g. mX = 130 GeV profiled to mY = 300 GeV, which *is* θ = (300, 130).
* **θ is unidentified at μ = 0.** There the likelihood does not depend on θ at all (NLL = the low-mass
  penalty, 0 above its threshold), and at small μ it depends on θ only weakly. A μ profile near 0
  therefore minimises over an (almost) flat direction in θ: the fitted θ wanders, but the minimum —
  and hence 2ΔNLL — is still well defined and valid; the profiled θ values there mean nothing. At
  μ = 0 exactly, θ is placed where the penalty vanishes instead of running MIGRAD on a flat function
  (2ΔNLL(0) is then the discovery q0). Scans start at the best fit and move outward so that each fit
  starts from its neighbour's solution.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2
from tqdm import tqdm

from ..errors import InputError, ParameterRangeError
from ._engine_tools import Minimum, constrained_minimum
from .fisher import observed_fisher
from .fit import FitResult, SignalFitter

__all__ = [
    "OpenIntervalWarning",
    "ProfileScan",
    "ProfileScan2D",
    "chi2_threshold",
    "profile_1d",
    "profile_2d",
]

#: Confidence levels drawn and reported by default.
DEFAULT_CLS = (0.683, 0.95)


class OpenIntervalWarning(UserWarning):
    """2ΔNLL did not reach the threshold inside the scan (and the scan did not reach the limit)."""


def chi2_threshold(cl: float, ndof: int) -> float:
    """2ΔNLL threshold χ²_{cl, ndof} of a Wilks region, e.g. 1.00 (68.3 %, 1 dof), 5.99 (95 %, 2 dof)."""
    if not 0.0 < cl < 1.0:
        raise InputError(f"confidence level must be in (0, 1), got {cl}")
    if isinstance(ndof, bool) or not isinstance(ndof, (int, np.integer)) or ndof < 1:
        raise InputError(f"ndof must be an integer ≥ 1 (the number of parameters of interest), got {ndof!r}")
    return float(chi2.ppf(cl, ndof))


def _constrained_minimum(
    fitter: SignalFitter, start: dict[str, float], fixed: dict[str, float], **kw
) -> Minimum:
    """Minimum of the fitter's NLL with ``fixed`` held (see :func:`._engine_tools.constrained_minimum`)."""
    return constrained_minimum(fitter.engine, fitter.limits, {**fitter.values, **start}, fixed, **kw)


def _canonical(values: dict[str, float]) -> dict[str, float]:
    if values["mx"] >= values["my"]:
        return dict(values)
    return {**values, "mx": values["my"], "my": values["mx"]}


def _best_fit(fitter: SignalFitter, best: FitResult | None) -> FitResult:
    if best is None:
        best = fitter.fit(hesse=True)  # from the fitter's current values (usually a previous best fit)
    if not isinstance(best, FitResult):
        raise InputError(f"best must be a FitResult, got {type(best).__name__}")
    return best


def _steps_from(best: FitResult) -> dict[str, float]:
    return {n: e for n, e in best.errors.items() if np.isfinite(e) and e > 0}


# ----------------------------------------------------------------------------------------------------
# 1-D scans
# ----------------------------------------------------------------------------------------------------
def _nan_to_none(a) -> list:
    return [None if (v is None or not np.isfinite(v)) else float(v) for v in np.asarray(a, float).ravel()]


def _none_to_nan(a, shape=None) -> np.ndarray:
    arr = np.array([np.nan if v is None else v for v in np.asarray(a, dtype=object).ravel()], float)
    return arr.reshape(shape) if shape is not None else arr


@dataclass(eq=False)
class ProfileScan:
    """A 1-D profile-likelihood scan of one parameter.

    Attributes
    ----------
    parameter : str
        Scanned parameter (``"mu"``, ``"mx"``, ``"my"`` or ``"nu_b"``).
    values : ndarray
        Scan points (ascending).
    two_delta_nll : ndarray
        2 [NLL_profile(value) − NLL_min] at each point.
    profiled : dict of ndarray
        Values of the other parameters at each point's minimum (canonical mX ≥ mY).
    valid : ndarray of bool
        Whether each point's fit converged.
    best_value : float
        Best-fit value of the parameter (2ΔNLL = 0 there).
    best_values : dict
        All best-fit values.
    nll_min : float
        Reference minimum: the lower of the best fit and any scan point.
    limits : (float, float)
        The parameter's limits; an interval that runs into a limit ends there.
    truth : float, optional
        True value (benchmark), for plots and printing.
    """

    parameter: str
    values: np.ndarray
    two_delta_nll: np.ndarray
    profiled: dict[str, np.ndarray]
    valid: np.ndarray
    best_value: float
    best_values: dict[str, float]
    nll_min: float
    limits: tuple[float, float]
    truth: float | None = None
    n_events: int = 0
    time_s: float = 0.0
    info: dict = field(default_factory=dict)

    # -- intervals -------------------------------------------------------------------------------------
    def _side(self, cl: float, direction: int) -> tuple[float | None, str]:
        """Crossing of the threshold going outward from the best fit; (value or None, note)."""
        thr = math.sqrt(chi2_threshold(cl, 1))
        x, t = self.values, self.two_delta_nll
        sel = np.isfinite(t) & ((x > self.best_value) if direction > 0 else (x < self.best_value))
        order = np.argsort(direction * x[sel])
        xs, rs = x[sel][order], np.sqrt(np.clip(t[sel][order], 0, None))
        prev_x, prev_r = self.best_value, 0.0
        for xi, ri in zip(xs, rs, strict=True):
            if ri >= thr:
                # the signed root √(2ΔNLL) is ~linear in the parameter (exactly for a Gaussian likelihood)
                return prev_x + (thr - prev_r) / (ri - prev_r) * (xi - prev_x), "crossed"
            prev_x, prev_r = xi, ri
        limit = self.limits[1] if direction > 0 else self.limits[0]
        if abs(prev_x - limit) <= 1e-9 * max(1.0, abs(limit)):
            return float(limit), "at the parameter limit"
        return None, f"open: not crossed within the scan (2ΔNLL = {prev_r**2:.2f} at {prev_x:.4g})"

    def interval(self, cl: float = 0.683) -> tuple[float | None, float | None]:
        """Wilks interval {2ΔNLL < χ²_{cl,1}}, interpolated linearly in √(2ΔNLL).

        An end is ``None`` (with an :class:`OpenIntervalWarning`) if 2ΔNLL stays below the threshold up
        to the end of the scan; extend the scan (``span`` or ``values``). If the scan reached the
        parameter's limit (e.g. μ = 0), the interval ends at that limit.
        """
        lo, note_lo = self._side(cl, -1)
        hi, note_hi = self._side(cl, +1)
        for side, val, note in (("lower", lo, note_lo), ("upper", hi, note_hi)):
            if val is None:
                warnings.warn(
                    f"{cl:.1%} interval of {self.parameter} is open on the {side} side ({note}); "
                    "extend the scan with span= or values=",
                    OpenIntervalWarning,
                    stacklevel=2,
                )
        return lo, hi

    def two_delta_nll_at(self, value: float) -> float:
        """2ΔNLL interpolated (linearly in the signed root) between scan points."""
        x = np.append(self.values, self.best_value)
        t = np.append(self.two_delta_nll, 0.0)
        ok = np.isfinite(t)
        x, t = x[ok], t[ok]
        order = np.argsort(x)
        x, t = x[order], t[order]
        r = np.sign(x - self.best_value) * np.sqrt(np.clip(t, 0, None))
        return float(np.interp(value, x, r, left=np.nan, right=np.nan) ** 2)

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "parameter": self.parameter,
            "values": _nan_to_none(self.values),
            "two_delta_nll": _nan_to_none(self.two_delta_nll),
            "profiled": {k: _nan_to_none(v) for k, v in self.profiled.items()},
            "valid": [bool(v) for v in self.valid],
            "best_value": self.best_value,
            "best_values": dict(self.best_values),
            "nll_min": self.nll_min,
            "limits": list(self.limits),
            "truth": self.truth,
            "n_events": self.n_events,
            "time_s": self.time_s,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ProfileScan:
        d = dict(d)
        d["values"] = _none_to_nan(d["values"])
        d["two_delta_nll"] = _none_to_nan(d["two_delta_nll"])
        d["profiled"] = {k: _none_to_nan(v) for k, v in d["profiled"].items()}
        d["valid"] = np.asarray(d["valid"], bool)
        d["limits"] = tuple(d["limits"])
        return cls(**d)

    def __str__(self) -> str:
        fmt = (lambda v: f"{v:.4g}") if self.parameter in ("mu", "nu_b") else (lambda v: f"{v:.1f}")
        lines = [
            (
                f"ProfileScan of {self.parameter}: {len(self.values)} points "
                f"({int(np.sum(self.valid))} valid), {self.n_events} events, {self.time_s:.1f} s"
            ),
            f"  best fit  {self.parameter} = {fmt(self.best_value)}"
            + (f"   (truth {fmt(self.truth)})" if self.truth is not None else ""),
        ]
        for cl in DEFAULT_CLS:
            (lo, nlo), (hi, nhi) = self._side(cl, -1), self._side(cl, +1)
            text = f"[{fmt(lo) if lo is not None else '?'}, {fmt(hi) if hi is not None else '?'}]"
            notes = [f"{s} {n}" for s, v, n in (("lower", lo, nlo), ("upper", hi, nhi)) if n != "crossed"]
            lines.append(f"  {cl:>6.1%} CL {text}" + (f"   ({'; '.join(notes)})" if notes else ""))
        return "\n".join(lines)


def _mirror_limits(fitter: SignalFitter, name: str, value: float) -> dict[str, tuple[float, float]]:
    """Keep the canonical half mX ≥ mY while one mass is fixed (else the profile jumps to the mirror)."""
    if name == "mx":
        lo, hi = fitter.limits["my"]
        if value <= lo:
            raise ParameterRangeError(
                f"mx = {value} is not above the lower limit of my ({lo}): no canonical θ"
            )
        return {"my": (lo, min(hi, value))}
    if name == "my":
        lo, hi = fitter.limits["mx"]
        if value >= hi:
            raise ParameterRangeError(
                f"my = {value} is not below the upper limit of mx ({hi}): no canonical θ"
            )
        return {"mx": (max(lo, value), hi)}
    return {}


def _default_grid(fitter, best, name, n_points, span) -> np.ndarray:
    err = best.errors.get(name)
    if err is None or not np.isfinite(err) or err <= 0:
        err = observed_fisher(fitter, best, method="exact").errors.get(name, math.nan)
    if not np.isfinite(err) or err <= 0:
        raise InputError(
            f"no finite error of {name} at the best fit to size the scan (parameter unidentified or at "
            "a limit?); pass the scan points with values="
        )
    lo, hi = fitter.limits[name]
    x0 = best.values[name]
    return np.linspace(max(lo, x0 - span * err), min(hi, x0 + span * err), int(n_points))


def profile_1d(
    fitter: SignalFitter,
    name: str,
    *,
    values: Sequence[float] | np.ndarray | None = None,
    n_points: int = 21,
    span: float = 3.0,
    best: FitResult | None = None,
    progress: bool = True,
) -> ProfileScan:
    """Profile-likelihood scan 2ΔNLL(``name``), minimising over all other floating parameters.

    Parameters
    ----------
    fitter : SignalFitter
        The fitter holding the data (its NLL engine and limits are used; its state is not changed,
        except by the best fit when ``best`` is None).
    name : str
        Parameter to scan: ``"mu"``, ``"mx"``, ``"my"`` (or ``"nu_b"``).
    values : array, optional
        Scan points; default ``n_points`` evenly spaced over best ± ``span`` × HESSE error, clipped to
        the parameter's limits.
    n_points, span : int, float
        Size of the default grid.
    best : FitResult, optional
        The global best fit (μ, θ floating), e.g. from :meth:`SignalFitter.fit_multistart`. Default: a
        fit from the fitter's current values.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ProfileScan
        With :meth:`ProfileScan.interval` for Wilks intervals.

    Notes
    -----
    Points are fitted outward from the best fit in both directions, each starting from its
    neighbour's solution. Scanning ``mx`` at v restricts ``my`` ≤ v, scanning ``my`` at v restricts
    ``mx`` ≥ v (canonical mX ≥ mY, see the module notes). Scanning ``mu`` down to 0 profiles θ over a
    nearly flat direction (θ is unidentified at μ = 0); 2ΔNLL stays valid, the profiled θ does not mean
    anything there.

    Examples
    --------
    >>> scan = profile_1d(fitter, "mu", best=best)
    >>> lo, hi = scan.interval(0.683)
    """
    if name not in fitter.param_names:
        raise InputError(f"unknown parameter {name!r}; parameters are {fitter.param_names}")
    best = _best_fit(fitter, best)
    if name not in best.floating:
        raise InputError(f"{name} was fixed in the best fit; profile a floating parameter")
    t0 = time.perf_counter()
    lo, hi = fitter.limits[name]
    if values is None:
        if not (n_points >= 2 and span > 0):
            raise InputError(f"need n_points ≥ 2 and span > 0, got {n_points}, {span}")
        grid = _default_grid(fitter, best, name, n_points, span)
    else:
        try:
            grid = np.asarray(values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError(f"values must be an array of numbers, got {values!r}") from None
        if len(grid) == 0 or not np.isfinite(grid).all():
            raise InputError("values must be a non-empty array of finite numbers")
        if (grid < lo).any() or (grid > hi).any():
            raise ParameterRangeError(f"scan values of {name} must lie within its limits [{lo}, {hi}]")
    grid = np.unique(grid)
    fixed_others = {n: best.values[n] for n in fitter.param_names if n not in best.floating}
    steps = _steps_from(best)
    x0 = best.values[name]
    up = [i for i in range(len(grid)) if grid[i] >= x0]
    down = [i for i in range(len(grid)) if grid[i] < x0][::-1]
    points: list[Minimum | None] = [None] * len(grid)
    with tqdm(total=len(grid), desc=f"profile {name}", disable=not progress, leave=False) as bar:
        for branch in (up, down):
            start = dict(best.values)
            for i in branch:
                v = float(grid[i])
                p = _constrained_minimum(
                    fitter,
                    start,
                    {name: v, **fixed_others},
                    limits=_mirror_limits(fitter, name, v),
                    steps=steps,
                )
                points[i] = p
                if p.valid:  # a failed fit is a poor start for the next point
                    start = p.values
                bar.update()
    nll = np.array([p.nll for p in points])
    nll_min = float(min(best.nll, np.nanmin(nll)))
    if best.nll - nll_min > 0.01:
        warnings.warn(
            f"the {name} scan found an NLL {best.nll - nll_min:.3g} below the best fit: the best fit is "
            "not the global minimum; refit (e.g. fit_multistart) from the scan's minimum",
            UserWarning,
            stacklevel=2,
        )
    others = [n for n in fitter.param_names if n != name]
    profiled = {}
    canon = [_canonical(p.values) if name in ("mu", "nu_b") else p.values for p in points]
    for n in others:
        profiled[n] = np.array([c[n] for c in canon])
    return ProfileScan(
        parameter=name,
        values=grid,
        two_delta_nll=2.0 * (nll - nll_min),
        profiled=profiled,
        valid=np.array([p.valid for p in points]),
        best_value=float(x0),
        best_values=dict(best.values),
        nll_min=nll_min,
        limits=(float(lo), float(hi)),
        truth=None if best.truth is None else best.truth.get(name),
        n_events=int(fitter.engine.n_events),
        time_s=time.perf_counter() - t0,
        info={"best_nll": float(best.nll)},
    )


# ----------------------------------------------------------------------------------------------------
# 2-D scan of θ = (mX, mY), μ profiled
# ----------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class ProfileScan2D:
    """2ΔNLL(mX, mY) with μ (and ν_B) profiled, on a grid.

    Only canonical cells (mX ≥ mY) are fitted; :meth:`filled` mirrors them onto the other half for
    display. Grid arrays are indexed ``[i, j]`` = (``mx[i]``, ``my[j]``).

    Attributes
    ----------
    mx, my : ndarray
        Grid axes (ascending, GeV).
    two_delta_nll : ndarray (len(mx), len(my))
        2 [NLL_profile(θ) − NLL_min]; NaN where not computed (mX < mY).
    mu : ndarray
        Profiled μ at each cell.
    valid : ndarray of bool
    best_values : dict
        Global best fit (μ, θ floating).
    nll_min : float
        Reference minimum: the lower of the best fit and any grid cell.
    truth : (float, float), optional
    """

    mx: np.ndarray
    my: np.ndarray
    two_delta_nll: np.ndarray
    mu: np.ndarray
    valid: np.ndarray
    best_values: dict[str, float]
    nll_min: float
    truth: tuple[float, float] | None = None
    n_events: int = 0
    time_s: float = 0.0
    info: dict = field(default_factory=dict)
    fitter: SignalFitter | None = field(default=None, repr=False)  # for :meth:`contains`; not serialised

    @property
    def computed(self) -> np.ndarray:
        """Mask of the fitted (canonical) cells."""
        return np.isfinite(self.two_delta_nll)

    def contour_levels(self, cl: Sequence[float] = DEFAULT_CLS) -> dict[float, float]:
        """2ΔNLL thresholds χ²_{cl,2} of the 2-D Wilks regions: {0.683: 2.30, 0.95: 5.99}."""
        return {float(c): chi2_threshold(c, 2) for c in cl}

    def filled(self) -> np.ndarray:
        """2ΔNLL on the whole grid, the mX < mY half filled by symmetry (interpolated if off-grid)."""
        from scipy.interpolate import RegularGridInterpolator

        z = np.array(self.two_delta_nll, float)
        ii, jj = np.nonzero(~np.isfinite(z))
        for i, j in zip(ii, jj, strict=True):
            # the mirror (mY, mX) of this cell, if it is a grid point
            a, b = (
                np.flatnonzero(np.isclose(self.mx, self.my[j])),
                np.flatnonzero(np.isclose(self.my, self.mx[i])),
            )
            if len(a) and len(b):
                z[i, j] = self.two_delta_nll[a[0], b[0]]
        ii, jj = np.nonzero(~np.isfinite(z))
        if len(ii) and len(self.mx) > 1 and len(self.my) > 1:
            interp = RegularGridInterpolator(
                (self.mx, self.my), self.two_delta_nll, bounds_error=False, fill_value=np.nan
            )
            z[ii, jj] = interp(np.column_stack([self.my[jj], self.mx[ii]]))
        return z

    def two_delta_nll_at(self, point: tuple[float, float], *, fitter: SignalFitter | None = None) -> float:
        """2ΔNLL at θ = ``point`` from a fit (μ profiled) — exact, not interpolated on the grid."""
        fitter = fitter or self.fitter
        if fitter is None:
            raise InputError(
                "this scan has no fitter attached (loaded from a file?); pass fitter= to evaluate a point"
            )
        mx, my = sorted((float(point[0]), float(point[1])), reverse=True)  # mirror symmetry
        fixed = {"mx": mx, "my": my, **self.info.get("fixed", {})}
        p = _constrained_minimum(fitter, dict(self.best_values), fixed)
        return float(max(0.0, 2.0 * (p.nll - self.nll_min)))

    def contains(
        self, point: tuple[float, float], cl: float = 0.95, *, fitter: SignalFitter | None = None
    ) -> bool:
        """Whether θ = ``point`` lies inside the 2-D Wilks region {2ΔNLL < χ²_{cl,2}}."""
        return self.two_delta_nll_at(point, fitter=fitter) < chi2_threshold(cl, 2)

    def to_dict(self) -> dict:
        return {
            "mx": _nan_to_none(self.mx),
            "my": _nan_to_none(self.my),
            "two_delta_nll": _nan_to_none(self.two_delta_nll),
            "mu": _nan_to_none(self.mu),
            "valid": [bool(v) for v in np.ravel(self.valid)],
            "best_values": dict(self.best_values),
            "nll_min": self.nll_min,
            "truth": None if self.truth is None else list(self.truth),
            "n_events": self.n_events,
            "time_s": self.time_s,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ProfileScan2D:
        d = dict(d)
        mx, my = np.asarray(d["mx"], float), np.asarray(d["my"], float)
        shape = (len(mx), len(my))
        d.update(
            mx=mx,
            my=my,
            two_delta_nll=_none_to_nan(d["two_delta_nll"], shape),
            mu=_none_to_nan(d["mu"], shape),
            valid=np.asarray(d["valid"], bool).reshape(shape),
            truth=None if d.get("truth") is None else tuple(d["truth"]),
        )
        return cls(**d)

    def __str__(self) -> str:
        n = int(self.computed.sum())
        i, j = np.unravel_index(np.nanargmin(self.two_delta_nll), self.two_delta_nll.shape)
        lines = [
            (
                f"ProfileScan2D of (mx, my): {len(self.mx)}×{len(self.my)} grid, {n} canonical cells "
                f"fitted ({int(np.sum(self.valid & self.computed))} valid), {self.n_events} events, "
                f"{self.time_s:.1f} s"
            ),
            (
                f"  best fit  (mx, my) = ({self.best_values['mx']:.1f}, {self.best_values['my']:.1f}), "
                f"μ = {self.best_values['mu']:.4g}; grid minimum at ({self.mx[i]:.1f}, {self.my[j]:.1f})"
            ),
        ]
        for cl, level in self.contour_levels().items():
            inside = int(np.sum(self.two_delta_nll[self.computed] < level))
            lines.append(f"  {cl:>6.1%} CL  2ΔNLL < {level:.2f}: {inside} of {n} cells")
        if self.truth is not None:
            lines.append(f"  truth (mx, my) = ({self.truth[0]:.1f}, {self.truth[1]:.1f})")
        return "\n".join(lines)


def profile_2d(
    fitter: SignalFitter,
    mx_values: Sequence[float] | np.ndarray,
    my_values: Sequence[float] | np.ndarray,
    *,
    best: FitResult | None = None,
    progress: bool = True,
) -> ProfileScan2D:
    """2ΔNLL on the (mX, mY) grid with μ (and ν_B) profiled: the 2-D Wilks region of θ.

    Parameters
    ----------
    fitter : SignalFitter
        The fitter holding the data.
    mx_values, my_values : array
        Grid axes in GeV (within the mass limits). Only cells with mX ≥ mY are fitted; give both axes
        the same values for a symmetric display of the mirror half.
    best : FitResult, optional
        The global best fit (μ, θ floating); default: a fit from the fitter's current values. 2ΔNLL
        is relative to it (or to a lower grid cell, with a warning).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    ProfileScan2D
        With :meth:`~ProfileScan2D.contour_levels` (χ²_{cl,2}) and :meth:`~ProfileScan2D.contains`.

    Notes
    -----
    With θ fixed the NLL is convex in μ; its minimum is found exactly (root of ∂NLL/∂μ), or by MIGRAD
    for the extended likelihood. Cells are visited outward from the one nearest the best fit.
    """
    best = _best_fit(fitter, best)
    if not {"mx", "my"} <= set(best.floating):
        raise InputError("the best fit must have mx and my floating for a 2-D θ scan")
    t0 = time.perf_counter()
    axes = []
    for name, vals in (("mx", mx_values), ("my", my_values)):
        try:
            a = np.unique(np.asarray(vals, dtype=np.float64).ravel())
        except (TypeError, ValueError):
            raise InputError(f"the {name} grid must be an array of numbers (GeV), got {vals!r}") from None
        lo, hi = fitter.limits[name]
        if len(a) == 0 or not np.isfinite(a).all() or a[0] < lo or a[-1] > hi:
            raise ParameterRangeError(f"{name} grid must be finite values within [{lo}, {hi}]")
        axes.append(a)
    mx, my = axes
    shape = (len(mx), len(my))
    canonical = mx[:, None] >= my[None, :]
    if not canonical.any():
        raise InputError("no grid cell has mx ≥ my: the canonical half of the (mx, my) plane is empty")
    nll = np.full(shape, np.nan)
    mu = np.full(shape, np.nan)
    valid = np.zeros(shape, bool)
    # breadth-first from the cell nearest the best fit, each fit starting from its parent's solution
    dist = ((mx[:, None] - best.values["mx"]) / np.ptp(mx).clip(1e-9)) ** 2 + (
        (my[None, :] - best.values["my"]) / np.ptp(my).clip(1e-9)
    ) ** 2
    dist[~canonical] = np.inf
    seed = np.unravel_index(np.argmin(dist), shape)
    fixed_others = {n: best.values[n] for n in fitter.param_names if n not in best.floating}
    starts = {seed: dict(best.values)}
    queue = deque([seed])
    with tqdm(total=int(canonical.sum()), desc="profile (mx, my)", disable=not progress, leave=False) as bar:
        while queue:
            i, j = queue.popleft()
            p = _constrained_minimum(
                fitter, starts[(i, j)], {"mx": float(mx[i]), "my": float(my[j]), **fixed_others}
            )
            nll[i, j], mu[i, j], valid[i, j] = p.nll, p.values["mu"], p.valid
            bar.update()
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                k = (i + di, j + dj)
                if 0 <= k[0] < shape[0] and 0 <= k[1] < shape[1] and canonical[k] and k not in starts:
                    starts[k] = p.values if p.valid else dict(best.values)
                    queue.append(k)
    nll_min = float(min(best.nll, np.nanmin(nll)))
    if best.nll - nll_min > 0.01:
        warnings.warn(
            f"a grid cell has an NLL {best.nll - nll_min:.3g} below the best fit: the best fit is not the "
            "global minimum; refit (e.g. fit_multistart) from the grid minimum",
            UserWarning,
            stacklevel=2,
        )
    truth = None
    if best.truth is not None and {"mx", "my"} <= set(best.truth):
        truth = (float(best.truth["mx"]), float(best.truth["my"]))
    return ProfileScan2D(
        mx=mx,
        my=my,
        two_delta_nll=2.0 * (nll - nll_min),
        mu=mu,
        valid=valid,
        best_values=dict(best.values),
        nll_min=nll_min,
        truth=truth,
        n_events=int(fitter.engine.n_events),
        time_s=time.perf_counter() - t0,
        info={"best_nll": float(best.nll), "fixed": fixed_others},
        fitter=fitter,
    )
