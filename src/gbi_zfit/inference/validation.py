"""Sideband validation of a learned GBI-PAWS model: the spurious signal on data that hold no signal.

On real data the truth is unknown, so the only place to see how much signal a learned background model
fakes is where there is none: the sidebands. :func:`validate_sidebands` treats windows of the SR's width
in the sidebands as pretend signal regions and runs the analysis there:

1. **A generator that has not seen the window.** By default the flow generator is retrained, with the
   settings of the analysis generator, on the sideband events outside the window (and outside the SR), so
   it interpolates into the window as the analysis generator interpolates into the SR
   (``retrain=False`` reuses the analysis generator instead: quicker, but it was trained on the window's
   events, so the spurious signal it shows is a lower bound).
2. **The learned ratio transported to the window.** The classifier ensemble learned
   Λ(x | θ) ≈ p_S(x | θ) / p_G(x | SR) against the analysis generator G. In a window W the ratio to test is
   p_S / p_GW(x | W), which is

       Λ_W(x | θ) = Λ(x | θ) · p_G(x | SR) / p_GW(x | W),

   a θ-independent per-event factor that the flow generators provide exactly (their densities, averaged
   over mjj at quantile nodes of p(mjj) in the SR and in the window; :class:`WindowRatio`). Its
   normalisation carries over too: E_{GW(W)}[Λ_W] = E_{G(SR)}[Λ] = 1, so κ(θ) is the analysis κ. No
   classifier is retrained, and the window tests the chain of generator *and* classifier as it is used.
3. **The analysis fit** (the blind multi-start of ``gbi fit``: μ, mX, mY free) on the window's data gives
   the spurious μ̂ and its local Z.

The spurious signal is summarised by σ_ss = max over windows of μ̂ (signal fractions transfer between
regions of different size: a background mismodelled by a fraction ε fakes μ̂ ≈ ε whatever the number of
events). It includes the statistical fluctuation of each window, so it is conservative — most so for
windows with few events (choose windows whose μ error is not much larger than the SR's); windows whose
fit is invalid are reported but not counted. It is the number
:class:`~gbi_zfit.inference.systematics.SpuriousSignal` reads (``gbi fit --spurious-signal validate.json``).

On the synthetic benchmark ``sim=LHCOSim()`` also fits every window with the exact oracle ratio
p_S / p_B,true(x | W) on the same events: a learned local Z above the oracle's is mismodelling.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from .._util import array_digest
from ..data.events import Events
from ..data.regions import DEFAULT_SR, SignalRegion
from ..errors import InputError, RegionError
from ..models.base import RatioModel
from ..parallel import ResultStore, spawn_seeds

__all__ = [
    "SidebandValidation",
    "WindowRatio",
    "WindowResult",
    "default_windows",
    "validate_sidebands",
]

SCHEMA = "gbi_zfit.validate/1"
#: Quantile nodes of p(mjj) for the mjj-averaged generator densities (midpoint rule in probability:
#: error O(1/K²) on a density that varies by ~10 % across a window).
N_MJJ_NODES = 16
#: Events per density evaluation (memory ∝ this × nodes).
_CHUNK = 32_768
#: Fewer events than this in a window: no meaningful fit.
_MIN_EVENTS = 1000


def default_windows(
    signal_region: SignalRegion = DEFAULT_SR,
    mjj_range: tuple[float, float] = (2650.0, 7000.0),
    *,
    below: int = 1,
    above: int = 2,
) -> list[tuple[float, float]]:
    """Windows of the SR's width next to it: ``below`` under the SR, ``above`` over it, inside ``mjj_range``.

    For the default SR [3300, 3700) GeV: [2900, 3300), [3700, 4100), [4100, 4500).
    """
    w = signal_region.high - signal_region.low
    lo, hi = mjj_range
    out = [(signal_region.low - (k + 1) * w, signal_region.low - k * w) for k in range(below)]
    out = [win for win in reversed(out) if win[0] >= lo]
    out += [
        (signal_region.high + k * w, signal_region.high + (k + 1) * w)
        for k in range(above)
        if signal_region.high + (k + 1) * w <= hi
    ]
    if not out:
        raise RegionError(f"no validation window of width {w:g} GeV fits in the sidebands of {mjj_range}")
    return [(float(a), float(b)) for a, b in out]


def _check_windows(windows, signal_region: SignalRegion) -> list[tuple[float, float]]:
    out = []
    for win in windows:
        try:
            a, b = (float(v) for v in win)
        except (TypeError, ValueError):
            raise InputError(f"a window is a pair (low, high) of mjj values in GeV, got {win!r}") from None
        if not (math.isfinite(a) and math.isfinite(b) and a < b):
            raise InputError(f"window ({a}, {b}) GeV must have finite edges with low < high")
        if a < signal_region.high and b > signal_region.low:
            raise RegionError(
                f"window [{a:g}, {b:g}) GeV overlaps the signal region {signal_region}; validation windows "
                "lie in the sidebands, where there is no signal"
            )
        out.append((a, b))
    if not out:
        raise InputError("give at least one validation window")
    return out


# ----------------------------------------------------------------------------------------------------
# the ratio in a window
# ----------------------------------------------------------------------------------------------------
class WindowRatio(RatioModel):
    """A ratio model times a θ-independent per-event factor: log Λ_W = log Λ(x | θ) + c(x).

    ``c`` maps events (n, d) to c(x) (n,); it is evaluated once per data set (:meth:`precompute`), so a fit
    costs what a fit of ``base`` costs (θ tables included). ``c`` is a numpy function: use the model with
    :class:`~gbi_zfit.inference.fit.SignalFitter` (eager precompute), not inside a zfit graph.
    """

    def __init__(self, base: RatioModel, log_correction: Callable[[np.ndarray], np.ndarray]):
        self.base = base
        self.log_correction = log_correction
        self.feature_set = base.feature_set
        self.theta_bounds = base.theta_bounds
        self.theta_fast_preferred = base.theta_fast_preferred

    def _c(self, x) -> tf.Tensor:
        c = np.asarray(self.log_correction(np.asarray(x, np.float64)), np.float64).reshape(-1)
        if len(c) != len(x) or np.isnan(c).any():
            raise InputError("the window correction c(x) must be one number (not NaN) per event")
        return tf.constant(c)

    def log_ratio(self, x, mx, my) -> tf.Tensor:
        return self.base.log_ratio(x, mx, my) + self._c(x)

    def precompute(self, x) -> tuple[tf.Tensor, ...]:
        return (*self.base.precompute(x), self._c(x))

    def log_ratio_precomputed(self, aux, mx, my) -> tf.Tensor:
        return self.base.log_ratio_precomputed(aux[:-1], mx, my) + aux[-1]

    def log_ratio_nodes(self, aux, theta, *, derivatives: bool = False) -> np.ndarray:
        out = self.base.log_ratio_nodes(aux[:-1], theta, derivatives=derivatives)
        c = aux[-1].numpy()
        if derivatives:
            out[:, 0, :] += c  # the derivatives in θ are the base's
        else:
            out += c
        return out


def _mjj_nodes_of_fit(mjj_fit, low: float, high: float, k: int = N_MJJ_NODES) -> np.ndarray:
    """Equal-probability nodes of the fitted p(mjj) on [low, high)."""
    fa, fb = mjj_fit.cdf(np.array([low, high]))
    return mjj_fit.inverse_cdf(fa + (np.arange(k) + 0.5) / k * (fb - fa))


def _mjj_nodes_of_data(mjj: np.ndarray, k: int = N_MJJ_NODES) -> np.ndarray:
    """Equal-probability nodes of the empirical p(mjj) of the window's events."""
    return np.quantile(mjj, (np.arange(k) + 0.5) / k)


