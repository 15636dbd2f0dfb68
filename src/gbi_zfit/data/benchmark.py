"""The synthetic LHCO-like benchmark ("lhco-sim") with exactly known densities.

Everything the project measures (sensitivity, bias, coverage) is compared with the *oracle* built from
these densities. The generative model (units GeV):

Background (QCD dijets)
    mjj on [2650, 7000] with density ∝ (1 − y)^10 / y^5, y = mjj / 13000. Two jets, independent given
    mjj: ln m ~ Normal(ln(0.025 mjj), 0.70); τ21 | m ~ Beta(4, 2 + m / (m + 200)); τ32 ~ Beta(6, 2).
Signal W' → X Y at θ = (mX, mY)
    mjj ~ Normal(3500, 150) truncated to the mjj support. The jet of a particle of mass M has mass
    0.75 LogNormal(ln M, 0.12) + 0.25 LogNormal(ln 0.6M, 0.35), τ21 ~ Beta(3, 4), τ32 ~ Beta(5, 2).

Observed jets are ordered by mass (j1 heavier), so every density of an ordered pair sums both jet
assignments. This module holds the sampler and the numpy/scipy reference densities; the TensorFlow
versions used inside zfit fits are in :mod:`gbi_zfit.data.benchmark_tf` and are tested against these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from ..errors import InputError, ParameterRangeError
from .events import Events, FeatureSet, get_feature_set
from .regions import DEFAULT_SR, SignalRegion

__all__ = [
    "BACKGROUND",
    "MJJ_RANGE",
    "SIGNAL",
    "THETA_RANGE",
    "BackgroundModel",
    "LHCOSim",
    "SignalModel",
    "gauss_legendre",
]

#: Support of mjj in GeV.
MJJ_RANGE: tuple[float, float] = (2650.0, 7000.0)
#: Allowed signal masses (mX and mY) in GeV.
THETA_RANGE: tuple[float, float] = (25.0, 700.0)
_SQRT_S = 13000.0


@dataclass(frozen=True)
class BackgroundModel:
    """Parameters of the background generator (defaults are the benchmark)."""

    mjj_power_1my: float = 10.0  # exponent of (1 - y)
    mjj_power_y: float = 5.0  # exponent of 1/y
    jet_mass_fraction: float = 0.025  # median jet mass / mjj
    jet_mass_log_sigma: float = 0.70
    tau21_a: float = 4.0
    tau21_b0: float = 2.0  # τ21 ~ Beta(a, b0 + m / (m + b_scale))
    tau21_b_scale: float = 200.0
    tau32_a: float = 6.0
    tau32_b: float = 2.0


@dataclass(frozen=True)
class SignalModel:
    """Parameters of the signal generator (defaults are the benchmark)."""

    mjj_mean: float = 3500.0
    mjj_sigma: float = 150.0
    core_fraction: float = 0.75
    core_log_sigma: float = 0.12
    tail_scale: float = 0.6  # the low tail peaks at 0.6 M
    tail_log_sigma: float = 0.35
    tau21_a: float = 3.0
    tau21_b: float = 4.0
    tau32_a: float = 5.0
    tau32_b: float = 2.0


BACKGROUND = BackgroundModel()
SIGNAL = SignalModel()


def gauss_legendre(low: float, high: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on ``[low, high]``."""
    x, w = np.polynomial.legendre.leggauss(n)
    half = 0.5 * (high - low)
    return low + half * (x + 1.0), half * w


def _check_theta(mx: float, my: float) -> None:
    lo, hi = THETA_RANGE
    for name, m in (("mX", mx), ("mY", my)):
        if not np.all(np.isfinite(m)) or np.any(m < lo) or np.any(m > hi):
            raise ParameterRangeError(f"{name} = {m} GeV is outside the benchmark's range [{lo}, {hi}] GeV")


