"""Fitted / true across signal mass points with three uncertainty methods (the GBI paper's Fig. 3).

For every signal mass point θ = (mX, mY) a benchmark data set is generated at a fixed SR signal
fraction μ (default 0.3 %, 1M background events ≈ 118k SR events, so S/√B ≈ 1.0), fitted with a ratio
model (default the exact oracle Λ*, multi-start over θ), and the uncertainty of μ̂, m̂X, m̂Y is estimated
three ways:

* **bootstrap** — standard deviation of the estimates over ``n_bootstrap`` Poisson-bootstrap replicas of
  the data (:func:`~gbi_zfit.inference.toys.bootstrap_fits`, each fit started at the data's best fit);
* **profile likelihood** — the 68.3 % Wilks interval {2ΔNLL < 1} of each parameter with the other two
  profiled (:func:`~gbi_zfit.inference.profile.profile_1d`), asymmetric;
* **Fisher information** — observed (Minuit's HESSE at the best fit) and expected (Hessian of the NLL of
  the Asimov data set of the fitted model, :func:`~gbi_zfit.inference.fisher.expected_fisher`, built as an
  explicit mixture of an SR background reference and signal drawn at θ̂).

:func:`run_mass_grid` runs one task per (mass point, data set) through the project executor
(:func:`~gbi_zfit.parallel.run_tasks`; serial or Dask), resumable with a
:class:`~gbi_zfit.parallel.ResultStore`. Task seeds come from ``SeedSequence.spawn``: point ``i`` gets
child ``i`` of ``SeedSequence(seed)``, its data set ``j`` child ``j`` of that, so results do not depend
on the executor or the number of workers. :class:`MassGridResult` prints the table of fitted/true ± each
error (:meth:`MassGridResult.table`) and the agreement of the methods (:meth:`MassGridResult.summary`);
:func:`gbi_zfit.plotting.mass_grid.plot_mass_grid` draws the figure.

Notes
-----
Jets are mass-ordered, so the likelihood is symmetric under mX ↔ mY and results are canonical
(m̂X ≥ m̂Y). At a point with mX = mY the canonical estimates are order statistics of two equal masses:
m̂X/mX is biased above 1 and m̂Y/mY below 1 by about the mass resolution, by construction.
"""

from __future__ import annotations

import functools
import json
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._util import dump_json
from ..errors import InputError, ParameterRangeError
from .fit import PARAM_NAMES

__all__ = [
    "DEFAULT_POINTS",
    "METHODS",
    "MassGridConfig",
    "MassGridResult",
    "MassPointResult",
    "measure_mass_point",
    "run_mass_grid",
]

#: Default mass points (mX, mY) in GeV, spread over the training grid 50…600.
DEFAULT_POINTS: tuple[tuple[float, float], ...] = (
    (100.0, 100.0),
    (200.0, 100.0),
    (300.0, 150.0),
    (300.0, 300.0),
    (400.0, 200.0),
    (500.0, 100.0),
    (500.0, 300.0),
)

#: Uncertainty methods, in the order they are tabulated and drawn.
METHODS = ("bootstrap", "profile", "hesse", "expected")
METHOD_LABELS = {
    "bootstrap": "bootstrap",
    "profile": "profile likelihood",
    "hesse": "Fisher (observed, HESSE)",
    "expected": "Fisher (expected)",
}


def _none_if_nan(v) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _nan_if_none(v) -> float:
    return math.nan if v is None else float(v)