def _log_density(generator, x: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """log p_G(x) averaged over mjj at equal-weight ``nodes`` (chunked: bounded memory)."""
    log_w = np.full(len(nodes), -math.log(len(nodes)))
    return np.concatenate(
        [
            np.asarray(generator.log_prob_marginal(x[i : i + _CHUNK], nodes, log_w))
            for i in range(0, len(x), _CHUNK)
        ]
    )


def _exact_log_density(sim, x: np.ndarray, low: float, high: float, k: int = 32) -> np.ndarray:
    """log p_B,true(x | mjj ∈ [low, high)) of the benchmark (Gauss–Legendre over mjj)."""
    from ..data.benchmark import gauss_legendre

    nodes, w = gauss_legendre(low, high, k)
    log_w = np.log(w) + sim.log_pb_mjj(nodes)
    log_w -= np.logaddexp.reduce(log_w)
    terms = [sim.log_pb_x_given_mjj(x, np.full(len(x), m)) + lw for m, lw in zip(nodes, log_w, strict=True)]
    return np.logaddexp.reduce(np.stack(terms), axis=0)


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------
@dataclass
class WindowResult:
    """The blind fit of one validation window.

    Attributes
    ----------
    low, high : float
        Window edges in mjj (GeV).
    n_events : int
        Data events in the window.
    mu_hat, mu_error : float
        Spurious signal fraction and its HESSE error.
    mx, my : float
        Fitted masses (GeV).
    z_local : float
        √q0 at θ̂ (a local significance: θ floats).
    valid : bool
        Whether the final MIGRAD converged.
    generator : str
        ``"retrained"`` (without the window's events) or ``"reused"`` (the analysis generator).
    oracle : dict or None
        The same fit with the exact oracle ratio (benchmark only): mu_hat, mu_error, mx, my, z_local.
    """

    low: float
    high: float
    n_events: int
    mu_hat: float
    mu_error: float
    mx: float
    my: float
    z_local: float
    valid: bool
    generator: str
    time_s: float = 0.0
    oracle: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowResult:
        return cls(**d)


@dataclass
class SidebandValidation:
    """Spurious signal of a learned model in sideband windows; :attr:`sigma_mu` is the systematic.

    Attributes
    ----------
    windows : list of WindowResult
    sigma_mu : float
        max over windows of μ̂ (≥ 0): the spurious-signal systematic σ_ss on μ. Windows whose fit is
        invalid are listed but not counted (unless no fit is valid).
    info : dict
        Settings (generator reuse, mjj nodes, model paths).
    """

    windows: list[WindowResult]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def _counted(self) -> list[WindowResult]:
        """The windows σ_ss is taken from: those with a valid fit (all, if none is valid)."""
        return [w for w in self.windows if w.valid] or list(self.windows)

    @property
    def sigma_mu(self) -> float:
        return float(max(max(w.mu_hat, 0.0) for w in self._counted))

    @property
    def max_z(self) -> float:
        return float(max(w.z_local for w in self._counted))

    def to_dict(self) -> dict[str, Any]:
        worst = max(self._counted, key=lambda w: w.mu_hat)
        return {
            "schema": SCHEMA,
            "spurious_signal": {
                "sigma_mu": self.sigma_mu,
                "definition": "max over sideband windows (valid fits) of the blind-fit mu_hat",
                "window": [worst.low, worst.high],
                "max_z_local": self.max_z,
            },
            "windows": [w.to_dict() for w in self.windows],
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SidebandValidation:
        return cls([WindowResult.from_dict(w) for w in d["windows"]], dict(d.get("info", {})))

    def __str__(self) -> str:
        lines = ["sideband validation (blind fits; μ̂ is spurious signal):"]
        head = f"  {'window (GeV)':>16} {'events':>8} {'μ̂':>10} {'± σ':>9} {'mX':>6} {'mY':>6} {'Z_loc':>6}"
        has_oracle = any(w.oracle for w in self.windows)
        lines.append(head + ("   oracle μ̂ / Z_loc" if has_oracle else ""))
        for w in self.windows:
            row = (
                f"  [{w.low:5.0f}, {w.high:5.0f}) {w.n_events:8d} {w.mu_hat:10.5f} {w.mu_error:9.5f} "
                f"{w.mx:6.0f} {w.my:6.0f} {w.z_local:6.2f}" + ("" if w.valid else "  (invalid fit)")
            )
            if w.oracle:
                row += f"   {w.oracle['mu_hat']:.5f} / {w.oracle['z_local']:.2f}"
            lines.append(row + ("" if w.generator == "retrained" else "  [generator reused]"))
        lines.append(
            f"  spurious signal σ_ss = max μ̂ = {self.sigma_mu:.5f} (largest local Z {self.max_z:.2f}); "
            "include it with `gbi fit --spurious-signal validate.json`"
        )
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------------
def _fit_window(ratio: RatioModel, x: np.ndarray, fit_kwargs) -> dict[str, float]:
    from .fit import SignalFitter
    from .lee import local_significance

    fitter = SignalFitter(ratio, x)
    res = fitter.fit_multistart(**fit_kwargs)
    _, z = local_significance(res)
    return {
        "mu_hat": float(res.values["mu"]),
        "mu_error": float(res.errors.get("mu", math.nan)),
        "mx": float(res.values["mx"]),
        "my": float(res.values["my"]),
        "z_local": float(z),
        "valid": bool(res.valid),
    }


def validate_sidebands(
    events: Events,
    ensemble: RatioModel,
    generator,
    *,
    windows: Sequence[tuple[float, float]] | None = None,
    retrain: bool = True,
    signal_region: SignalRegion = DEFAULT_SR,
    sim=None,
    seed: int | np.random.SeedSequence | None = 0,
    store_path=None,
    fit_kwargs: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> SidebandValidation:
    """Fit the learned ratio in sideband windows of ``events``; the spurious signal per window.

    Parameters
    ----------
    events : Events
        The data (all mjj); the windows' events are fitted, the rest train the window generators.
    ensemble : RatioModel
        The analysis ratio (e.g. a :class:`~gbi_zfit.models.ClassifierEnsemble`), trained against
        ``generator``'s SR background.
    generator : FlowGenerator
        The analysis generator (its settings are reused for the retrained ones; its ``metadata["mjj_fit"]``
        gives p(mjj) in the SR).
    windows : list of (low, high), optional
        Default :func:`default_windows`.
    retrain : bool
        Retrain the generator without each window's events (default; honest) or reuse ``generator``.
    sim : LHCOSim, optional
        The benchmark: also fit each window with the exact oracle ratio (synthetic data only).
    seed
        Seeds the retraining (one child per window).
    store_path : path, optional
        JSON Lines store of finished windows: a rerun resumes (a window costs a generator training).
    fit_kwargs : dict, optional
        Passed to :meth:`~gbi_zfit.inference.fit.SignalFitter.fit_multistart`.
    identity : dict, optional
        What identifies the models (e.g. digests of their bundles); part of the store's configuration
        together with a digest of the events, so a store of other data or models is refused, never reused.

    Raises
    ------
    InputError
        The generator has no density (a CFM), or windows are malformed.
    RegionError
        A window overlaps the SR or holds fewer than 1000 events.
    """
    from ..data.mjj import MjjFitResult
    from ..models.flowgen import FlowGenerator

    if not hasattr(generator, "log_prob_marginal"):
        raise InputError(
            f"sideband validation needs a generator with a density (a flow generator, `gbi train generator`); "
            f"got {type(generator).__name__}"
        )
    mjj_fit_d = (getattr(generator, "metadata", None) or {}).get("mjj_fit")
    if not mjj_fit_d:
        raise InputError(
            "the generator bundle records no p(mjj) sideband fit (metadata['mjj_fit']); retrain it"
        )
    mjj_fit = MjjFitResult.from_dict(mjj_fit_d)
    windows = _check_windows(
        windows or default_windows(signal_region, tuple(mjj_fit.mjj_range)), signal_region
    )
    fit_kwargs = dict(fit_kwargs or {})
    mjj = np.asarray(events.mjj, np.float64)
    x_all = events.features("paws")
    in_sr = signal_region.contains(mjj)
    sr_nodes = _mjj_nodes_of_fit(mjj_fit, signal_region.low, signal_region.high)
    info = {
        "retrain": bool(retrain),
        "mjj_nodes": N_MJJ_NODES,
        "signal_region": [signal_region.low, signal_region.high],
        "fit": fit_kwargs,
        "oracle": sim is not None,
    }
    store = None
    if store_path is not None:
        config = {
            "schema": SCHEMA,
            "windows": [list(w) for w in windows],
            "events_sha256": array_digest(x_all, mjj),
            "models": dict(identity or {}),
            **info,
        }
        store = ResultStore(store_path, config)
    seeds = spawn_seeds(seed, len(windows))
    results: list[WindowResult] = []
    for i, ((lo, hi), s) in enumerate(zip(windows, seeds, strict=True)):
        if store is not None and i in store:
            results.append(WindowResult.from_dict(store.results()[i]))
            log(f"window [{lo:g}, {hi:g}): from {store.path}")
            continue
        t0 = time.perf_counter()
        in_w = (mjj >= lo) & (mjj < hi)
        n_w = int(in_w.sum())
        if n_w < _MIN_EVENTS:
            raise RegionError(
                f"window [{lo:g}, {hi:g}) GeV holds {n_w} events (< {_MIN_EVENTS}); choose windows where the "
                "data are"
            )
        x_w = x_all[in_w]
        if retrain:
            rest = ~(in_w | in_sr)
            log(
                f"window [{lo:g}, {hi:g}): {n_w} events; training the generator on the {int(rest.sum())} others"
            )
            gen_w = FlowGenerator.train_sidebands(
                (x_all[rest], mjj[rest]),
                generator.generator_config,
                seed=s,
                signal_region=signal_region,
                progress=progress,
            )
        else:
            log(f"window [{lo:g}, {hi:g}): {n_w} events; reusing the analysis generator (trained on them)")
            gen_w = generator
        w_nodes = _mjj_nodes_of_data(mjj[in_w])
        c = _log_density(generator, x_w, sr_nodes) - _log_density(gen_w, x_w, w_nodes)
        if not np.isfinite(c).all():
            raise InputError(
                f"the generators give zero density to {int((~np.isfinite(c)).sum())} events of window "
                f"[{lo:g}, {hi:g}); the window lies outside what they model"
            )
        fit = _fit_window(WindowRatio(ensemble, lambda x, c=c: c), x_w, fit_kwargs)
        oracle = None
        if sim is not None:
            from ..models.oracle import OracleRatio

            c_true = sim.log_pb_x_sr(x_w) - _exact_log_density(sim, x_w, lo, hi)
            oracle = _fit_window(WindowRatio(OracleRatio(sim), lambda x, c=c_true: c), x_w, fit_kwargs)
            oracle.pop("valid")
        res = WindowResult(
            lo,
            hi,
            n_w,
            generator="retrained" if retrain else "reused",
            time_s=time.perf_counter() - t0,
            oracle=oracle,
            **fit,
        )
        log(
            f"  μ̂ = {res.mu_hat:.5f} ± {res.mu_error:.5f} at ({res.mx:.0f}, {res.my:.0f}) GeV, local Z = "
            f"{res.z_local:.2f}"
            + (f"; oracle μ̂ = {oracle['mu_hat']:.5f}, Z = {oracle['z_local']:.2f}" if oracle else "")
            + f" ({res.time_s:.0f} s)"
        )
        if store is not None:
            store.append(i, res.to_dict())
        results.append(res)
    return SidebandValidation(results, info)
