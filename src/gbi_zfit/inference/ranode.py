"""R-ANODE inference: the μ scan with a Gaussian-process likelihood curve, and Minuit fits of μ.

The data model is p_D = μ f + (1 − μ) p_B over SR events (x, mjj) (:mod:`gbi_zfit.models.ranode`). Every
likelihood below is measured **relative to μ = 0**:

    ΔlnL(μ) = Σ_i ln(μ f_i + (1 − μ) p_B,i) − Σ_i ln p_B,i = Σ_i ln(1 + μ (f_i / p_B,i − 1)),

so ΔlnL(0) = 0 exactly and q0 = 2 ΔlnL(μ̂) is the discovery test statistic.

Paper procedure (GBI paper §II.A and appendix A; :func:`scan_mu`)
    The SR events are split once into a training pool and a common test set (:class:`RANODEData`). At
    each μ of a grid (default 20 values, logspace 1e-5 … 1e-1) an ensemble of signal flows f is trained
    at that fixed μ (default 20 members, each with its own initialisation and train/validation split);
    the ensemble-averaged test ΔlnL(μ) is computed and its spread over bootstrap resamples of the
    members estimates the noise of each point. A Gaussian process in log10 μ interpolates the points
    (:func:`fit_likelihood_curve`); μ̂ is the maximum of the GP mean and the interval at confidence
    level α is where the mean stays within χ²_{α,1}/2 of it. Where the curve does not drop by that
    much towards the lowest μ of the grid, the interval extends to μ = 0 (ΔlnL is flat there).

    All likelihoods are evaluated on the test set only (by default half of the SR events), so the
    intervals are about √2 wider than a fit of all events with the same f would give. ``refine`` adds
    a second round of points inside the first-round interval (the remedy the paper suggests when the
    peak is narrower than the grid spacing).

Beyond the paper (:func:`fit_mu`)
    With f frozen (the ensemble trained at the scan's μ̂, or at any μ), μ floats in Minuit on the test
    set: MIGRAD, HESSE and MINOS at each confidence level; q0 = 2 ΔlnL(μ̂) and Z = √q0. The errors are
    those of μ *given* f: they do not include the uncertainty of f itself, and the fitted μ follows the
    μ f was trained at (on lhco-sim, d μ̂ / d μ_train ≈ 0.85), which is why the paper scans instead.

What μ̂ measures with a learned f
    With the exact p_S as f the estimate is unbiased. A small learned f, however, models the part of the
    signal it can resolve above p_B and leaves the rest to the background: on lhco-sim, whose jet-mass
    has 25 % low-mass tails under the background, f captures the events with both jets in the mass
    core (0.75² ≈ 56 % of the signal) and μ̂ ≈ 0.6–0.7 μ_true at S/√B = 3 — the same as an oracle fit
    with the exact *core-only* signal density (0.67–0.71 μ_true). The significance is barely affected
    (the tails carry little information). Expect μ̂ to estimate the resolvable signal fraction.

Oracle variants
    Both functions take density providers (:class:`~gbi_zfit.models.ranode.EventDensity`): p_B enters
    through :meth:`RANODEData.from_events` (flow ensemble + mjj fit, or the exact benchmark density), and
    ``signal`` is either ``None`` (learn f) or a fixed density such as the exact
    p_S(x, mjj | θ) (:class:`~gbi_zfit.models.ranode.ExactSignalDensity`, the ideal f of the paper's
    appendix A); a fixed f needs no training, the scan then evaluates the exact ΔlnL at the grid points.

:func:`run_ranode` chains the three steps (scan → f at μ̂ → Minuit) and is what a command-line tool
calls; every result is a dataclass with ``to_dict``/``from_dict`` and a readable ``str``.

Examples
--------
>>> from gbi_zfit.data.benchmark import LHCOSim
>>> from gbi_zfit.models.ranode import ExactBackgroundDensity, ExactSignalDensity
>>> sim = LHCOSim()
>>> events = sim.make_dataset(s_over_sqrt_b=3.0, mx=300, my=150, seed=1)
>>> data = RANODEData.from_events(events, ExactBackgroundDensity(sim), seed=2)
>>> oracle = run_ranode(data, ExactSignalDensity(sim, 300, 150))      # ideal f: no training
>>> learned = run_ranode(data, n_members=20, workdir="ranode_run")   # resumable
>>> print(learned)
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from scipy import stats

from .._util import dump_json
from ..data.events import Events, FeatureSet, get_feature_set
from ..data.regions import SignalRegion
from ..errors import InputError, ParameterRangeError
from ..models.ranode import EventDensity, SignalFlowEnsemble, child_seed, train_signal_flows

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_MU_GRID",
    "LikelihoodCurve",
    "MuFitResult",
    "MuScanResult",
    "RANODEData",
    "RANODEResult",
    "check_mu_grid",
    "delta_log_likelihood",
    "fit_likelihood_curve",
    "fit_mu",
    "run_ranode",
    "scan_mu",
]

#: Confidence levels of the intervals (68.27 % and 95 %).
DEFAULT_LEVELS: tuple[float, ...] = (0.6827, 0.95)
#: The paper's μ grid: 20 values, logspace 1e-5 … 1e-1.
DEFAULT_MU_GRID: np.ndarray = np.logspace(-5, -1, 20)
_BOOTSTRAP_KEY = 2**31 - 1
_LOG_R_MAX = 700.0  # f / p_B beyond e^700 would overflow; no physical density ratio comes near


def _level_key(cl: float) -> str:
    return f"{cl:.4g}"


def _train_flows(data: RANODEData, mus: Sequence[float], **kwargs: Any) -> list[SignalFlowEnsemble]:
    """Signal flows trained on the training pool of ``data`` at each μ in ``mus`` (kwargs as
    :func:`~gbi_zfit.models.ranode.train_signal_flows`)."""
    return train_signal_flows(
        data.x_train,
        data.mjj_train,
        data.log_pb_train,
        mus,
        feature_set=data.feature_set,
        signal_region=data.signal_region,
        **kwargs,
    )


def _threshold(cl: float) -> float:
    """Drop of lnL at confidence level ``cl`` for one parameter: χ²_{cl,1} / 2."""
    return 0.5 * float(stats.chi2.ppf(cl, 1))


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(c) for c in levels)
    if not out or not all(0.0 < c < 1.0 for c in out):
        raise InputError(f"confidence levels must be in (0, 1), got {levels!r}")
    return out


def check_mu_grid(mu_grid: Any) -> np.ndarray:
    """The μ grid as a float array; at least 3 strictly increasing values in (0, 1).

    Raises
    ------
    InputError
        Not a 1-d array of at least 3 strictly increasing finite values.
    ParameterRangeError
        Values outside (0, 1).
    """
    try:
        grid = np.asarray(mu_grid, np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"the μ grid must be a sequence of numbers, got {mu_grid!r}") from exc
    if grid.ndim != 1 or len(grid) < 3:
        raise InputError(f"the μ grid needs at least 3 values in a 1-d sequence, got shape {grid.shape}")
    if not np.isfinite(grid).all():
        raise InputError("the μ grid contains NaN/inf")
    if np.any(grid <= 0) or np.any(grid >= 1):
        raise ParameterRangeError(
            f"μ grid values must lie in (0, 1) (the scan is in log μ), got [{grid.min():g}, {grid.max():g}]"
        )
    if np.any(np.diff(grid) <= 0):
        raise InputError("the μ grid must be strictly increasing (no duplicates)")
    return grid


# --------------------------------------------------------------------------------------------------
# data


def _check_background(background: Any) -> None:
    if not isinstance(background, EventDensity):
        raise InputError(
            "background must be an EventDensity (e.g. ExactBackgroundDensity, FlowBackgroundDensity), "
            f"got {type(background).__name__}"
        )


@dataclasses.dataclass
class RANODEData:
    """SR events split into a training pool (for f) and a common test set, with log p_B per event.

    Attributes
    ----------
    x_train, mjj_train, log_pb_train
        Training pool: features (n, d), mjj (n,), log p_B(x, mjj | SR) (n,). Each signal-flow member
        draws its own train/validation split from it.
    x_test, mjj_test, log_pb_test
        The test set every likelihood is evaluated on.
    feature_set : FeatureSet
    signal_region : SignalRegion
    background : dict
        Description of the p_B provider.
    truth : dict, optional
        Known truth (benchmark data): ``mu`` (SR signal fraction), ``n_signal``, ``n_background``.
    """

    x_train: np.ndarray
    mjj_train: np.ndarray
    log_pb_train: np.ndarray
    x_test: np.ndarray
    mjj_test: np.ndarray
    log_pb_test: np.ndarray
    feature_set: FeatureSet
    signal_region: SignalRegion
    background: dict = dataclasses.field(default_factory=dict)
    truth: dict | None = None

    def __post_init__(self):
        d = self.feature_set.dim
        for part in ("train", "test"):
            x, mjj, lpb = (getattr(self, f"{a}_{part}") for a in ("x", "mjj", "log_pb"))
            if x.ndim != 2 or x.shape[1] != d or mjj.shape != (len(x),) or lpb.shape != (len(x),):
                raise InputError(
                    f"{part} arrays do not match: x {x.shape} (need (n, {d})), mjj {mjj.shape}, "
                    f"log_pb {lpb.shape}"
                )
            if not np.isfinite(lpb).all():
                raise InputError(
                    f"log p_B is not finite for {int((~np.isfinite(lpb)).sum())} {part} event(s); the "
                    "background density must be positive on every SR event"
                )
        if len(self.x_test) < 1:
            raise InputError("the test set is empty")

    def __repr__(self) -> str:
        truth = "" if not self.truth or "mu" not in self.truth else f", true μ = {self.truth['mu']:.4g}"
        return (
            f"RANODEData({self.n_train} training + {self.n_test} test SR events, features "
            f"{self.feature_set.names} + mjj, p_B {self.background.get('label', '?')}{truth})"
        )

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        mjj: np.ndarray,
        background: EventDensity,
        *,
        test_fraction: float = 0.5,
        seed: int | np.random.SeedSequence | None = 0,
        feature_set: str | FeatureSet = "ranode",
        signal_region: SignalRegion | None = None,
        truth: Mapping[str, Any] | None = None,
    ) -> RANODEData:
        """Split SR events (x, mjj) at random and evaluate log p_B with the ``background`` provider.

        Parameters
        ----------
        x, mjj
            SR events: features (n, d) of ``feature_set`` and dijet masses (n,) in GeV.
        background : EventDensity
            p_B(x, mjj | SR): :class:`~gbi_zfit.models.ranode.FlowBackgroundDensity` (learned) or
            :class:`~gbi_zfit.models.ranode.ExactBackgroundDensity` (oracle).
        test_fraction : float
            Fraction of the events in the common test set (default 0.5).
        seed
            Seed of the split.
        signal_region : SignalRegion, optional
            Default that of ``background``.

        Raises
        ------
        InputError
            Bad shapes, NaN/inf, ``test_fraction`` outside (0, 1), a background density that is zero
            on some event.
        RegionError
            Events outside the SR.
        """
        _check_background(background)
        fs = get_feature_set(feature_set)
        if fs.names != background.feature_set.names:
            raise InputError(
                f"feature set {fs.names} differs from the background density's {background.feature_set.names}"
            )
        if not (isinstance(test_fraction, float | int) and 0.0 < test_fraction < 1.0):
            raise InputError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        sr = signal_region or background.signal_region
        x = np.asarray(x, np.float64)
        mjj = np.asarray(mjj, np.float64).reshape(-1)
        log_pb = background.log_prob(x, mjj)  # checks shapes, NaN and the SR
        n = len(x)
        n_test = round(test_fraction * n)
        if n_test < 1 or n - n_test < 20:
            raise InputError(
                f"{n} SR events are too few for a test fraction of {test_fraction} (need >= 1 test and "
                ">= 20 training events)"
            )
        perm = np.random.default_rng(seed).permutation(n)
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        return cls(
            x[train],
            mjj[train],
            log_pb[train],
            x[test],
            mjj[test],
            log_pb[test],
            fs,
            sr,
            background=background.describe(),
            truth=dict(truth) if truth is not None else None,
        )

    @classmethod
    def from_events(
        cls,
        events: Events,
        background: EventDensity,
        *,
        signal_region: SignalRegion | None = None,
        **kwargs: Any,
    ) -> RANODEData:
        """The SR events of ``events`` (others are dropped); kwargs as :meth:`from_arrays`.

        With truth labels (benchmark data) the true SR signal fraction is recorded in :attr:`truth`.
        """
        _check_background(background)
        sr = signal_region or background.signal_region
        sel = sr.signal_region(events)
        fs = get_feature_set(kwargs.pop("feature_set", background.feature_set))
        truth = kwargs.pop("truth", None)
        if truth is None and sel.label is not None:
            n_s = int(sel.label.sum())
            truth = {"mu": n_s / len(sel), "n_signal": n_s, "n_background": len(sel) - n_s}
        return cls.from_arrays(
            sel.features(fs), sel.mjj, background, feature_set=fs, signal_region=sr, truth=truth, **kwargs
        )


# --------------------------------------------------------------------------------------------------
# likelihood


def _log_ratio(log_f: np.ndarray, log_pb: np.ndarray) -> np.ndarray:
    return np.minimum(np.asarray(log_f, np.float64) - np.asarray(log_pb, np.float64), _LOG_R_MAX)


def delta_log_likelihood(log_f: Any, log_pb: Any, mu: Any) -> np.ndarray:
    """ΔlnL(μ) = Σ_i ln(μ f_i + (1 − μ) p_B,i) − Σ_i ln p_B,i for each μ (array in, array out).

    ``log_f`` is (n,) — or (K, n) for an ensemble, averaged in density space, f = (1/K) Σ_k f_k.
    μ may be negative as long as every event keeps a positive density (else the value is −inf).
    """
    log_f = np.asarray(log_f, np.float64)
    if log_f.ndim == 2:
        top = log_f.max(axis=0)
        log_f = top + np.log(np.exp(log_f - top).mean(axis=0))
    r = np.exp(_log_ratio(log_f, log_pb))
    mu = np.atleast_1d(np.asarray(mu, np.float64))
    out = np.empty(mu.shape)
    for j, m in enumerate(mu.ravel()):
        t = 1.0 + m * (r - 1.0)
        out.flat[j] = np.log1p(m * (r - 1.0)).sum() if np.all(t > 0) else -np.inf
    return out


def _bootstrap_delta_ll(
    log_f_members: np.ndarray, log_pb: np.ndarray, mu: float, n_bootstrap: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(ΔlnL of the ensemble mean, std of ΔlnL over bootstrap resamples of the members)."""
    k = log_f_members.shape[0]
    log_r = _log_ratio(log_f_members, log_pb[None, :])
    top = log_r.max(axis=0)
    scaled = np.exp(log_r - top)  # (K, n), ≤ 1
    log_mu, log_1m = math.log(mu), math.log1p(-mu)

    def dll(weights: np.ndarray) -> np.ndarray:  # weights (B, K), rows sum to 1
        s = weights @ scaled  # (B, n)
        with np.errstate(divide="ignore"):
            return np.logaddexp(log_mu + top + np.log(s), log_1m).sum(axis=1)

    value = float(dll(np.full((1, k), 1.0 / k))[0])
    if k < 2 or n_bootstrap < 2:
        return value, 0.0
    draws = rng.integers(k, size=(n_bootstrap, k))
    weights = np.zeros((n_bootstrap, k))
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], draws), 1.0 / k)
    boot = np.concatenate([dll(weights[i : i + 50]) for i in range(0, n_bootstrap, 50)])
    return value, float(boot.std(ddof=1))


