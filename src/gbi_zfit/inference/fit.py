"""Maximum-likelihood fits of the signal fraction μ and masses θ = (mX, mY) with zfit's Minuit."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import zfit
from iminuit import Minuit
from zfit.minimizers.strategy import FailMinimizeNaN

from .._util import dump_json, load_json_record
from ..data.convert import feature_space, to_zfit_data
from ..data.events import Events
from ..errors import FitError, InputError, ParameterRangeError
from ..models.base import RatioModel
from ..pdf.penalty import low_mass_penalty
from ..pdf.ratio import RatioPDF
from .engine import RatioNLL
from .table import FixedThetaNLL, TabulatedNLL

__all__ = ["FitResult", "SignalFitter"]

log = logging.getLogger(__name__)

PARAM_NAMES = ("mu", "mx", "my")  # the extended likelihood adds "nu_b"


@dataclass
class FitResult:
    """Outcome of one fit; prints as a table and round-trips through JSON.

    Attributes
    ----------
    values, errors : dict
        Best-fit values and HESSE (observed Fisher information) errors of ``mu``, ``mx``, ``my``;
        errors are absent for parameters that were fixed or when HESSE was not run.
    covariance : list of lists or None
        HESSE covariance of the floating parameters, in the order of ``floating``.
    valid : bool
        Minuit's ``fmin.is_valid`` (and, with HESSE, an accurate, positive-definite covariance).
    nll : float
        Minimum of the loss (constant Σ log p_B omitted), including penalties.
    """

    values: dict[str, float]
    errors: dict[str, float] = field(default_factory=dict)
    minos: dict[str, tuple[float, float]] = field(default_factory=dict)
    covariance: list[list[float]] | None = None
    floating: tuple[str, ...] = PARAM_NAMES
    valid: bool = False
    converged: bool = False
    at_limit: bool = False
    nll: float = math.nan
    edm: float = math.nan
    n_calls: int = 0
    time_s: float = 0.0
    n_events: int = 0
    truth: dict[str, float] | None = None
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["floating"] = list(self.floating)
        d["minos"] = {k: list(v) for k, v in self.minos.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FitResult:
        d = dict(d)
        d["floating"] = tuple(d.get("floating", PARAM_NAMES))
        d["minos"] = {k: tuple(v) for k, v in d.get("minos", {}).items()}
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` if given."""
        return dump_json(self.to_dict(), path, indent=2)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> FitResult:
        """From a JSON file or JSON text written by :meth:`to_json`; :class:`DataFileError` if it is not one."""
        return load_json_record(cls, text_or_path, "a fit result")

    def __str__(self) -> str:
        status = "valid" if self.valid else "INVALID"
        lines = [
            (
                f"FitResult ({status}, NLL = {self.nll:.3f}, edm = {self.edm:.2g}, {self.n_calls} calls, "
                f"{self.time_s:.1f} s, {self.n_events} events)"
            ),
            f"  {'param':<6}{'value':>12}{'hesse':>11}{'minos':>24}{'truth':>11}",
        ]
        for name in PARAM_NAMES:
            v = self.values.get(name, math.nan)
            e = self.errors.get(name)
            lo_hi = self.minos.get(name)
            t = (self.truth or {}).get(name)
            fmt = (lambda x: f"{x:.4g}") if name == "mu" else (lambda x: f"{x:.1f}")
            minos = (
                f"-{abs(lo_hi[0]):.3g} / +{lo_hi[1]:.3g}"
                if lo_hi
                else ("fixed" if name not in self.floating else "")
            )
            lines.append(
                f"  {name:<6}{fmt(v):>12}{('±' + f'{e:.2g}') if e is not None else '':>11}{minos:>24}"
                f"{fmt(t) if t is not None else '':>11}"
            )
        return "\n".join(lines)