# ----------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MassGridConfig:
    """What a mass-grid study generates and measures (all but the mass points and the seed).

    Parameters
    ----------
    mu : float
        Injected SR signal fraction μ = S / (S + B) (default 0.003, the paper's Fig. 3).
    n_background : int
        Background events over the full mjj range (default 1,000,000 ≈ 118k in the SR).
    n_bootstrap : int
        Poisson-bootstrap replicas per data set (0 skips the bootstrap).
    n_datasets : int
        Independent data sets per mass point.
    profile_points, profile_span : int, float
        Each 1-D profile scan has ``profile_points`` points over best fit ± ``profile_span`` × HESSE
        error; a side that does not reach 2ΔNLL = 1 is rescanned once over twice the span.
    n_reference : int
        SR background events of the Asimov reference of the expected Fisher information (0 skips it).
    n_signal_reference : int
        Signal events at θ̂ of that Asimov set.
    grid_step, n_starts : float, int
        Multi-start of the best fit (:meth:`~gbi_zfit.inference.fit.SignalFitter.fit_multistart`).
    penalty : bool
        Low-mass penalty in the likelihood (DESIGN §1).
    feature_set : str
        Features of the oracle ratio.
    """

    mu: float = 0.003
    n_background: int = 1_000_000
    n_bootstrap: int = 50
    n_datasets: int = 1
    profile_points: int = 11
    profile_span: float = 2.5
    n_reference: int = 240_000
    n_signal_reference: int = 20_000
    grid_step: float = 50.0
    n_starts: int = 3
    penalty: bool = True
    feature_set: str = "paws"

    def __post_init__(self):
        if not (0.0 < self.mu < 1.0):
            raise ParameterRangeError(f"mu = {self.mu} must be in (0, 1)")
        for name in ("n_background", "n_datasets", "profile_points"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("n_bootstrap", "n_reference", "n_signal_reference"):
            if int(getattr(self, name)) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_bootstrap == 1:
            raise InputError("n_bootstrap must be 0 (no bootstrap) or >= 2 (a standard deviation)")
        if self.n_reference and not self.n_signal_reference:
            raise InputError("the expected Fisher information needs n_signal_reference > 0")
        if self.profile_points < 3 or not self.profile_span > 0:
            raise InputError(
                f"need profile_points >= 3 and profile_span > 0, got {self.profile_points}, {self.profile_span}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MassGridConfig:
        return cls(**dict(d))


def _check_points(points) -> list[tuple[float, float]]:
    from ..data.benchmark import THETA_RANGE

    out = []
    for p in points:
        try:
            mx, my = (float(v) for v in p)
        except (TypeError, ValueError) as exc:
            raise InputError(f"a mass point must be a pair (mX, mY), got {p!r}") from exc
        lo, hi = THETA_RANGE
        if not (lo <= mx <= hi and lo <= my <= hi):
            raise ParameterRangeError(f"mass point ({mx}, {my}) is outside [{lo}, {hi}] GeV")
        out.append((mx, my) if mx >= my else (my, mx))  # canonical: the mirror is the same point
    if not out:
        raise InputError("need at least one mass point")
    if len(set(out)) != len(out):
        raise InputError(f"mass points must be distinct (after mX ≥ mY ordering): {out}")
    return out


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------
@dataclass
class MassPointResult:
    """One data set at one mass point: the best fit and its errors by the three methods.

    Attributes
    ----------
    mx, my : float
        True masses (canonical mX ≥ mY).
    dataset : int
        Index of the data set at this point.
    truth : dict
        True μ (the realised SR signal fraction n_S / N_SR), mX, mY.
    values : dict
        Best fit μ̂, m̂X, m̂Y.
    valid : bool
        The best fit is valid (with an accurate HESSE covariance).
    hesse, expected : dict
        Observed (HESSE) and expected Fisher errors by parameter (``None``: not available).
    profile : dict
        68.3 % profile-likelihood interval [lo, hi] by parameter (an end is ``None`` if open).
    bootstrap : dict
        The estimates of every bootstrap replica by parameter (``bootstrap_valid`` flags the valid fits).
    """

    mx: float
    my: float
    dataset: int = 0
    truth: dict[str, float] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    valid: bool = False
    hesse: dict[str, float | None] = field(default_factory=dict)
    expected: dict[str, float | None] = field(default_factory=dict)
    profile: dict[str, list[float | None]] = field(default_factory=dict)
    bootstrap: dict[str, list[float]] = field(default_factory=dict)
    bootstrap_valid: list[bool] = field(default_factory=list)
    n_events: int = 0
    n_signal: int = 0
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"({self.mx:g}, {self.my:g})"

    def ratio(self, name: str) -> float:
        """Fitted / true of parameter ``name`` (the paper's κ)."""
        return self.values[name] / self.truth[name]

    def bootstrap_std(self, name: str) -> float:
        """Standard deviation of the bootstrap estimates (valid replicas; all if fewer than 2 are valid)."""
        v = np.asarray(self.bootstrap.get(name, []), float)
        ok = np.asarray(self.bootstrap_valid, bool)
        if len(ok) == len(v) and ok.sum() >= 2:
            v = v[ok]
        v = v[np.isfinite(v)]
        return float(np.std(v, ddof=1)) if len(v) >= 2 else math.nan

    def bootstrap_halfwidth(self, name: str) -> float:
        """Half the central 68.3 % range of the bootstrap estimates: a width robust to outlying replicas
        (e.g. a replica whose fit fell into a secondary θ minimum), = the std for a Gaussian spread."""
        v = np.asarray(self.bootstrap.get(name, []), float)
        ok = np.asarray(self.bootstrap_valid, bool)
        if len(ok) == len(v) and ok.sum() >= 2:
            v = v[ok]
        v = v[np.isfinite(v)]
        if len(v) < 2:
            return math.nan
        lo, hi = np.quantile(v, [0.5 - 0.6827 / 2, 0.5 + 0.6827 / 2])
        return float(0.5 * (hi - lo))

    def errors(self, name: str) -> dict[str, tuple[float, float]]:
        """(lower, upper) error sizes ≥ 0 of ``name`` by method; NaN where not available."""
        x0 = self.values[name]
        lo, hi = (self.profile.get(name) or [None, None])[:2]
        b = self.bootstrap_std(name)
        h, e = _nan_if_none(self.hesse.get(name)), _nan_if_none(self.expected.get(name))
        return {
            "bootstrap": (b, b),
            "profile": (x0 - _nan_if_none(lo), _nan_if_none(hi) - x0),
            "hesse": (h, h),
            "expected": (e, e),
        }

    def symmetric_errors(self, name: str) -> dict[str, float]:
        """Half the 68 % interval width by method (profile: (hi − lo) / 2)."""
        return {m: 0.5 * (a + b) for m, (a, b) in self.errors(name).items()}

    def pull(self, name: str, method: str = "profile") -> float:
        """(fitted − true) / error, with the error on the side of the truth for asymmetric intervals."""
        lo, hi = self.errors(name)[method]
        d = self.values[name] - self.truth[name]
        err = lo if d > 0 else hi
        return d / err if err > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hesse"] = {k: _none_if_nan(v) for k, v in self.hesse.items()}
        d["expected"] = {k: _none_if_nan(v) for k, v in self.expected.items()}
        d["profile"] = {k: [_none_if_nan(x) for x in v] for k, v in self.profile.items()}
        d["bootstrap"] = {k: [_none_if_nan(x) for x in v] for k, v in self.bootstrap.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MassPointResult:
        d = dict(d)
        d["bootstrap"] = {k: [_nan_if_none(x) for x in v] for k, v in d.get("bootstrap", {}).items()}
        d["profile"] = {k: list(v) for k, v in d.get("profile", {}).items()}
        return cls(**d)


def _fmt(name: str, v: float) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v:.3g}" if name == "mu" else f"{v:.1f}"


@dataclass
class MassGridResult:
    """All mass points of a study; prints as a table, round-trips through JSON.

    Attributes
    ----------
    config : dict
        :class:`MassGridConfig` as a dict.
    seed : int
        Root seed.
    points : list of MassPointResult
        In task order (mass point, then data set).
    """

    config: dict[str, Any]
    seed: int | None
    points: list[MassPointResult]
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    # -- derived numbers ------------------------------------------------------------------------------
    def ratios(self, name: str) -> np.ndarray:
        """Fitted / true of ``name`` at every point."""
        return np.array([p.ratio(name) for p in self.points])

    def relative_errors(self, name: str, method: str) -> np.ndarray:
        """(lower, upper) errors of fitted / true, shape (n_points, 2)."""
        return np.array([np.array(p.errors(name)[method]) / p.truth[name] for p in self.points])

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per parameter: agreement of the methods and consistency of fitted/true with 1.

        ``ratio_to_profile[m]``: per-point ratios σ_m / σ_profile (σ_profile = half the 68 % width),
        their mean and min/max over points (``bootstrap_68``: the bootstrap's central 68 % half-width
        instead of its standard deviation). ``pull_*``: (fitted − true) / σ (profile: the side of the
        truth), with χ² = Σ pull² over points and its number of points.
        """
        out: dict[str, dict[str, Any]] = {}
        for name in PARAM_NAMES:
            sym = [p.symmetric_errors(name) for p in self.points]
            prof = np.array([s["profile"] for s in sym])
            ratios = {}
            for m in ("bootstrap", "bootstrap_68", "hesse", "expected"):
                if m == "bootstrap_68":
                    r = np.array([p.bootstrap_halfwidth(name) for p in self.points]) / prof
                else:
                    r = np.array([s[m] for s in sym]) / prof
                f = r[np.isfinite(r)]
                ratios[m] = {
                    "per_point": [_none_if_nan(v) for v in r],
                    "mean": _none_if_nan(f.mean()) if len(f) else None,
                    "min": _none_if_nan(f.min()) if len(f) else None,
                    "max": _none_if_nan(f.max()) if len(f) else None,
                }
            k = self.ratios(name)
            entry: dict[str, Any] = {
                "fitted_over_true": [_none_if_nan(v) for v in k],
                "mean_fitted_over_true": _none_if_nan(np.nanmean(k)),
                "ratio_to_profile": ratios,
            }
            for m in ("profile", "bootstrap", "hesse"):
                pulls = np.array([p.pull(name, m) for p in self.points])
                f = pulls[np.isfinite(pulls)]
                entry[f"pull_{m}"] = [_none_if_nan(v) for v in pulls]
                entry[f"chi2_{m}"] = float(np.sum(f**2)) if len(f) else None
                entry[f"n_{m}"] = len(f)
            out[name] = entry
        return out

    def table(self) -> str:
        """Text table: fitted/true ± each method's error (of the ratio) per point and parameter."""
        cfg = self.config
        lines = [
            (
                f"Mass grid: μ = {cfg.get('mu')}, {cfg.get('n_background')} background events, "
                f"{cfg.get('n_bootstrap')} bootstrap replicas, seed {self.seed}, "
                f"{len(self.points)} data set(s), "
                f"{self.info.get('points_time_s', self.time_s):.0f} s of point tasks"
            ),
            (
                f"{'point':<12}{'ds':>3} {'par':<4}{'fitted':>9}{'true':>9}{'fit/true':>9}"
                f"{'±boot':>9}{'profile -/+':>17}{'±hesse':>9}{'±exp':>9}{'pull':>7}  valid"
            ),
        ]
        for p in self.points:
            for name in PARAM_NAMES:
                t = p.truth[name]
                e = p.errors(name)
                b, (plo, phi), h, x = e["bootstrap"][0], e["profile"], e["hesse"][0], e["expected"][0]
                prof = f"-{plo / t:.3f}/+{phi / t:.3f}" if math.isfinite(plo + phi) else "open"
                lines.append(
                    f"{p.label if name == 'mu' else '':<12}{p.dataset if name == 'mu' else '':>3} "
                    f"{name:<4}{_fmt(name, p.values[name]):>9}{_fmt(name, t):>9}{p.ratio(name):>9.3f}"
                    f"{b / t:>9.3f}{prof:>17}{h / t:>9.3f}{x / t:>9.3f}{p.pull(name):>+7.2f}"
                    f"  {'yes' if p.valid else 'NO'}"
                    + (
                        f" ({int(np.sum(p.bootstrap_valid))}/{len(p.bootstrap_valid)} boot)"
                        if name == "mu"
                        else ""
                    )
                )
        s = self.summary()
        lines.append("")
        lines.append(
            f"{'par':<5}{'mean fit/true':>14}  {'boot/prof [min,max]':>20}  {'boot68/prof':>20}"
            f"  {'hesse/prof':>20}  {'exp/prof':>20}"
            f"  {'χ²(prof)/n':>11}"
        )
        for name in PARAM_NAMES:
            r = s[name]["ratio_to_profile"]

            def cell(m, r=r):
                d = r[m]
                if d["mean"] is None:
                    return "—"
                return f"{d['mean']:.2f} [{d['min']:.2f},{d['max']:.2f}]"

            chi = s[name]["chi2_profile"]
            chi_text = f"{chi:.1f}/{s[name]['n_profile']}" if chi is not None else "—"
            lines.append(
                f"{name:<5}{_fmt_ratio(s[name]['mean_fitted_over_true']):>14}  {cell('bootstrap'):>20}"
                f"  {cell('bootstrap_68'):>20}"
                f"  {cell('hesse'):>20}  {cell('expected'):>20}  {chi_text:>11}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "gbi_zfit.mass_grid/1",
            "config": dict(self.config),
            "seed": self.seed,
            "points": [p.to_dict() for p in self.points],
            "time_s": self.time_s,
            "info": dict(self.info),
            "summary": self.summary(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MassGridResult:
        return cls(
            config=dict(d["config"]),
            seed=d.get("seed"),
            points=[MassPointResult.from_dict(p) for p in d["points"]],
            time_s=float(d.get("time_s", 0.0)),
            info=dict(d.get("info", {})),
        )

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict` (no NaN literals); also written to ``path`` if given."""
        return dump_json(self.to_dict(), path, indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> MassGridResult:
        p = Path(text_or_path)
        text = p.read_text() if p.suffix == ".json" and p.exists() else str(text_or_path)
        return cls.from_dict(json.loads(text))


def _fmt_ratio(v) -> str:
    return "—" if v is None else f"{v:.3f}"


# ----------------------------------------------------------------------------------------------------
# one mass point
# ----------------------------------------------------------------------------------------------------
def _profile_interval(fitter, name: str, best, n_points: int, span: float) -> tuple[list, dict]:
    """68.3 % Wilks interval of ``name``; rescans over twice the span once if a side stays open."""
    from .profile import OpenIntervalWarning, profile_1d

    info: dict[str, Any] = {"scans": []}
    interval: list[float | None] = [None, None]
    for attempt in range(2):
        s = span * (2.0**attempt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                scan = profile_1d(
                    fitter, name, best=best, n_points=n_points * (attempt + 1), span=s, progress=False
                )
            except InputError as exc:  # no finite error to size the scan: unidentified parameter
                info["error"] = str(exc)
                return interval, info
            lo, hi = scan.interval(0.683)
        info["scans"].append(
            {"span": s, "points": len(scan.values), "valid": int(np.sum(scan.valid)), "time_s": scan.time_s}
        )
        notes = [str(w.message) for w in caught if not issubclass(w.category, OpenIntervalWarning)]
        if notes:
            info.setdefault("warnings", []).extend(notes)
        if best.nll - scan.nll_min > 0.01:
            info["lower_minimum"] = float(best.nll - scan.nll_min)
        interval = [lo, hi]
        if lo is not None and hi is not None:
            break
    return interval, info


def _off_mirror(values: Mapping[str, float], gap: float = 2.0) -> dict[str, float]:
    """Start values at least ``gap`` GeV off the mirror line mX = mY.

    The gradient of the NLL across the line is exactly zero on it (mX ↔ mY symmetry), so a fit started
    there never leaves it, even where the replica's minimum lies off the line.
    """
    out = dict(values)
    d = out["mx"] - out["my"]
    if d < gap:
        out["mx"] += 0.5 * (gap - d)
        out["my"] -= 0.5 * (gap - d)
    return out


def _errors_of_information(
    names: Sequence[str], information: np.ndarray, rcond: float = 1e-6
) -> tuple[dict[str, float], str]:
    """Errors √diag(I⁻¹); a pseudo-inverse on the identified directions if I is singular.

    At θ̂ on (or very near) the mirror line mX = mY the information across the line vanishes: the signal
    density is even in mX − mY there, so its score is zero. The pseudo-inverse (in the correlation
    scale, dropping eigenvalues below ``rcond`` × the largest) then gives the errors with that direction
    held fixed, i.e. those of μ and the common mass; returned with ``"pseudo-inverse"``.
    """
    info = np.asarray(information, float)
    if not np.all(np.isfinite(info)):
        return {n: math.nan for n in names}, "not finite"
    try:
        np.linalg.cholesky(info)
        cov, how = np.linalg.inv(info), "inverse"
    except np.linalg.LinAlgError:
        scale = np.sqrt(np.clip(np.abs(np.diag(info)), 1e-300, None))
        corr = info / np.outer(scale, scale)
        w, v = np.linalg.eigh(corr)
        keep = w > rcond * w.max()
        inv = (v[:, keep] / w[keep]) @ v[:, keep].T
        cov, how = inv / np.outer(scale, scale), f"pseudo-inverse ({int((~keep).sum())} direction(s) dropped)"
    return {
        n: float(np.sqrt(c)) if c > 0 else math.nan for n, c in zip(names, np.diag(cov), strict=True)
    }, how


def measure_mass_point(
    sim,
    ratio_model,
    mx: float,
    my: float,
    seed,
    config: MassGridConfig | None = None,
    *,
    dataset: int = 0,
) -> MassPointResult:
    """Generate one data set at θ = (mX, mY), fit it and estimate the errors by every method.

    Parameters
    ----------
    sim : LHCOSim
        The benchmark generator.
    ratio_model : RatioModel
        Λ(x | θ) of the fit (e.g. :class:`~gbi_zfit.models.OracleRatio` of ``sim``).
    mx, my : float
        True masses in GeV.
    seed : int or SeedSequence
        Seed of this data set; its children seed the data, the bootstrap and the Asimov reference.
    config : MassGridConfig, optional
        Settings (default :class:`MassGridConfig()`).
    dataset : int
        Index of the data set at this point (recorded).
    """
    from .fisher import expected_fisher
    from .fit import SignalFitter
    from .toys import bootstrap_fits

    config = config or MassGridConfig()
    [(mx, my)] = _check_points([(mx, my)])
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    ss = np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key, pool_size=ss.pool_size)  # fresh copy
    s_data, s_boot, s_ref, s_sig = ss.spawn(4)
    t0 = time.perf_counter()
    timing: dict[str, float] = {}

    data = sim.make_dataset(mu=config.mu, mx=mx, my=my, n_background=config.n_background, seed=s_data)
    sr = sim.signal_region.signal_region(data)
    truth = {"mu": float(sr.label.mean()), "mx": mx, "my": my}
    fitter = SignalFitter(ratio_model, sr, penalty=config.penalty)
    timing["data_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    best = fitter.fit_multistart(grid_step=config.grid_step, n_starts=config.n_starts, truth=truth)
    timing["fit_s"] = time.perf_counter() - t
    out = MassPointResult(
        mx=mx,
        my=my,
        dataset=int(dataset),
        truth=truth,
        values=dict(best.values),
        valid=bool(best.valid),
        hesse={n: best.errors.get(n) for n in PARAM_NAMES},
        n_events=int(len(sr)),
        n_signal=int(sr.label.sum()),
        info={
            "nll": best.nll,
            "edm": best.edm,
            "at_limit": best.at_limit,
            "starts": best.info.get("starts", []),
            "seed": {"entropy": ss.entropy, "spawn_key": list(ss.spawn_key)},
        },
    )

    # profile likelihood
    t = time.perf_counter()
    profile_info = {}
    for name in PARAM_NAMES:
        out.profile[name], profile_info[name] = _profile_interval(
            fitter, name, best, config.profile_points, config.profile_span
        )
    out.info["profile"] = profile_info
    timing["profile_s"] = time.perf_counter() - t

    # expected Fisher information: Asimov set of the fitted model (background reference + signal at θ̂)
    if config.n_reference:
        t = time.perf_counter()
        reference = sim.sample_background_sr(config.n_reference, seed=s_ref)
        signal = sim.sample_signal(
            config.n_signal_reference, best.values["mx"], best.values["my"], seed=s_sig, region="sr"
        )
        exp = expected_fisher(fitter, reference, best, signal=signal)
        errors, how = _errors_of_information(exp.names, exp.information)
        out.expected = {n: errors.get(n) for n in PARAM_NAMES}
        out.info["expected_fisher"] = {"positive_definite": exp.positive_definite, "inverse": how, **exp.info}
        timing["expected_s"] = time.perf_counter() - t

    # Poisson bootstrap of the data, each replica fitted from the best fit
    if config.n_bootstrap:
        t = time.perf_counter()
        reps = bootstrap_fits(fitter, config.n_bootstrap, s_boot, start=_off_mirror(best.values), hesse=False)
        out.bootstrap = {n: [float(r.values[n]) for r in reps] for n in PARAM_NAMES}
        out.bootstrap_valid = [bool(r.valid) for r in reps]
        timing["bootstrap_s"] = time.perf_counter() - t

    out.time_s = time.perf_counter() - t0
    out.info["timing"] = timing
    return out


# ----------------------------------------------------------------------------------------------------
# tasks and the driver
# ----------------------------------------------------------------------------------------------------
def _build_state(feature_set: str):
    """Per-worker state: the benchmark and its oracle ratio (compiled functions are reused by tasks)."""
    from ..data.benchmark import LHCOSim
    from ..models.oracle import OracleRatio

    sim = LHCOSim()
    return sim, OracleRatio(sim, feature_set)


def _point_task(config_dict: dict[str, Any], state, item: dict[str, Any]) -> dict[str, Any]:
    sim, oracle = state
    config = MassGridConfig.from_dict(config_dict)
    res = measure_mass_point(
        sim, oracle, item["mx"], item["my"], item["seed"], config, dataset=item["dataset"]
    )
    return res.to_dict()


def store_config(points: Sequence[tuple[float, float]], config: MassGridConfig, seed: int) -> dict[str, Any]:
    """What identifies the results of a mass-grid run in a :class:`~gbi_zfit.parallel.ResultStore`."""
    return {
        "schema": "gbi_zfit.mass_grid/1",
        "points": [list(p) for p in points],
        "config": config.to_dict(),
        "seed": int(seed),
    }


def run_mass_grid(
    points: Sequence[tuple[float, float]] = DEFAULT_POINTS,
    config: MassGridConfig | None = None,
    seed: int = 1,
    executor=None,
    store_path: str | Path | None = None,
    *,
    progress: bool = True,
) -> MassGridResult:
    """Fit/true and bootstrap, profile-likelihood and Fisher errors at every mass point.

    Parameters
    ----------
    points : sequence of (mX, mY)
        True signal masses in GeV (made canonical, mX ≥ mY).
    config : MassGridConfig, optional
        μ, data size, number of bootstrap replicas, ... (default: the paper's Fig. 3 setting).
    seed : int
        Root seed; point ``i`` uses child ``i`` of ``SeedSequence(seed)`` and its data set ``j`` child
        ``j`` of that.
    executor : Executor, optional
        Where the per-point tasks run (:func:`~gbi_zfit.parallel.make_executor`; default in-process).
    store_path : path, optional
        JSON Lines :class:`~gbi_zfit.parallel.ResultStore`: every finished point is saved, a rerun with
        the same points, config and seed skips them.
    progress : bool
        Progress bar over the tasks.

    Examples
    --------
    >>> res = run_mass_grid([(300, 150), (500, 100)], MassGridConfig(n_bootstrap=30), seed=1)
    >>> print(res.table())
    """
    from ..parallel import ResultStore, SerialExecutor, run_tasks, spawn_seeds

    config = config or MassGridConfig()
    if not isinstance(config, MassGridConfig):
        raise InputError(f"config must be a MassGridConfig, got {type(config).__name__}")
    if not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an int (it is stored to make the run resumable), got {seed!r}")
    seed = int(seed)
    pts = _check_points(points)
    items = []
    for (mx, my), point_seed in zip(pts, spawn_seeds(seed, len(pts)), strict=True):
        for j, ds_seed in enumerate(spawn_seeds(point_seed, config.n_datasets)):
            items.append({"mx": mx, "my": my, "dataset": j, "seed": ds_seed})
    store = None
    if store_path is not None:
        store = ResultStore(store_path, config=store_config(pts, config, seed))
    own = executor is None
    executor = executor or SerialExecutor()
    info = {"executor": type(executor).__name__, "n_workers": executor.n_workers}
    t0 = time.perf_counter()
    try:
        results = run_tasks(
            executor,
            functools.partial(_build_state, config.feature_set),
            functools.partial(_point_task, config.to_dict()),
            items,
            store=store,
            desc=f"mass points (μ = {config.mu:g})",
            progress=progress,
        )
    finally:
        if own:
            executor.close()
    out = [MassPointResult.from_dict(r) for r in results]
    info["points_time_s"] = float(sum(p.time_s for p in out))  # includes points resumed from the store
    return MassGridResult(
        config=config.to_dict(), seed=seed, points=out, time_s=time.perf_counter() - t0, info=info
    )