# --------------------------------------------------------------------------------------------------
# Gaussian-process likelihood curve


class _LevelIntervals:
    """What the μ results share: intervals per confidence level, Z = √q0, and their JSON-able records.

    A subclass (a dataclass with a ``q0`` property) names the field holding ``{level key: (low, high)}``
    in ``_intervals`` and what to call those intervals in errors in ``_interval_name``.
    """

    _intervals: ClassVar[str]
    _interval_name: ClassVar[str]

    @property
    def significance(self) -> float:
        """√q0."""
        return math.sqrt(self.q0)

    def interval(self, cl: float = 0.6827) -> tuple[float, float]:
        """The interval at confidence level ``cl`` (one of the fitted levels)."""
        intervals = getattr(self, self._intervals)
        try:
            return intervals[_level_key(cl)]
        except KeyError:
            raise InputError(
                f"no {self._interval_name} at level {cl}; available: {sorted(intervals)}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d[self._intervals] = {k: list(v) for k, v in getattr(self, self._intervals).items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        d = dict(d)
        d[cls._intervals] = {k: tuple(v) for k, v in d[cls._intervals].items()}
        return cls(**d)


@dataclasses.dataclass
class LikelihoodCurve(_LevelIntervals):
    """GP interpolation of ΔlnL(μ) in log10 μ, its maximum and the intervals.

    Attributes
    ----------
    mu_hat : float
        μ at the maximum of the GP mean.
    max_delta_ll : float
        ΔlnL there (relative to μ = 0).
    intervals : dict
        ``{"0.6827": (low, high), "0.95": (...)}``: where the GP mean is within χ²_{α,1}/2 of its
        maximum. ``low = 0.0`` when the curve does not drop that far towards the lowest μ scanned.
    upper_open : dict
        Per level, whether the interval reaches the highest μ scanned (the true upper end is beyond).
    at_edge : bool
        μ̂ is at the lowest or highest μ scanned.
    log10_mu, mean, std : list of float
        The GP mean and standard deviation of ΔlnL on a fine grid (for plots).
    kernel : str
        The fitted kernel.
    compress_scale : float or None
        Scale s of the asinh compression of the drop below the maximum (None: no compression).
    """

    mu_hat: float
    max_delta_ll: float
    intervals: dict[str, tuple[float, float]]
    upper_open: dict[str, bool]
    at_edge: bool
    log10_mu: list[float]
    mean: list[float]
    std: list[float]
    kernel: str
    compress_scale: float | None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def q0(self) -> float:
        """2 ΔlnL at the maximum (discovery test statistic against μ = 0)."""
        return 2.0 * max(self.max_delta_ll, 0.0)

    _intervals = "intervals"
    _interval_name = "interval"


def fit_likelihood_curve(
    mu: Any,
    delta_ll: Any,
    noise_std: Any = None,
    *,
    levels: Sequence[float] = DEFAULT_LEVELS,
    compress_scale: float | None = 5.0,
    n_grid: int = 4001,
    n_restarts: int = 5,
    seed: int = 0,
) -> LikelihoodCurve:
    """Gaussian-process regression of ΔlnL against log10 μ; maximum and intervals of the GP mean.

    Parameters
    ----------
    mu : array (m,)
        Scan points, strictly increasing in (0, 1) (at least 3).
    delta_ll : array (m,)
        ΔlnL at each point (relative to μ = 0).
    noise_std : array (m,), optional
        Standard deviation of each point (e.g. from bootstrapping the ensemble members); the GP then
        smooths rather than interpolates. Default: noiseless points (a tiny jitter only).
    levels : sequence of float
        Confidence levels of the intervals.
    compress_scale : float or None
        A likelihood curve falls by thousands of units at large μ but the intervals live within a few
        units of the top; a stationary GP fitted to both rings around the top. The drop D = max − ΔlnL
        is therefore fitted as s · asinh(D / s) (linear for D ≪ s, logarithmic beyond), and the GP mean
        is transformed back exactly. The map is monotone, so maximum and level crossings are those of
        the back-transformed mean. ``None`` fits ΔlnL itself (the paper's plain GP).
    n_grid : int
        Points of the fine log10 μ grid on which the mean is maximised.
    n_restarts : int
        Restarts of the kernel-hyperparameter optimisation.
    seed : int
        Seed of those restarts.

    Returns
    -------
    LikelihoodCurve

    Raises
    ------
    InputError
        Bad shapes, non-finite values, fewer than 3 points.
    ParameterRangeError
        μ outside (0, 1).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel
    from threadpoolctl import threadpool_limits

    grid_mu = check_mu_grid(mu)
    y = np.asarray(delta_ll, np.float64)
    if y.shape != grid_mu.shape:
        raise InputError(f"delta_ll has shape {y.shape}, the μ grid {grid_mu.shape}")
    if not np.isfinite(y).all():
        raise InputError("delta_ll contains NaN/inf (a μ at which some event has zero density?)")
    noise = np.zeros_like(y) if noise_std is None else np.asarray(noise_std, np.float64)
    if noise.shape != y.shape or not (np.isfinite(noise).all() and (noise >= 0).all()):
        raise InputError("noise_std must be finite, non-negative and of the same shape as delta_ll")
    if compress_scale is not None and not compress_scale > 0:
        raise InputError(f"compress_scale must be > 0 or None, got {compress_scale!r}")
    levels = _check_levels(levels)

    t = np.log10(grid_mu)
    ref = float(y.max())
    s = compress_scale
    if s is None:
        u, du = y - ref, np.ones_like(y)
    else:
        drop = ref - y
        u = -s * np.arcsinh(drop / s)
        du = 1.0 / np.sqrt(1.0 + (drop / s) ** 2)  # du / dΔlnL
    u_mean, u_scale = float(u.mean()), float(u.std()) or 1.0
    un = (u - u_mean) / u_scale
    alpha = (noise * du / u_scale) ** 2 + 1e-8
    spacing = float(np.diff(t).min())
    span = float(t[-1] - t[0])
    kernel = ConstantKernel(1.0, (1e-3, 1e3)) * RBF(
        length_scale=max(0.5, 2 * spacing), length_scale_bounds=(0.5 * spacing, 4.0 * span)
    )
    gp = GaussianProcessRegressor(
        kernel=kernel, alpha=alpha, normalize_y=False, n_restarts_optimizer=n_restarts, random_state=seed
    )
    fine = np.linspace(t[0], t[-1], int(n_grid))
    # tiny matrices: multi-threaded BLAS only adds contention (seconds on a busy machine)
    with threadpool_limits(1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        gp.fit(t[:, None], un)
        m_n, sd_n = gp.predict(fine[:, None], return_std=True)
    m_u, sd_u = m_n * u_scale + u_mean, sd_n * u_scale
    if s is None:
        mean, sd = ref + m_u, sd_u
    else:
        mean = ref + s * np.sinh(m_u / s)
        sd = sd_u * np.cosh(m_u / s)
    i_max = int(np.argmax(mean))
    y_max = float(mean[i_max])
    intervals, upper_open = {}, {}
    for cl in levels:
        lo, hi, open_hi = _crossings(fine, mean, i_max, y_max - _threshold(cl))
        intervals[_level_key(cl)] = (0.0 if lo is None else float(10.0**lo), float(10.0**hi))
        upper_open[_level_key(cl)] = open_hi
    return LikelihoodCurve(
        mu_hat=float(10.0 ** fine[i_max]),
        max_delta_ll=y_max,
        intervals=intervals,
        upper_open=upper_open,
        at_edge=i_max in (0, len(fine) - 1),
        log10_mu=fine[:: max(1, len(fine) // 400)].tolist(),
        mean=mean[:: max(1, len(fine) // 400)].tolist(),
        std=sd[:: max(1, len(fine) // 400)].tolist(),
        kernel=str(gp.kernel_),
        compress_scale=s,
        info={"gp_warnings": [str(w.message) for w in caught]},
    )


def _crossings(t: np.ndarray, mean: np.ndarray, i_max: int, level: float) -> tuple[float | None, float, bool]:
    """(low, high, high_is_open) in log10 μ of the connected region around i_max where mean ≥ level.

    low is None when the region reaches the lowest grid point (the interval extends to μ = 0);
    crossings are linearly interpolated between grid points.
    """
    below = mean < level
    left = np.flatnonzero(below[:i_max])
    right = np.flatnonzero(below[i_max:])
    if len(left) == 0:
        lo = None
    else:
        j = left[-1]  # mean[j] < level <= mean[j + 1]
        lo = t[j] + (level - mean[j]) / (mean[j + 1] - mean[j]) * (t[j + 1] - t[j])
    if len(right) == 0:
        return lo, float(t[-1]), True
    j = i_max + right[0]  # mean[j - 1] >= level > mean[j]
    hi = t[j - 1] + (mean[j - 1] - level) / (mean[j - 1] - mean[j]) * (t[j] - t[j - 1])
    return lo, float(hi), False


# --------------------------------------------------------------------------------------------------
# the μ scan


@dataclasses.dataclass
class MuScanResult:
    """Outcome of the R-ANODE μ scan (paper procedure).

    Attributes
    ----------
    mu_grid : list of float
        Scan points.
    delta_ll : list of float
        Ensemble-averaged test ΔlnL at each point (relative to μ = 0).
    delta_ll_std : list of float
        Its bootstrap standard deviation over ensemble members (0 for a fixed signal density).
    curve : LikelihoodCurve
        GP fit: ``mu_hat``, intervals, significance.
    signal, background : dict
        Descriptions of the density providers (``label`` "learned"/"exact"/"flows").
    n_members, n_test, n_train : int
    truth : dict, optional
        e.g. the true μ of benchmark data.
    ensembles : list of SignalFlowEnsemble or None
        The trained ensembles per μ (kept in memory only, not serialised).
    """

    mu_grid: list[float]
    delta_ll: list[float]
    delta_ll_std: list[float]
    curve: LikelihoodCurve
    signal: dict
    background: dict
    n_members: int
    n_test: int
    n_train: int
    truth: dict | None = None
    info: dict = dataclasses.field(default_factory=dict)
    ensembles: list[SignalFlowEnsemble] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def mu_hat(self) -> float:
        return self.curve.mu_hat

    @property
    def significance(self) -> float:
        return self.curve.significance

    def interval(self, cl: float = 0.6827) -> tuple[float, float]:
        return self.curve.interval(cl)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "ensembles"}
        d["curve"] = self.curve.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MuScanResult:
        d = dict(d)
        d["curve"] = LikelihoodCurve.from_dict(d["curve"])
        return cls(**d)

    def __str__(self) -> str:
        head = (
            f"R-ANODE μ scan: f {self.signal.get('label')}, p_B {self.background.get('label')}, "
            f"{len(self.mu_grid)} points in [{self.mu_grid[0]:.3g}, {self.mu_grid[-1]:.3g}], "
            f"{self.n_members} member(s), {self.n_test} test events"
        )
        lines = [
            head,
            f"  μ̂ = {self.mu_hat:.4g}   ΔlnL max = {self.curve.max_delta_ll:.3f}   Z ≈ {self.significance:.2f}",
        ]
        for key, (lo, hi) in self.curve.intervals.items():
            tail = "+" if self.curve.upper_open[key] else ""
            lines.append(f"  {float(key) * 100:.4g} % interval: [{lo:.4g}, {hi:.4g}{tail}]")
        if self.truth and "mu" in self.truth:
            lines.append(f"  true μ = {self.truth['mu']:.4g}")
        return "\n".join(lines)


def scan_mu(
    data: RANODEData,
    signal: EventDensity | None = None,
    *,
    mu_grid: Any = None,
    n_members: int = 20,
    config=None,
    seed: int | None = 0,
    executor=None,
    store: str | Path | None = None,
    progress: bool = True,
    n_bootstrap: int = 200,
    levels: Sequence[float] = DEFAULT_LEVELS,
    compress_scale: float | None = 5.0,
    refine: int = 0,
    keep_ensembles: bool = True,
) -> MuScanResult:
    """The R-ANODE μ scan: ensemble-averaged test ΔlnL at each μ of a grid, GP maximum and intervals.

    Parameters
    ----------
    data : RANODEData
        Training pool and test set with log p_B (the p_B provider was chosen there).
    signal : EventDensity or None
        ``None``: learn f at every μ (the method). A fixed density (e.g.
        :class:`~gbi_zfit.models.ranode.ExactSignalDensity`, the ideal f) is evaluated as is.
    mu_grid : array, optional
        Scan points (default :data:`DEFAULT_MU_GRID`, 20 values logspace 1e-5 … 1e-1).
    n_members : int
        Signal flows per μ (default 20).
    config : FlowConfig
        Signal-flow settings (default :func:`~gbi_zfit.models.ranode.default_signal_flow_config`).
    seed : int
        Root seed of the members (member k uses the same seed at every μ) and of the bootstrap.
    executor : Executor
        Runs the len(mu_grid) × n_members training tasks (default in-process).
    store : path, optional
        JSON Lines file of finished tasks; a rerun with the same inputs resumes from it.
    progress : bool
        tqdm progress bar over the tasks.
    n_bootstrap : int
        Bootstrap resamples of the members for the noise of each point (0 disables).
    levels : sequence of float
        Confidence levels of the intervals.
    compress_scale : float or None
        See :func:`fit_likelihood_curve`.
    refine : int
        A second round of this many extra μ values, log-spaced inside the widest interval of the first
        round, then one GP over all points (the remedy the GBI paper suggests for a peak narrower than
        the grid spacing). Default 0 (the paper's single round).
    keep_ensembles : bool
        Keep the trained ensembles in :attr:`MuScanResult.ensembles`.

    Returns
    -------
    MuScanResult

    Raises
    ------
    InputError, ParameterRangeError
        Bad grid, bad ``signal`` type, ``n_members`` < 1.
    """
    if not isinstance(data, RANODEData):
        raise InputError(f"data must be RANODEData, got {type(data).__name__}")
    if signal is not None and not isinstance(signal, EventDensity):
        raise InputError(
            f"signal must be None (learn f) or an EventDensity (e.g. ExactSignalDensity), got "
            f"{type(signal).__name__}"
        )
    grid = check_mu_grid(DEFAULT_MU_GRID if mu_grid is None else mu_grid)
    levels = _check_levels(levels)
    if not (isinstance(refine, int | np.integer) and refine >= 0):
        raise InputError(f"refine must be a non-negative integer, got {refine!r}")
    t0 = time.perf_counter()
    log_f_fixed = None if signal is None else signal.log_prob(data.x_test, data.mjj_test)

    def evaluate(points: np.ndarray, round_: int):
        """(ΔlnL, bootstrap std, ensembles) at ``points``; round 0 is the grid, 1 the refinement."""
        if log_f_fixed is not None:
            return delta_log_likelihood(log_f_fixed, data.log_pb_test, points), np.zeros(len(points)), None
        round_store = store
        if store is not None and round_:
            round_store = Path(store).with_name(Path(store).stem + f".refine{round_}.jsonl")
        ensembles = _train_flows(
            data,
            points,
            config=config,
            n_members=n_members,
            seed=seed,
            executor=executor,
            store=round_store,
            progress=progress,
        )
        # a stream of its own (the members use the children 0 … K − 1 of SeedSequence(seed))
        rng = np.random.default_rng(child_seed(seed, _BOOTSTRAP_KEY, round_))
        values, stds = np.empty(len(points)), np.empty(len(points))
        for i, (mu, ens) in enumerate(zip(points, ensembles, strict=True)):
            members_lf = ens.log_prob_members(data.x_test, data.mjj_test)
            values[i], stds[i] = _bootstrap_delta_ll(members_lf, data.log_pb_test, mu, n_bootstrap, rng)
        return values, stds, ensembles

    def gp(points, values, stds):
        noise = stds if np.any(stds > 0) else None
        return fit_likelihood_curve(points, values, noise, levels=levels, compress_scale=compress_scale)

    values, stds, ensembles = evaluate(grid, 0)
    curve = gp(grid, values, stds)
    if refine:
        # second round (GBI paper, appendix A): points inside the widest first-round interval
        lo, hi = curve.interval(max(levels))
        lo = lo if lo > 0 else max(grid[0], curve.mu_hat / 10.0)
        extra = np.logspace(math.log10(lo), math.log10(hi), refine + 2)[1:-1]
        extra = extra[np.min(np.abs(np.log10(extra)[:, None] - np.log10(grid)[None, :]), axis=1) > 1e-3]
        if len(extra):
            v2, s2, e2 = evaluate(extra, 1)
            order = np.argsort(np.concatenate([grid, extra]))
            grid = np.concatenate([grid, extra])[order]
            values = np.concatenate([values, v2])[order]
            stds = np.concatenate([stds, s2])[order]
            if ensembles is not None:
                ensembles = [(ensembles + e2)[k] for k in order]
            curve = gp(grid, values, stds)
    if ensembles is None:
        signal_info, members = signal.describe(), 1
    else:
        signal_info = {**ensembles[0].describe(), "mu_train": None, "n_parameters": ensembles[0].n_parameters}
        members = n_members
    return MuScanResult(
        mu_grid=grid.tolist(),
        delta_ll=values.tolist(),
        delta_ll_std=stds.tolist(),
        curve=curve,
        signal=signal_info,
        background=dict(data.background),
        n_members=members,
        n_test=data.n_test,
        n_train=data.n_train,
        truth=data.truth,
        info={
            "time_s": time.perf_counter() - t0,
            "seed": seed if seed is None or isinstance(seed, int) else repr(seed),
            "refine": int(refine),
        },
        ensembles=ensembles if keep_ensembles else None,
    )


# --------------------------------------------------------------------------------------------------
# Minuit fit of μ with f frozen


@dataclasses.dataclass
class MuFitResult(_LevelIntervals):
    """Minuit fit of μ with the signal density frozen.

    Attributes
    ----------
    mu, error : float
        MIGRAD minimum and HESSE error.
    minos : dict
        ``{"0.6827": (low, high), ...}``: MINOS interval per confidence level (absolute μ values;
        NaN where MINOS failed). A limit at the lower bound of μ is reported as that bound.
    delta_ll : float
        ΔlnL(μ̂) relative to μ = 0; q0 = 2 ΔlnL, Z = √q0 (0 when μ̂ ≤ 0).
    valid : bool
        MIGRAD's ``fmin.is_valid`` and an accurate HESSE.
    at_limit : bool
        μ̂ is at one of its limits.
    mu_train : float or None
        μ the signal flows were trained at (None for a fixed density).
    """

    mu: float
    error: float
    minos: dict[str, tuple[float, float]]
    delta_ll: float
    valid: bool
    at_limit: bool
    limits: tuple[float, float]
    n_events: int
    signal: dict
    mu_train: float | None = None
    n_calls: int = 0
    time_s: float = 0.0
    truth: dict | None = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def q0(self) -> float:
        return 2.0 * max(self.delta_ll, 0.0) if self.mu > 0 else 0.0

    _intervals = "minos"
    _interval_name = "MINOS interval"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["limits"] = list(self.limits)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MuFitResult:
        return super().from_dict({**d, "limits": tuple(d["limits"])})

    def __str__(self) -> str:
        trained = "" if self.mu_train is None else f", f trained at μ = {self.mu_train:.4g}"
        head = (
            f"R-ANODE Minuit fit (f {self.signal.get('label')}{trained}, {self.n_events} events): "
            f"{'valid' if self.valid else 'INVALID'}{', at limit' if self.at_limit else ''}"
        )
        lines = [
            head,
            f"  μ̂ = {self.mu:.4g} ± {self.error:.2g} (HESSE)   q0 = {self.q0:.2f}   Z = {self.significance:.2f}",
        ]
        for key, (lo, hi) in self.minos.items():
            lines.append(f"  MINOS {float(key) * 100:.4g} %: [{lo:.4g}, {hi:.4g}]")
        if self.truth and "mu" in self.truth:
            lines.append(f"  true μ = {self.truth['mu']:.4g}")
        return "\n".join(lines)


class _MixtureNLL:
    """−ΔlnL(μ) = −Σ ln(1 + μ (r_i − 1)) and its derivative, r = f / p_B (numpy, vectorised)."""

    errordef = 0.5  # Minuit.LIKELIHOOD

    def __init__(self, log_r: np.ndarray):
        self.rm1 = np.exp(np.minimum(log_r, _LOG_R_MAX)) - 1.0

    def lowest_mu(self) -> float:
        """Smallest μ with a positive density on every event (−inf if none bounds it)."""
        top = float(self.rm1.max())
        return -1.0 / top if top > 0 else -math.inf

    def __call__(self, mu: float) -> float:
        t = 1.0 + mu * self.rm1
        if np.any(t <= 0):
            return 1e300
        return float(-np.log(t).sum())

    def grad(self, mu: float) -> np.ndarray:
        return np.array([-float((self.rm1 / (1.0 + mu * self.rm1)).sum())])


def fit_mu(
    data: RANODEData,
    signal: EventDensity,
    *,
    on: str = "test",
    mu_start: float | None = None,
    mu_limits: tuple[float, float] = (0.0, 1.0),
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> MuFitResult:
    """Float μ in Minuit (MIGRAD, HESSE, MINOS) with the signal density f frozen.

    Parameters
    ----------
    data : RANODEData
    signal : EventDensity
        f: a trained :class:`~gbi_zfit.models.ranode.SignalFlowEnsemble` (e.g. at the scan's μ̂) or a
        fixed density such as :class:`~gbi_zfit.models.ranode.ExactSignalDensity`.
    on : {"test", "train", "all"}
        Events to fit (default the test set, as the scan; f was trained on the training pool).
    mu_start : float, optional
        Start value; default the best point of a coarse log scan of the likelihood.
    mu_limits : (float, float)
        Limits of μ (default [0, 1]). A negative lower limit allows downward fluctuations as long as
        every event keeps a positive density.
    levels : sequence of float
        MINOS confidence levels.

    Raises
    ------
    InputError
        Bad ``signal`` or ``on``.
    ParameterRangeError
        Limits outside [−1, 1], or a lower limit at which some event would get a negative density.
    """
    from iminuit import Minuit

    if not isinstance(data, RANODEData):
        raise InputError(f"data must be RANODEData, got {type(data).__name__}")
    if not isinstance(signal, EventDensity):
        raise InputError(f"signal must be an EventDensity, got {type(signal).__name__}")
    if on not in ("test", "train", "all"):
        raise InputError(f"on must be 'test', 'train' or 'all', got {on!r}")
    levels = _check_levels(levels)
    lo, hi = (float(v) for v in mu_limits)
    if not (-1.0 <= lo < hi <= 1.0):
        raise ParameterRangeError(f"mu_limits {mu_limits} must satisfy -1 <= low < high <= 1")
    parts = {"test": ("test",), "train": ("train",), "all": ("train", "test")}[on]
    x = np.concatenate([getattr(data, f"x_{p}") for p in parts])
    mjj = np.concatenate([getattr(data, f"mjj_{p}") for p in parts])
    log_pb = np.concatenate([getattr(data, f"log_pb_{p}") for p in parts])
    t0 = time.perf_counter()
    nll = _MixtureNLL(_log_ratio(signal.log_prob(x, mjj), log_pb))
    floor = nll.lowest_mu()
    if lo <= floor:
        raise ParameterRangeError(
            f"lower μ limit {lo:g} gives some event a non-positive density μ f + (1 − μ) p_B; "
            f"use a limit above {floor:.4g}"
        )
    if mu_start is None:
        trial = np.concatenate([[max(lo, 0.0)], np.logspace(-6, math.log10(hi), 61)])
        trial = trial[(trial >= lo) & (trial <= hi)]
        mu_start = float(trial[np.argmin([nll(m) for m in trial])])
    mu_start = min(max(float(mu_start), lo), hi)
    m = Minuit(nll, mu_start, grad=nll.grad, name=("mu",))  # errordef 0.5 from the cost function
    m.limits["mu"] = (lo, hi)
    m.errors["mu"] = max(1e-4, 0.1 * abs(mu_start))
    m.migrad()
    m.hesse()
    minos: dict[str, tuple[float, float]] = {}
    minos_info: dict[str, str] = {}
    mu_hat = float(m.values["mu"])
    for cl in levels:
        try:
            m.minos("mu", cl=cl)
            me = m.merrors["mu"]
            minos[_level_key(cl)] = (mu_hat + float(me.lower), mu_hat + float(me.upper))
            if not me.is_valid:
                minos_info[_level_key(cl)] = (
                    f"lower valid {me.lower_valid} (at limit {me.at_lower_limit}), upper valid "
                    f"{me.upper_valid} (at limit {me.at_upper_limit})"
                )
        except RuntimeError as exc:
            minos[_level_key(cl)] = (math.nan, math.nan)
            minos_info[_level_key(cl)] = str(exc)
    error = float(m.errors["mu"])
    at_limit = bool(min(mu_hat - lo, hi - mu_hat) < 1e-3 * error)  # Minuit's limit transform stops short
    mu_train = signal.mu if isinstance(signal, SignalFlowEnsemble) else None
    return MuFitResult(
        mu=mu_hat,
        error=error,
        minos=minos,
        delta_ll=-float(m.fval),
        valid=bool(m.valid and m.accurate),
        at_limit=at_limit,
        limits=(lo, hi),
        n_events=len(x),
        signal=signal.describe(),
        mu_train=mu_train,
        n_calls=int(m.nfcn),
        time_s=time.perf_counter() - t0,
        truth=data.truth,
        info={"on": on, "mu_start": mu_start, "edm": float(m.fmin.edm), "minos": minos_info},
    )


# --------------------------------------------------------------------------------------------------
# the whole method


@dataclasses.dataclass
class RANODEResult:
    """Scan (paper procedure) and Minuit fit (f frozen) of one data set."""

    scan: MuScanResult
    fit: MuFitResult | None
    signal_flow: SignalFlowEnsemble | None = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"scan": self.scan.to_dict(), "fit": None if self.fit is None else self.fit.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RANODEResult:
        fit = d.get("fit")
        return cls(MuScanResult.from_dict(d["scan"]), None if fit is None else MuFitResult.from_dict(fit))

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text of :meth:`to_dict`; also written to ``path`` (atomically) if given."""
        return dump_json(self.to_dict(), path, indent=2)

    def __str__(self) -> str:
        return str(self.scan) + ("" if self.fit is None else "\n" + str(self.fit))


def run_ranode(
    data: RANODEData,
    signal: EventDensity | None = None,
    *,
    fit_at: float | str | None = "mu_hat",
    mu_grid: Any = None,
    n_members: int = 20,
    config=None,
    seed: int | None = 0,
    executor=None,
    workdir: str | Path | None = None,
    progress: bool = True,
    levels: Sequence[float] = DEFAULT_LEVELS,
    mu_limits: tuple[float, float] = (0.0, 1.0),
    n_bootstrap: int = 200,
    compress_scale: float | None = 5.0,
    refine: int = 0,
) -> RANODEResult:
    """R-ANODE end to end: μ scan with the GP, then (learned f) an ensemble at μ̂ and the Minuit fit.

    Parameters
    ----------
    data : RANODEData
    signal : EventDensity or None
        ``None`` learns f; a fixed density (the ideal f) skips all training.
    fit_at : "mu_hat", float or None
        μ to train the frozen f at for the Minuit fit: the scan's μ̂ (default), a given value, or None
        for no Minuit fit. Ignored for a fixed ``signal`` (fitted directly).
    workdir : path, optional
        Directory for the resumable task stores (``scan_tasks.jsonl``, ``fit_mu_<μ>.jsonl``).
    mu_grid, n_members, config, seed, executor, progress, levels, n_bootstrap, compress_scale, refine
        As :func:`scan_mu`.
    mu_limits : (float, float)
        As :func:`fit_mu`.

    Returns
    -------
    RANODEResult
    """
    if fit_at is not None and fit_at != "mu_hat":
        try:
            fit_at = float(fit_at)
        except (TypeError, ValueError) as exc:
            raise InputError(f"fit_at must be 'mu_hat', a number in (0, 1) or None, got {fit_at!r}") from exc
        if not 0.0 < fit_at < 1.0:
            raise ParameterRangeError(f"fit_at = {fit_at} must be in (0, 1)")
    work = Path(workdir) if workdir is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    scan = scan_mu(
        data,
        signal,
        mu_grid=mu_grid,
        n_members=n_members,
        config=config,
        seed=seed,
        executor=executor,
        store=None if work is None else work / "scan_tasks.jsonl",
        progress=progress,
        n_bootstrap=n_bootstrap,
        levels=levels,
        compress_scale=compress_scale,
        refine=refine,
        keep_ensembles=False,
    )
    if signal is not None:
        return RANODEResult(scan, fit_mu(data, signal, mu_limits=mu_limits, levels=levels))
    if fit_at is None:
        return RANODEResult(scan, None)
    mu_train = scan.mu_hat if fit_at == "mu_hat" else fit_at
    (flow,) = _train_flows(
        data,
        [mu_train],
        config=config,
        n_members=n_members,
        seed=seed,
        executor=executor,
        store=None if work is None else work / f"fit_mu_{mu_train:.6e}.jsonl",
        progress=progress,
    )
    fit = fit_mu(data, flow, mu_start=mu_train, mu_limits=mu_limits, levels=levels)
    return RANODEResult(scan, fit, flow)