class SignalFitter:
    """Fit μ and θ = (mX, mY) of SR data with any ratio model, with Minuit.

    Two backends give the same answer (tested): ``"fast"`` (default) minimises the compiled
    :class:`~gbi_zfit.inference.engine.RatioNLL` with iminuit directly, reusing θ-independent per-event
    work; ``"zfit"`` minimises zfit's ``UnbinnedNLL`` of a :class:`~gbi_zfit.pdf.RatioPDF` with
    ``zfit.minimize.Minuit`` — the same objects a user puts in their own zfit model (:attr:`loss`,
    :attr:`pdf`, :attr:`params` exist for both backends, e.g. for hepstats).

    Parameters
    ----------
    ratio_model : RatioModel
        Λ(x | θ), e.g. :class:`~gbi_zfit.models.OracleRatio`.
    data : Events or ndarray (n, d)
        SR events (features of ``ratio_model.feature_set``).
    backend : {"fast", "zfit"}
        Minimisation backend.
    reference : ndarray (n_ref, d), optional
        SR background reference sample (for sampling toys from the fitted model).
    mu_bounds : (float, float)
        Limits of μ (default [0, 1]; a lower bound < 0 allows unbiased negative fluctuations as long as
        μ Λ + 1 − μ stays positive).
    penalty : bool
        Add the low-mass exponential penalty (:func:`~gbi_zfit.pdf.low_mass_penalty`).
    penalty_threshold : float
        Mass in GeV below which the penalty acts (default 85).
    background_yield : (float, float), optional
        Extended likelihood with a Gaussian-constrained background yield ν_B (value, error), e.g. from
        the sideband p(mjj) fit; ``fast`` backend only.
    tol : float
        Convergence goal: the fit stops when the EDM is below ``tol`` (default 1e-3, as zfit).
    theta_table : bool, optional
        θ-fast fits (fast backend): MIGRAD, HESSE and MINOS run on log Λ tabulated per event on a θ grid
        (:class:`~gbi_zfit.inference.table.TabulatedNLL`): first on ``table_steps[0]`` GeV nodes, then on
        the finer ones around the minimum. The minimum is checked against the exact NLL
        (``result.info["table"]``); if the table's NLL or its distance to the exact minimum (the exact
        NLL gained one Newton step away) exceeds ``table_tol``, the last table is refined once (half the
        spacing). Default: on for models that are expensive per θ (``RatioModel.theta_fast_preferred``,
        e.g. classifier ensembles), off for the oracle. Whatever the model, a fast fit with θ fixed
        evaluates Λ once and then only sums over events.
    table_steps : tuple of float
        Node spacings (GeV) of the search and the final tables (default 25, 6.25).
    table_tol : float
        Accepted |ΔNLL| between table and exact NLL at the minimum, and exact-NLL gain of a Newton step.

    Examples
    --------
    >>> fitter = SignalFitter(OracleRatio(sim), sr_events)
    >>> result = fitter.fit(start={"mu": 0.003, "mx": 280.0, "my": 160.0}, minos=("mu",))
    >>> print(result)
    """

    def __init__(
        self,
        ratio_model: RatioModel,
        data: Events | np.ndarray,
        *,
        backend: str = "fast",
        reference: np.ndarray | None = None,
        mu_bounds: tuple[float, float] = (0.0, 1.0),
        penalty: bool = True,
        penalty_threshold: float = 85.0,
        background_yield: tuple[float, float] | None = None,
        tol: float = 1e-3,
        theta_table: bool | None = None,
        table_steps: tuple[float, ...] = (25.0, 6.25),
        table_tol: float = 0.01,
    ):
        if not isinstance(ratio_model, RatioModel):
            raise InputError(
                f"ratio_model must be a gbi_zfit RatioModel (e.g. OracleRatio, ClassifierEnsemble), got "
                f"{type(ratio_model).__name__}"
            )
        if backend not in ("fast", "zfit"):
            raise InputError(f"backend must be 'fast' or 'zfit', got {backend!r}")
        try:
            mu_bounds = tuple(float(v) for v in mu_bounds)
        except (TypeError, ValueError):
            raise ParameterRangeError(
                f"mu_bounds must be a pair of numbers (low, high), got {mu_bounds!r}"
            ) from None
        if len(mu_bounds) != 2:
            raise ParameterRangeError(f"mu_bounds must be a pair (low, high), got {mu_bounds!r}")
        if not (isinstance(tol, (int, float, np.integer, np.floating)) and math.isfinite(tol) and tol > 0):
            raise InputError(f"tol must be a finite number > 0, got {tol!r}")
        if penalty and not (
            isinstance(penalty_threshold, (int, float, np.integer, np.floating))
            and math.isfinite(penalty_threshold)
        ):
            raise InputError(f"penalty_threshold must be a finite mass in GeV, got {penalty_threshold!r}")
        if backend == "zfit" and background_yield is not None:
            raise InputError(
                "the extended likelihood (background_yield) is available with backend='fast' only"
            )
        try:
            steps = tuple(float(v) for v in table_steps)
        except (TypeError, ValueError):
            raise InputError(
                f"table_steps must be a sequence of spacings in GeV, got {table_steps!r}"
            ) from None
        if not steps or min(steps) <= 0 or not all(math.isfinite(v) for v in steps):
            raise InputError(f"table_steps must be positive spacings in GeV, got {table_steps!r}")
        if not (isinstance(table_tol, (int, float, np.integer, np.floating)) and 0 < table_tol < math.inf):
            raise InputError(f"table_tol must be a positive number (NLL units), got {table_tol!r}")
        self.theta_table = (
            bool(getattr(ratio_model, "theta_fast_preferred", False))
            if theta_table is None
            else bool(theta_table)
        )
        self.table_steps, self.table_tol = steps, float(table_tol)
        self._tables: dict[float, TabulatedNLL] = {}
        self._search_only = False  # multi-start candidates: the coarse table only
        self._fixed = None  # (engine version, mX, mY) and its FixedThetaNLL
        self.backend = backend
        self.ratio_model = ratio_model
        self.tol = float(tol)
        self.space = feature_space(ratio_model.feature_set)
        self.data = to_zfit_data(data, self.space, ratio_model.feature_set)
        self.engine = RatioNLL(
            ratio_model,
            self.data.value().numpy(),
            penalty_threshold=penalty_threshold if penalty else None,
            background_yield=background_yield,
        )
        self.limits = self.engine.default_limits(mu_bounds)
        lo, hi = self.limits["mu"]
        (mx_lo, mx_hi), (my_lo, my_hi) = self.limits["mx"], self.limits["my"]
        self.mu = zfit.Parameter("mu", max(lo, min(0.01, hi)), lo, hi, step_size=1e-4)
        self.mx = zfit.Parameter("mx", 0.5 * (mx_lo + mx_hi), mx_lo, mx_hi, step_size=1.0)
        self.my = zfit.Parameter("my", 0.5 * (my_lo + my_hi), my_lo, my_hi, step_size=1.0)
        self._extra = {"nu_b": background_yield[0]} if background_yield is not None else {}
        self.pdf = RatioPDF(self.space, ratio_model, self.mu, self.mx, self.my, reference=reference)
        constraints = [low_mass_penalty(self.mx, self.my, threshold=penalty_threshold)] if penalty else []
        self.loss = zfit.loss.UnbinnedNLL(self.pdf, self.data, constraints=constraints)
        self.minimizer = zfit.minimize.Minuit(tol=tol, gradient="zfit")

    @property
    def params(self) -> dict[str, zfit.Parameter]:
        return {"mu": self.mu, "mx": self.mx, "my": self.my}

    @property
    def param_names(self) -> tuple[str, ...]:
        return self.engine.param_names

    @property
    def values(self) -> dict[str, float]:
        """Current parameter values."""
        out = {n: float(p.value()) for n, p in self.params.items()}
        out.update(self._extra)
        return out

    def set_values(self, values: dict[str, float]) -> None:
        """Set parameter values, checking names and limits."""
        if not isinstance(values, Mapping):
            raise InputError(f"values must be a dict {{name: value}}, got {type(values).__name__}")
        for name, val in values.items():
            if name not in self.param_names:
                raise InputError(f"unknown parameter {name!r}; parameters are {self.param_names}")
            lo, hi = self.limits[name]
            try:
                val = float(val)
            except (TypeError, ValueError):
                raise ParameterRangeError(f"value of {name} must be a number, got {val!r}") from None
            if not (np.isfinite(val) and lo < val < hi):
                raise ParameterRangeError(
                    f"start value {name} = {val} is not strictly inside its limits ({lo}, {hi})"
                )
            if name in self._extra:
                self._extra[name] = float(val)
            else:
                self.params[name].set_value(float(val))

    def nll(self, values: dict[str, float] | None = None) -> float:
        """Loss value at ``values`` (or at the current values); same for both backends."""
        if values:
            self.set_values(values)
        v = self.values
        return self.engine([v[n] for n in self.param_names])

    def fit(
        self,
        start: dict[str, float] | None = None,
        *,
        fix: tuple[str, ...] = (),
        hesse: bool = True,
        minos: tuple[str, ...] = (),
        truth: dict[str, float] | None = None,
        require_valid: bool = False,
        retries: int = 2,
        ncall: int | None = None,
    ) -> FitResult:
        """Run MIGRAD (then HESSE, optionally MINOS) from ``start``.

        Parameters
        ----------
        start : dict, optional
            Starting values by name; unspecified parameters keep their current values.
        fix : tuple of str
            Parameters held constant (e.g. ``("mx", "my")`` for a fixed-θ fit).
        hesse : bool
            Compute HESSE errors and covariance.
        minos : tuple of str
            Parameters to get MINOS intervals for.
        truth : dict, optional
            True values, stored in the result for reference.
        require_valid : bool
            Raise :class:`~gbi_zfit.errors.FitError` (with Minuit's diagnostics) instead of returning an
            invalid result.
        retries : int
            Invalid minima are retried this many times (fast backend): MIGRAD again from where it
            stopped, then with strategy 2.
        ncall : int, optional
            Call limit of each MIGRAD run (fast backend; default: Minuit's).
        """
        fix = (fix,) if isinstance(fix, str) else tuple(fix)
        minos = (minos,) if isinstance(minos, str) else tuple(minos)
        unknown = [n for n in (*fix, *minos) if n not in self.param_names]
        if unknown:
            raise InputError(f"unknown parameter(s) {unknown}; parameters are {self.param_names}")
        if start:
            self.set_values(start)
        floating = tuple(n for n in self.param_names if n not in fix)
        if not floating:
            raise InputError("all parameters are fixed: nothing to fit")
        t0 = time.perf_counter()
        self._check_finite_start(floating)
        if self.backend == "fast":
            out, diag = self._fit_fast(floating, hesse, minos, retries, ncall)
        else:
            out, diag = self._fit_zfit(floating, hesse, minos)
        out.truth = truth
        out.n_events = int(self.engine.n_events)
        out.info["backend"] = self.backend
        out.time_s = time.perf_counter() - t0
        _canonical_order(out, self)
        if require_valid and not out.valid:
            raise FitError(
                f"the fit did not converge to a valid minimum (edm = {out.edm:.3g}, at limit = {out.at_limit}); "
                "try other starting values or check the data",
                diagnostics={"minuit": diag, **out.to_dict()},
            )
        return out

    def _check_finite_start(self, floating) -> None:
        """A typed error instead of a NaN fit when the NLL cannot be evaluated at the start values."""
        v = self.values
        if math.isfinite(self._objectives(floating)[0]([v[n] for n in self.param_names])):
            return
        if v["mu"] < 0:
            raise ParameterRangeError(
                f"the NLL is not finite at the start μ = {v['mu']:.4g}: μ Λ + 1 − μ ≤ 0 for some events "
                "(a negative μ is allowed only while every event keeps a positive density); start at μ ≥ 0 "
                "or raise the lower bound of μ (mu_bounds)"
            )
        raise FitError(
            f"the NLL is not finite at the start values {v}; the ratio model returns NaN/inf for these "
            "events (check the model and the input features)",
            diagnostics={"values": v},
        )

    def table(self, step: float) -> TabulatedNLL:
        """The θ table of the current events and weights with node spacing ``step`` (built on first use)."""
        tab = self._tables.get(step)
        if tab is None or tab.stale:
            if any(t.stale for t in self._tables.values()):
                self._tables = {}
            tab = self._tables[step] = TabulatedNLL(self.engine, step=step)
        return tab

    def _objectives(self, floating):
        """The functions MIGRAD minimises in turn (the last one also gets HESSE and MINOS)."""
        if self.backend != "fast":
            return [self.engine]
        if "mx" not in floating and "my" not in floating:  # Λ once, then sums over events
            v = self.values
            key = (self.engine.data_version, v["mx"], v["my"])
            if self._fixed is None or self._fixed[0] != key:
                self._fixed = (key, FixedThetaNLL(self.engine, v["mx"], v["my"]))
            return [self._fixed[1]]
        if not self.theta_table:
            return [self.engine]
        return [self.table(st) for st in self.table_steps]

    def _migrad(self, fcn, start, floating, retries, ncall):
        names = self.param_names
        m = Minuit(fcn, [start[n] for n in names], grad=fcn.grad, name=names)
        m.errordef = Minuit.LIKELIHOOD
        m.tol = self.tol / (0.002 * Minuit.LIKELIHOOD)  # iminuit stops at EDM < 0.002 · tol · errordef
        for n in names:
            m.limits[n] = self.limits[n]
            m.fixed[n] = n not in floating
        m.migrad(ncall=ncall)
        attempts = 0
        while not m.valid and attempts < retries:
            attempts += 1
            if attempts >= 2:
                m.strategy = 2
            m.migrad(ncall=ncall)
        return m, attempts

    def _fit_fast(self, floating, hesse, minos, retries, ncall):
        names = self.param_names
        objectives = self._objectives(floating)
        if self._search_only:
            objectives = objectives[:1]
        start = self.values
        used = []
        for fcn in objectives:
            m, attempts = self._migrad(fcn, start, floating, retries, ncall)
            used.append(m)
            start = {n: float(m.values[n]) for n in names}
        table_info = None
        if isinstance(objectives[-1], TabulatedNLL) and not self._search_only:
            m, attempts, more, table_info = self._check_table(m, attempts, floating, retries, ncall)
            used += more
        out = FitResult(
            values={n: float(m.values[n]) for n in names},
            floating=floating,
            valid=bool(m.valid),
            converged=bool(m.fmin.is_valid and not m.fmin.has_reached_call_limit),
            at_limit=bool(m.fmin.has_parameters_at_limit),
            nll=float(m.fval),
            edm=float(m.fmin.edm),
            info={"retries": attempts},
        )
        if hesse and m.valid:
            m.hesse()
            out.errors = {n: float(m.errors[n]) for n in floating}
            out.covariance = np.asarray(m.covariance)[
                np.ix_(*[[names.index(n) for n in floating]] * 2)
            ].tolist()
            out.valid = bool(m.valid and m.fmin.has_accurate_covar)
        if minos and m.valid:
            m.minos(*minos)
            out.minos = {n: (float(m.merrors[n].lower), float(m.merrors[n].upper)) for n in minos}
        out.n_calls = int(sum(mi.nfcn + mi.ngrad for mi in dict.fromkeys(used)))
        if table_info is not None:
            if "exact_nll" in table_info:  # the exact NLL at the minimum, not the interpolated one
                out.nll = table_info["exact_nll"]
            table_info["tables"] = [t.summary() for t in self._tables.values()]
            out.info["table"] = table_info
        self.set_values({n: v for n, v in out.values.items() if self._inside(n, v)})
        return out, str(m.fmin)

    def _check_table(self, m, attempts, floating, retries, ncall):
        """Check the tabulated minimum against the exact NLL (``result.info["table"]``); refine once.

        Measures ΔNLL = table − exact at the minimum and ``exact_gain``: how much lower the exact NLL is
        after the Newton step −C g_exact (C: HESSE covariance of the table; the step and its half are
        tried), i.e. how far the table's minimum is from the exact one along the most promising
        direction. (The exact NLL of a ReLU ensemble is only piecewise smooth in θ, so its own gradient is
        not a reliable distance to its minimum; these two numbers are.) If either exceeds ``table_tol``,
        MIGRAD runs once more on a table of half the node spacing and the check is repeated there; a
        warning is logged if the result still misses it by more than a factor 5.
        """
        names = self.param_names
        idx = [names.index(n) for n in floating]
        step, used = self.table_steps[-1], []
        for refine in (False, True):
            if not m.valid:
                return m, attempts, used, {"step": step, "check": {}, "accurate": False}
            tab = self.table(step)
            m.hesse()
            cov = np.asarray(m.covariance)[np.ix_(idx, idx)]
            p0 = np.array([float(m.values[n]) for n in names])
            check = tab.exact_check(p0, cov, floating)
            newton = np.zeros_like(p0)
            newton[idx] = -cov @ np.asarray(check["exact_grad"])[idx]
            best = check["exact_nll"]
            for frac in (1.0, 0.5):
                p = p0 + frac * newton
                if all(self._inside(n, v) for n, v in zip(names, p, strict=True)):
                    best = min(best, tab.exact_nll(p))
            gain = float(check["exact_nll"] - best)
            ok = bool(abs(check["delta_nll"]) <= self.table_tol and gain <= self.table_tol)
            if ok or refine:
                break
            log.info(
                "θ table of %.3g GeV: ΔNLL %.3g, exact gain %.3g; refining", step, check["delta_nll"], gain
            )
            step /= 2
            m, attempts = self._migrad(
                self.table(step), dict(zip(names, p0, strict=True)), floating, retries, ncall
            )
            used.append(m)
        if max(abs(check["delta_nll"]), gain) > 5 * self.table_tol:  # below: noted in info["table"] only
            log.warning(
                "θ table of %.3g GeV: the interpolated NLL differs from the exact one by %.3g at the minimum "
                "and the exact NLL is %.3g lower one Newton step away; pass finer table_steps (or "
                "theta_table=False) for a more precise fit",
                step,
                check["delta_nll"],
                gain,
            )
        info = {"step": step, "check": check, "exact_gain": gain, "accurate": ok}
        info["exact_nll"] = float(check["exact_nll"])
        return m, attempts, used, info

    def _inside(self, name, value) -> bool:
        lo, hi = self.limits[name]
        return lo < value < hi

    def _fit_zfit(self, floating, hesse, minos):
        try:
            result = self.minimizer.minimize(self.loss, params=[self.params[n] for n in floating])
        except FailMinimizeNaN as exc:
            raise FitError(
                f"the zfit minimisation met NaN values of the NLL near {self.values} (for μ < 0: μ Λ + 1 − μ "
                "≤ 0 for some events); raise the lower bound of μ or use other starting values",
                diagnostics={"values": self.values},
            ) from exc
        out = FitResult(
            values=self.values,
            floating=floating,
            valid=bool(result.valid),
            converged=bool(result.converged),
            at_limit=bool(result.params_at_limit),
            nll=float(result.fmin),
            edm=float(result.edm),
            n_calls=int(result.info.get("n_eval", 0) or 0),
        )
        if hesse and result.valid:
            errs = result.hesse(name="hesse")
            out.errors = {p.name: float(e["error"]) for p, e in errs.items()}
            out.covariance = np.asarray(result.covariance(params=[self.params[n] for n in floating])).tolist()
            out.valid = bool(result.valid)
        if minos and result.valid:
            errs, _ = result.errors(params=[self.params[n] for n in minos], name="minos")
            out.minos = {p.name: (float(e["lower"]), float(e["upper"])) for p, e in errs.items()}
        return out, str(result.info.get("minuit", ""))

    def theta_grid(self, step: float = 50.0) -> np.ndarray:
        """Canonical (mX ≥ mY) grid of θ over the ratio model's range, ``step`` GeV apart."""
        (x_lo, x_hi), (y_lo, y_hi) = self.ratio_model.theta_bounds
        # strictly inside the limits: zfit refuses values on a limit
        xs = np.arange(np.floor(x_lo / step + 1) * step, x_hi, step)
        ys = np.arange(np.floor(y_lo / step + 1) * step, y_hi, step)
        return np.array([(a, b) for a in xs for b in ys if a >= b], dtype=np.float64)

    def fit_multistart(
        self,
        *,
        grid_step: float = 50.0,
        mu_probe: float | None = None,
        n_starts: int = 3,
        minos: tuple[str, ...] = (),
        truth: dict[str, float] | None = None,
        require_valid: bool = False,
        hesse: bool = True,
        extra_starts: tuple[Mapping[str, float], ...] = (),
    ) -> FitResult:
        """Fit from the most promising points of a coarse θ grid; keep the best valid minimum.

        The NLL is evaluated on the canonical grid (:meth:`theta_grid`) at a probe signal fraction
        ``mu_probe`` (default 2/√N, the size of a ~2σ signal); MIGRAD then starts from the ``n_starts``
        best grid points — skipping a point within one grid step (in mX and mY, either order) of a
        minimum an earlier start already found, which lies in the same basin — and the valid fit with
        the lowest NLL is returned. Every start is recorded in ``result.info["starts"]`` (skipped ones
        in ``result.info["skipped_starts"]``). With a θ table the probe reads exact node values and the
        starts are fitted on the coarse table; only the final fit uses the fine one. ``hesse=False`` skips
        HESSE after the final fit (e.g. for toys that need only the minimum). ``extra_starts``: further
        starting points ({name: value}) tried after the grid's, with the same skipping rule (e.g. from a
        better probe of the likelihood, :mod:`gbi_zfit.inference.lee`).
        """
        grid = self.theta_grid(grid_step)
        mu_lo, mu_hi = self.limits["mu"]
        default_probe = 2.0 / np.sqrt(self.engine.n_events)
        probe = float(np.clip(default_probe if mu_probe is None else mu_probe, max(mu_lo, 1e-6), mu_hi))
        rest = [v for n, v in self.values.items() if n not in PARAM_NAMES]  # e.g. nu_b
        t0 = time.perf_counter()
        if self.backend == "fast" and self.theta_table:
            scores = self.table(self.table_steps[0]).node_nll(probe, grid, tuple(rest))
        else:
            scores = [self.engine([probe, mx, my, *rest]) for mx, my in grid]
        t_probe = time.perf_counter() - t0
        order = np.argsort(scores)[: max(1, int(n_starts))]
        fits, skipped = [], []
        self._search_only = True
        try:
            starts = [{"mu": probe, "mx": float(grid[i, 0]), "my": float(grid[i, 1])} for i in order]
            for start in starts + [dict(st) for st in extra_starts]:
                if any(_near(start, r.values, grid_step) for _, r in fits if r.valid):
                    skipped.append(start)  # next to a minimum already found: the same basin
                    continue
                res = self.fit(start, hesse=False)
                fits.append((start, res))
        finally:
            self._search_only = False
        valid = [f for f in fits if f[1].valid]
        _, best = min(valid or fits, key=lambda f: f[1].nll)
        final = self.fit(best.values, hesse=hesse, minos=minos, truth=truth, require_valid=require_valid)
        final.info["probe_time_s"] = t_probe
        final.info["starts"] = [
            {"start": st, "values": r.values, "nll": r.nll, "valid": r.valid} for st, r in fits
        ]
        final.info["skipped_starts"] = skipped
        final.info["grid_step"] = grid_step
        final.info["mu_probe"] = probe
        return final