class LHCOSim:
    """Generator and exact densities of the synthetic LHCO-like benchmark.

    Parameters
    ----------
    signal_region : SignalRegion
        The SR window (default [3300, 3700) GeV).
    n_quad : int
        Gauss–Legendre nodes for the mjj integral in :meth:`log_pb_x_sr` (default 64; the integral is
        then exact to ~1e-14 relative, see the tests).

    Examples
    --------
    >>> sim = LHCOSim()
    >>> data = sim.make_dataset(s_over_sqrt_b=1.0, mx=300, my=150, n_background=100_000, seed=1)
    >>> sr = sim.signal_region.signal_region(data)
    """

    def __init__(
        self,
        signal_region: SignalRegion = DEFAULT_SR,
        n_quad: int = 64,
        background: BackgroundModel = BACKGROUND,
        signal: SignalModel = SIGNAL,
    ):
        self.signal_region = signal_region
        self.background = background
        self.signal = signal
        self.n_quad = int(n_quad)
        b = background
        # Exact normalisation of (1-y)^p / y^q by expanding the binomial term by term.
        self._y_lo, self._y_hi = (m / _SQRT_S for m in MJJ_RANGE)
        self._log_norm_y = np.log(self._y_antiderivative(self._y_hi) - self._y_antiderivative(self._y_lo))
        if not float(b.mjj_power_1my).is_integer():
            raise InputError("the background mjj exponent of (1 - y) must be an integer")
        # Inverse-CDF table for sampling mjj; refined by Newton steps, so table spacing only sets speed.
        self._mjj_table = np.linspace(*MJJ_RANGE, 20001)
        self._cdf_table = self.cdf_b_mjj(self._mjj_table)
        lo, hi = MJJ_RANGE
        s = signal
        self._sig_cdf_lo = special.ndtr((lo - s.mjj_mean) / s.mjj_sigma)
        self._sig_cdf_hi = special.ndtr((hi - s.mjj_mean) / s.mjj_sigma)
        self._log_sig_norm = np.log(self._sig_cdf_hi - self._sig_cdf_lo)
        self.quad_nodes, self.quad_weights = gauss_legendre(signal_region.low, signal_region.high, n_quad)
        self.p_sr_background = self.cdf_b_mjj(signal_region.high) - self.cdf_b_mjj(signal_region.low)
        self.p_sr_signal = self.cdf_s_mjj(signal_region.high) - self.cdf_s_mjj(signal_region.low)

    # ------------------------------------------------------------------------------------------------
    # mjj densities
    def _y_antiderivative(self, y: np.ndarray) -> np.ndarray:
        p, q = int(self.background.mjj_power_1my), self.background.mjj_power_y
        y = np.asarray(y, dtype=np.float64)
        total = np.zeros_like(y)
        for k in range(p + 1):
            c = special.comb(p, k, exact=True) * (-1) ** k
            e = k - q + 1.0
            total = total + c * (np.log(y) if e == 0 else y**e / e)
        return total

    def log_pb_mjj(self, mjj: np.ndarray) -> np.ndarray:
        """Exact log density of background mjj (per GeV); −inf outside the support."""
        b = self.background
        mjj = np.asarray(mjj, dtype=np.float64)
        y = mjj / _SQRT_S
        inside = (mjj >= MJJ_RANGE[0]) & (mjj <= MJJ_RANGE[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            val = b.mjj_power_1my * np.log1p(-y) - b.mjj_power_y * np.log(y) - self._log_norm_y
        return np.where(inside, val - np.log(_SQRT_S), -np.inf)

    def cdf_b_mjj(self, mjj: np.ndarray) -> np.ndarray:
        """Exact CDF of background mjj."""
        y = np.clip(np.asarray(mjj, dtype=np.float64) / _SQRT_S, self._y_lo, self._y_hi)
        return (self._y_antiderivative(y) - self._y_antiderivative(self._y_lo)) / np.exp(self._log_norm_y)

    def log_ps_mjj(self, mjj: np.ndarray) -> np.ndarray:
        """Exact log density of signal mjj (truncated normal); −inf outside the support."""
        s = self.signal
        mjj = np.asarray(mjj, dtype=np.float64)
        inside = (mjj >= MJJ_RANGE[0]) & (mjj <= MJJ_RANGE[1])
        val = stats.norm.logpdf(mjj, s.mjj_mean, s.mjj_sigma) - self._log_sig_norm
        return np.where(inside, val, -np.inf)

    def cdf_s_mjj(self, mjj: np.ndarray) -> np.ndarray:
        """Exact CDF of signal mjj."""
        s = self.signal
        mjj = np.clip(np.asarray(mjj, dtype=np.float64), *MJJ_RANGE)
        return (special.ndtr((mjj - s.mjj_mean) / s.mjj_sigma) - self._sig_cdf_lo) / np.exp(
            self._log_sig_norm
        )

    # ------------------------------------------------------------------------------------------------
    # per-jet densities (numpy/scipy reference)
    def _log_jet_b(self, m, t21, t32, mjj):
        b = self.background
        lm = stats.lognorm.logpdf(m, s=b.jet_mass_log_sigma, scale=b.jet_mass_fraction * mjj)
        lt = stats.beta.logpdf(t21, b.tau21_a, b.tau21_b0 + m / (m + b.tau21_b_scale))
        return lm + lt + (0.0 if t32 is None else stats.beta.logpdf(t32, b.tau32_a, b.tau32_b))

    def _log_jet_mass_s(self, m, mass):
        s = self.signal
        core = np.log(s.core_fraction) + stats.lognorm.logpdf(m, s=s.core_log_sigma, scale=mass)
        tail = np.log1p(-s.core_fraction) + stats.lognorm.logpdf(
            m, s=s.tail_log_sigma, scale=s.tail_scale * mass
        )
        return np.logaddexp(core, tail)

    def _log_jet_shape_s(self, t21, t32):
        s = self.signal
        lt = stats.beta.logpdf(t21, s.tau21_a, s.tau21_b)
        return lt + (0.0 if t32 is None else stats.beta.logpdf(t32, s.tau32_a, s.tau32_b))

    @staticmethod
    def _unpack(x: np.ndarray, feature_set: FeatureSet):
        """(m1, m2, τ21_1, τ21_2, τ32_1 | None, τ32_2 | None) of the heavier/lighter jet."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != feature_set.dim:
            raise InputError(
                f"features must have shape (n, {feature_set.dim}) for the {feature_set.name!r} set "
                f"{feature_set.names}; got {x.shape}"
            )
        if feature_set.name == "paws":
            return x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4], x[:, 5]
        # R-ANODE: (mJ2, mJ1 - mJ2, ...); the map (m1, m2) -> (m2, Δ) has unit Jacobian.
        return x[:, 0] + x[:, 1], x[:, 0], x[:, 2], x[:, 3], None, None

    # ------------------------------------------------------------------------------------------------
    # feature densities
    def log_pb_x_given_mjj(self, x: np.ndarray, mjj: np.ndarray, feature_set="paws") -> np.ndarray:
        """Exact log p_B(x | mjj) of mass-ordered jets (−inf where mj1 < mj2)."""
        fs = get_feature_set(feature_set)
        m1, m2, a1, a2, b1, b2 = self._unpack(x, fs)
        mjj = np.asarray(mjj, dtype=np.float64)
        with np.errstate(divide="ignore"):
            val = np.log(2.0) + self._log_jet_b(m1, a1, b1, mjj) + self._log_jet_b(m2, a2, b2, mjj)
        return np.where(m1 >= m2, val, -np.inf)

    def log_pb_x_sr(self, x: np.ndarray, feature_set="paws") -> np.ndarray:
        """Exact log p_B(x | SR) = log ∫_SR p_B(x | mjj) p_B(mjj) dmjj / P_B(SR), by Gauss–Legendre."""
        fs = get_feature_set(feature_set)
        x = np.asarray(x, dtype=np.float64)
        nodes, w = self.quad_nodes, self.quad_weights
        log_w = np.log(w) + self.log_pb_mjj(nodes) - np.log(self.p_sr_background)
        terms = np.stack(
            [
                self.log_pb_x_given_mjj(x, np.full(len(x), t), fs) + lw
                for t, lw in zip(nodes, log_w, strict=True)
            ],
            axis=0,
        )
        return special.logsumexp(terms, axis=0)

    def log_ps_x(self, x: np.ndarray, mx: float, my: float, feature_set="paws") -> np.ndarray:
        """Exact log p_S(x | θ) (independent of mjj), summing both jet assignments."""
        _check_theta(mx, my)
        fs = get_feature_set(feature_set)
        m1, m2, a1, a2, b1, b2 = self._unpack(x, fs)
        with np.errstate(divide="ignore"):
            masses = np.logaddexp(
                self._log_jet_mass_s(m1, mx) + self._log_jet_mass_s(m2, my),
                self._log_jet_mass_s(m1, my) + self._log_jet_mass_s(m2, mx),
            )
            val = masses + self._log_jet_shape_s(a1, b1) + self._log_jet_shape_s(a2, b2)
        return np.where(m1 >= m2, val, -np.inf)

    def log_ratio(self, x: np.ndarray, mx: float, my: float, feature_set="paws") -> np.ndarray:
        """Oracle log Λ*(x | θ) = log p_S(x | θ) − log p_B(x | SR)."""
        return self.log_ps_x(x, mx, my, feature_set) - self.log_pb_x_sr(x, feature_set)

    # ------------------------------------------------------------------------------------------------
    # sampling
    def _sample_mjj_background(self, n: int, rng: np.random.Generator) -> np.ndarray:
        u = rng.random(n)
        m = np.interp(u, self._cdf_table, self._mjj_table)
        for _ in range(3):  # Newton on the exact CDF: error ≪ 1e-6 GeV after the table guess
            m = m - (self.cdf_b_mjj(m) - u) / np.exp(self.log_pb_mjj(m))
            m = np.clip(m, *MJJ_RANGE)
        return m

    def _sample_mjj_signal(self, n: int, rng: np.random.Generator, where: str) -> np.ndarray:
        s = self.signal
        c_lo, c_hi = self._sig_cdf_lo, self._sig_cdf_hi
        z = lambda v: special.ndtr((v - s.mjj_mean) / s.mjj_sigma)
        c_sr_lo, c_sr_hi = z(self.signal_region.low), z(self.signal_region.high)
        if where == "all":
            c = rng.uniform(c_lo, c_hi, n)
        elif where == "sr":
            c = rng.uniform(c_sr_lo, c_sr_hi, n)
        else:  # outside the SR: uniform on the two CDF intervals, glued together
            left = c_sr_lo - c_lo
            v = rng.uniform(0.0, left + (c_hi - c_sr_hi), n)
            c = np.where(v < left, c_lo + v, c_sr_hi + (v - left))
        return s.mjj_mean + s.mjj_sigma * special.ndtri(c)

    def _sample_background_jets(self, mjj, rng):
        b = self.background
        n = len(mjj)
        m = np.exp(rng.normal(np.log(b.jet_mass_fraction * mjj)[:, None], b.jet_mass_log_sigma, (n, 2)))
        t21 = rng.beta(b.tau21_a, b.tau21_b0 + m / (m + b.tau21_b_scale))
        t32 = rng.beta(b.tau32_a, b.tau32_b, (n, 2))
        return m, t21, t32

    def _sample_signal_jets(self, n, mx, my, rng):
        s = self.signal
        mass = np.array([mx, my], dtype=np.float64)
        core = rng.random((n, 2)) < s.core_fraction
        mu = np.where(core, np.log(mass), np.log(s.tail_scale * mass))
        sig = np.where(core, s.core_log_sigma, s.tail_log_sigma)
        m = np.exp(rng.normal(mu, sig))
        t21 = rng.beta(s.tau21_a, s.tau21_b, (n, 2))
        t32 = rng.beta(s.tau32_a, s.tau32_b, (n, 2))
        return m, t21, t32

    @staticmethod
    def _to_events(mjj, m, t21, t32, label) -> Events:
        return Events.from_unordered(
            mjj, m[:, 0], m[:, 1], t21[:, 0], t21[:, 1], t32[:, 0], t32[:, 1], np.full(len(mjj), label)
        )

    def sample_background(self, n: int = 1_000_000, seed=None) -> Events:
        """Draw ``n`` background events over the full mjj range (label 0)."""
        n = _check_n(n)
        rng = np.random.default_rng(seed)
        mjj = self._sample_mjj_background(n, rng)
        return self._to_events(mjj, *self._sample_background_jets(mjj, rng), 0)

    def sample_background_sr(self, n: int, seed=None) -> Events:
        """Draw ``n`` background events with mjj inside the SR (exact inverse CDF on the SR interval)."""
        n = _check_n(n)
        rng = np.random.default_rng(seed)
        c_lo, c_hi = self.cdf_b_mjj(self.signal_region.low), self.cdf_b_mjj(self.signal_region.high)
        u = rng.uniform(c_lo, c_hi, n)
        m = np.interp(u, self._cdf_table, self._mjj_table)
        for _ in range(3):
            m = np.clip(m - (self.cdf_b_mjj(m) - u) / np.exp(self.log_pb_mjj(m)), *MJJ_RANGE)
        return self._to_events(m, *self._sample_background_jets(m, rng), 0)

    def sample_signal(self, n: int, mx: float, my: float, seed=None, *, region: str = "all") -> Events:
        """Draw ``n`` signal events at θ = (mX, mY) (label 1).

        ``region`` is ``"all"`` (full mjj support), ``"sr"`` (mjj in the SR) or ``"sb"`` (outside).
        """
        _check_theta(mx, my)
        n = _check_n(n)
        if region not in ("all", "sr", "sb"):
            raise InputError(f"region must be 'all', 'sr' or 'sb', got {region!r}")
        rng = np.random.default_rng(seed)
        mjj = self._sample_mjj_signal(n, rng, region)
        return self._to_events(mjj, *self._sample_signal_jets(n, mx, my, rng), 1)

    # ------------------------------------------------------------------------------------------------
    # injection
    def n_signal_sr(self, n_background_sr: int, *, mu: float | None = None, s_over_sqrt_b=None) -> int:
        """SR signal count for an SR signal fraction ``mu`` or a significance ``s_over_sqrt_b``."""
        if (mu is None) == (s_over_sqrt_b is None):
            raise InputError("give exactly one of mu (SR signal fraction) or s_over_sqrt_b")
        if mu is not None:
            if not (0.0 <= mu < 1.0):
                raise ParameterRangeError(f"mu = {mu} must be in [0, 1)")
            return int(round(mu / (1.0 - mu) * n_background_sr))
        if not (np.isfinite(s_over_sqrt_b) and s_over_sqrt_b >= 0):
            raise ParameterRangeError(f"s_over_sqrt_b = {s_over_sqrt_b} must be a finite number ≥ 0")
        return int(round(s_over_sqrt_b * np.sqrt(n_background_sr)))

    def make_dataset(
        self,
        *,
        mu: float | None = None,
        s_over_sqrt_b: float | None = None,
        mx: float = 300.0,
        my: float = 150.0,
        n_background: int = 1_000_000,
        seed=None,
    ) -> Events:
        """Background sample plus injected signal, shuffled.

        The SR gets ``n_S = round(mu / (1 - mu) * N_B,SR)`` signal events (or ``S/√B · √N_B,SR``);
        signal outside the SR is added in proportion to the signal's own mjj distribution, so the
        sidebands see the true leakage.

        Parameters
        ----------
        mu, s_over_sqrt_b : float
            Exactly one: SR signal fraction μ = S / (S + B), or the significance S / √B.
        mx, my : float
            Signal masses θ in GeV.
        n_background : int
            Background events over the full mjj range (default 1,000,000 ≈ 118k in the SR).
        seed : int or SeedSequence, optional
            One seed for the whole data set.
        """
        _check_theta(mx, my)
        self.n_signal_sr(1, mu=mu, s_over_sqrt_b=s_over_sqrt_b)  # validate before the costly generation
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        s_bkg, s_sr, s_sb, s_shuffle = ss.spawn(4)
        bkg = self.sample_background(n_background, s_bkg)
        n_b_sr = int(self.signal_region.contains(bkg.mjj).sum())
        n_s = self.n_signal_sr(n_b_sr, mu=mu, s_over_sqrt_b=s_over_sqrt_b)
        n_out = int(round(n_s * (1.0 - self.p_sr_signal) / self.p_sr_signal))
        parts = [bkg]
        if n_s:
            parts.append(self.sample_signal(n_s, mx, my, s_sr, region="sr"))
        if n_out:
            parts.append(self.sample_signal(n_out, mx, my, s_sb, region="sb"))
        return Events.concatenate(parts).shuffle(np.random.default_rng(s_shuffle))


def _check_n(n) -> int:
    if not float(n).is_integer() or n < 0:
        raise InputError(f"number of events must be a non-negative integer, got {n!r}")
    return int(n)
