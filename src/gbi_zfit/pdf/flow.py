"""The signal-region background density p_B(x | SR) of a flow ensemble as a zfit PDF."""

from __future__ import annotations

import collections
import hashlib
import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import zfit
import zfit.z.numpy as znp
from zfit import z

from ..data.mjj import MjjFitResult
from ..data.regions import SignalRegion
from ..errors import InputError, RegionError
from ..models.flows import BackgroundFlowEnsemble

__all__ = ["FlowPDF"]

_CDF_GRID = 4001  # points of the mjj inverse-CDF table used for sampling (error ≪ 0.01 GeV)


class _LRUCache:
    """Thread-safe least-recently-used map (a plain object: zfit/tf.Module would wrap a dict attribute)."""

    def __init__(self, size: int):
        self.size = max(int(size), 1)
        self._data: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class FlowPDF(zfit.pdf.BasePDF):
    """p_B(x | SR) = ∫_SR p_B(x | mjj) p(mjj | SR) dmjj from a background flow ensemble, as a zfit PDF.

    The integral over mjj is an n_quad-node Gauss–Legendre rule on the SR, with p(mjj | SR) from the
    sideband fit of the dijet spectrum (or any density you pass). The quadrature weights
    w_q p(mjj_q) are renormalised to sum to 1, so the PDF is a proper, normalised density over the
    feature space whatever the quadrature error of the p(mjj) integral (which is ~1e-12 for a smooth
    spectrum over the SR with 16+ nodes). Since every flow is normalised, so is their mixture: zfit is
    told (``norm="space"``) and never integrates the PDF numerically. The PDF has no parameters; it is
    the background component of any zfit model (``zfit.pdf.SumPDF([signal, FlowPDF(...)], frac)``) or
    the fixed p_B of R-ANODE.

    Parameters
    ----------
    obs : zfit.Space
        The feature space, e.g. :func:`gbi_zfit.feature_space("ranode") <gbi_zfit.feature_space>`;
        names and order must be the flow's features.
    flow : BackgroundFlowEnsemble
        The trained p_B(x | mjj).
    mjj_pdf : MjjFitResult or callable
        The SR mjj density: a sideband fit (:func:`gbi_zfit.fit_sidebands`; its SR is used) or a callable
        ``f(mjj ndarray) -> density ndarray`` (normalisation irrelevant), then ``signal_region`` is needed.
    signal_region : SignalRegion or (low, high), optional
        The SR to marginalise over; default that of ``mjj_pdf`` (or of the flow for a callable).
    n_quad : int
        Gauss–Legendre nodes over the SR (default 24). Cost ∝ n_quad × ensemble size.
    cache : bool
        Memoise log p_B per distinct data array (default True). p_B has no parameters, so in a fit it
        is the same at every step: with the cache, a loss evaluates the flows once per data set instead
        of at every Minuit call (the first call costs n × n_quad × K flow evaluations, later ones only a
        SHA-1 of the data). Implemented with ``tf.py_function`` inside zfit's graph; with
        ``cache=False`` the PDF is a pure TensorFlow graph (e.g. for XLA), recomputed at every call.
    cache_size : int
        Data arrays remembered (least recently used are dropped).

    Raises
    ------
    InputError
        obs ≠ flow features, bad ``n_quad``, or a p(mjj) that is not positive and finite on the SR.
    RegionError
        The SR is not inside the mjj range the flow was trained on (no extrapolation).

    Examples
    --------
    >>> obs = gbi_zfit.feature_space("ranode")
    >>> p_b = FlowPDF(obs, flow, mjj_fit)
    >>> frac = zfit.Parameter("frac", 0.01, 0, 1)
    >>> model = zfit.pdf.SumPDF([signal_pdf, p_b], fracs=frac)
    >>> nll = zfit.loss.UnbinnedNLL(model, gbi_zfit.to_zfit_data(sr_events, obs, "ranode"))
    """

    def __init__(
        self,
        obs,
        flow: BackgroundFlowEnsemble,
        mjj_pdf: MjjFitResult | Callable[[np.ndarray], np.ndarray],
        *,
        signal_region: SignalRegion | tuple[float, float] | None = None,
        n_quad: int = 24,
        cache: bool = True,
        cache_size: int = 8,
        name: str = "FlowPDF",
        label: str | None = None,
    ):
        if not isinstance(flow, BackgroundFlowEnsemble):
            raise InputError(f"flow must be a BackgroundFlowEnsemble, got {type(flow).__name__}")
        space = obs if isinstance(obs, zfit.Space) else zfit.Space(obs)
        if tuple(space.obs) != tuple(flow.feature_names):
            raise InputError(
                f"obs {space.obs} do not match the flow's features {flow.feature_names} (same names, same "
                "order); build obs with gbi_zfit.feature_space('ranode')"
            )
        if not (isinstance(n_quad, int | np.integer) and 2 <= n_quad <= 256):
            raise InputError(f"n_quad must be an integer in [2, 256], got {n_quad!r}")
        sr = self._signal_region(signal_region, mjj_pdf, flow)
        lo, hi = flow.mjj_range
        if sr.low < lo or sr.high > hi:
            raise RegionError(
                f"the signal region {sr} is not inside the mjj range [{lo:.6g}, {hi:.6g}] GeV the flow was "
                "trained on; the flow cannot extrapolate"
            )
        density = mjj_pdf.pdf if isinstance(mjj_pdf, MjjFitResult) else mjj_pdf
        if not callable(density):
            raise InputError(f"mjj_pdf must be an MjjFitResult or a callable, got {type(mjj_pdf).__name__}")
        x, w = np.polynomial.legendre.leggauss(int(n_quad))
        half = 0.5 * (sr.high - sr.low)
        nodes = sr.low + half * (x + 1.0)
        p_nodes = np.asarray(density(nodes), np.float64).reshape(-1)
        if p_nodes.shape != nodes.shape or not (np.isfinite(p_nodes).all() and (p_nodes > 0).all()):
            raise InputError(
                "p(mjj) must be positive and finite at every quadrature node in the signal region"
            )
        weights = half * w * p_nodes
        self.flow = flow
        self.signal_region = sr
        self.n_quad = int(n_quad)
        self.mjj_nodes = nodes
        self.mjj_weights = weights / weights.sum()
        self._nodes = tf.constant(nodes, tf.float64)
        self._log_w = tf.constant(np.log(self.mjj_weights), tf.float64)
        self._cdf_grid, self._cdf_values = self._mjj_table(mjj_pdf, density, sr)
        self._density_cache = _LRUCache(cache_size) if cache else None
        self._compiled = tf.function(
            self._log_density_tf,
            input_signature=[tf.TensorSpec([None, flow.dim], tf.float64)],
            autograph=False,
        )
        super().__init__(obs=space, params={}, name=name, label=label)

    # -- set-up helpers -----------------------------------------------------------------------------
    @staticmethod
    def _signal_region(signal_region, mjj_pdf, flow) -> SignalRegion:
        if signal_region is not None:
            return signal_region if isinstance(signal_region, SignalRegion) else SignalRegion(*signal_region)
        if isinstance(mjj_pdf, MjjFitResult):
            return SignalRegion(*mjj_pdf.signal_region)
        if flow.signal_region is not None:
            return flow.signal_region
        raise InputError("signal_region is required when mjj_pdf is a plain callable")

    @staticmethod
    def _mjj_table(mjj_pdf, density, sr: SignalRegion) -> tuple[tf.Tensor, tf.Tensor]:
        """(grid, CDF on the grid) of p(mjj | SR) for inverse-CDF sampling in TF."""
        grid = np.linspace(sr.low, sr.high, _CDF_GRID)
        if isinstance(mjj_pdf, MjjFitResult):
            cdf = mjj_pdf.cdf(grid)  # exact
        else:
            p = np.asarray(density(grid), np.float64)
            if not (np.isfinite(p).all() and (p >= 0).all()):
                raise InputError("p(mjj) must be non-negative and finite on the signal region")
            cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(grid))])
        cdf = (cdf - cdf[0]) / (cdf[-1] - cdf[0])
        return tf.constant(grid, tf.float64), tf.constant(cdf, tf.float64)

    # -- density ------------------------------------------------------------------------------------
    def _log_density_tf(self, x: tf.Tensor) -> tf.Tensor:
        return self.flow.log_prob_marginal(x, self._nodes, self._log_w)

    def _cached_numpy(self, x: tf.Tensor) -> np.ndarray:
        arr = np.ascontiguousarray(x.numpy(), dtype=np.float64)
        key = (arr.shape, hashlib.sha1(arr.tobytes()).hexdigest())
        value = self._density_cache.get(key)
        if value is None:
            value = self._compiled(tf.constant(arr)).numpy() if len(arr) else np.zeros(0)
            value.setflags(write=False)
            self._density_cache.put(key, value)
        return value

    def _log_density(self, x: tf.Tensor) -> tf.Tensor:
        if self._density_cache is None:
            return self._log_density_tf(x)
        out = tf.py_function(self._cached_numpy, [x], tf.float64)
        out.set_shape(x.shape[:1])
        return out

    def clear_cache(self) -> None:
        """Forget the memoised densities."""
        if self._density_cache is not None:
            self._density_cache.clear()

    def log_density(self, x: Any) -> np.ndarray:
        """log p_B(x | SR) of an (n, d) array, with input checks; numpy float64 (per unit of x).

        Raises
        ------
        InputError
            Wrong shape or NaN/inf.
        """
        arr = np.asarray(x, np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.flow.dim:
            raise InputError(
                f"x must have shape (n, {self.flow.dim}) for {self.flow.feature_names}; got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise InputError("x contains NaN/inf; drop or repair those events")
        if self._density_cache is None:
            return self._compiled(tf.constant(arr)).numpy()
        return self._cached_numpy(tf.constant(arr))

    @zfit.supports(norm="space")
    def _log_pdf(self, x, norm, *, params):
        del norm, params  # normalised over the whole feature space by construction; no parameters
        return self._log_density(znp.asarray(x.value()))

    @zfit.supports(norm="space")
    def _pdf(self, x, norm, *, params):
        del norm, params
        return znp.exp(self._log_density(znp.asarray(x.value())))

    # -- sampling -----------------------------------------------------------------------------------
    def sample_mjj_tf(self, n) -> tf.Tensor:
        """n values of mjj ~ p(mjj | SR) by inverse CDF on a table (zfit's random generator)."""
        u = z.random.uniform(shape=(n,), dtype=tf.float64)
        grid, cdf = self._cdf_grid, self._cdf_values
        g = tf.shape(grid)[0]
        idx = tf.clip_by_value(tf.searchsorted(cdf, u, side="right"), 1, g - 1)
        c0, c1 = tf.gather(cdf, idx - 1), tf.gather(cdf, idx)
        m0, m1 = tf.gather(grid, idx - 1), tf.gather(grid, idx)
        t = tf.math.divide_no_nan(u - c0, c1 - c0)
        upper = math.nextafter(self.signal_region.high, -math.inf)  # the SR is [low, high)
        return tf.clip_by_value(m0 + t * (m1 - m0), self.signal_region.low, upper)

    @zfit.supports()
    def _sample(self, n, limits, *, params=None):
        """mjj from p(mjj | SR), then x from a uniformly chosen ensemble member at that mjj (exact)."""
        del limits, params  # flow samples lie in the open domain of the features, inside the space
        mjj = self.sample_mjj_tf(n)
        seeds = z.random.get_prng().uniform(
            shape=(2 * self.flow.n_members + 1,), minval=0, maxval=2**31 - 1, dtype=tf.int64
        )
        return self.flow.sample_tf(mjj, seeds)