def _near(start: Mapping[str, float], values: Mapping[str, float], step: float) -> bool:
    """Is the grid point ``start`` within one grid step of the minimum ``values`` (or its mirror image)?"""
    a, b = start["mx"], start["my"]
    x, y = values["mx"], values["my"]
    return (abs(a - x) <= step and abs(b - y) <= step) or (abs(a - y) <= step and abs(b - x) <= step)


def _canonical_order(res: FitResult, fitter: SignalFitter) -> None:
    """Report mX ≥ mY: the likelihood is symmetric under mX ↔ mY because jets are mass-ordered."""
    if res.values["mx"] >= res.values["my"] or (("mx" in res.floating) != ("my" in res.floating)):
        return
    swap = {"mx": "my", "my": "mx"}
    res.values = {swap.get(k, k): v for k, v in res.values.items()}
    res.errors = {swap.get(k, k): v for k, v in res.errors.items()}
    res.minos = {swap.get(k, k): v for k, v in res.minos.items()}
    if res.covariance is not None:
        names = [swap.get(n, n) for n in res.floating]
        order = [names.index(n) for n in res.floating]
        cov = np.asarray(res.covariance)[np.ix_(order, order)]
        res.covariance = cov.tolist()
    fitter.mx.set_value(res.values["mx"])
    fitter.my.set_value(res.values["my"])
