"""TensorFlow (float64, differentiable in θ) versions of the benchmark's exact densities.

These run inside zfit's graph. They are written independently of the numpy/scipy reference in
:mod:`gbi_zfit.data.benchmark` and tested against it to 1e-10 relative.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from .._util import as_float64
from ..errors import InputError
from .benchmark import LHCOSim
from .events import get_feature_set

__all__ = ["BenchmarkDensitiesTF"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_normal_pdf(log_m, log_scale, sigma):
    """Log density *in m* of LogNormal(log_scale, sigma), given log m."""
    z = (log_m - log_scale) / sigma
    return -0.5 * z * z - math.log(sigma) - _LOG_SQRT_2PI - log_m


def _logaddexp(a, b):
    """log(e^a + e^b) for finite a, b, without stacking (exact derivatives of any order, also at a = b)."""
    m = tf.stop_gradient(tf.maximum(a, b))
    return m + tf.math.log(tf.exp(a - m) + tf.exp(b - m))


def _log_beta_pdf(t, a, b):
    inside = (t > 0.0) & (t < 1.0)
    ts = tf.where(inside, t, tf.constant(0.5, tf.float64))  # keep log finite where we mask anyway
    a = tf.convert_to_tensor(a, tf.float64)
    b = tf.convert_to_tensor(b, tf.float64)
    lbeta = tf.math.lgamma(a) + tf.math.lgamma(b) - tf.math.lgamma(a + b)
    val = (a - 1.0) * tf.math.log(ts) + (b - 1.0) * tf.math.log1p(-ts) - lbeta
    return tf.where(inside, val, tf.constant(-np.inf, tf.float64))


class BenchmarkDensitiesTF:
    """Exact log-densities of :class:`~gbi_zfit.data.benchmark.LHCOSim` as TensorFlow functions.

    All inputs are cast to float64; ``mx`` and ``my`` may be zfit parameters or tensors, and gradients
    with respect to them are exact.

    Parameters
    ----------
    sim : LHCOSim
        The benchmark whose constants (SR, quadrature nodes, model parameters) are used.
    feature_set : str
        ``"paws"`` (6-d) or ``"ranode"`` (4-d).
    """

    def __init__(self, sim: LHCOSim | None = None, feature_set: str = "paws"):
        self.sim = sim or LHCOSim()
        self.feature_set = get_feature_set(feature_set)
        b = self.sim.background
        nodes, w = self.sim.quad_nodes, self.sim.quad_weights
        # log of (quadrature weight × p_B(mjj) / P_B(SR)) at each node, and the node's log median mass
        self._log_node_w = tf.constant(
            np.log(w) + self.sim.log_pb_mjj(nodes) - np.log(self.sim.p_sr_background), tf.float64
        )
        self._log_node_scale = tf.constant(np.log(b.jet_mass_fraction * nodes), tf.float64)

    def _unpack(self, x):
        x = tf.convert_to_tensor(x, tf.float64)
        if x.shape.rank != 2 or (x.shape[-1] is not None and x.shape[-1] != self.feature_set.dim):
            raise InputError(
                f"features must have shape (n, {self.feature_set.dim}) for the {self.feature_set.name!r} "
                f"set {self.feature_set.names}; got {tuple(x.shape)}"
            )
        if self.feature_set.name == "paws":
            return x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4], x[:, 5]
        return x[:, 0] + x[:, 1], x[:, 0], x[:, 2], x[:, 3], None, None

    @staticmethod
    def _ordered(m1, m2, val):
        return tf.where(m1 >= m2, val, tf.constant(-np.inf, tf.float64))

    def _log_shape_b(self, m, t21, t32):
        b = self.sim.background
        val = _log_beta_pdf(t21, b.tau21_a, b.tau21_b0 + m / (m + b.tau21_b_scale))
        if t32 is not None:
            val = val + _log_beta_pdf(t32, b.tau32_a, b.tau32_b)
        return val

    def log_pb_x_given_mjj(self, x, mjj):
        """log p_B(x | mjj) for one mjj per event."""
        b = self.sim.background
        m1, m2, a1, a2, c1, c2 = self._unpack(x)
        log_scale = tf.math.log(b.jet_mass_fraction * tf.convert_to_tensor(mjj, tf.float64))
        sig = b.jet_mass_log_sigma
        val = (
            math.log(2.0)
            + _log_normal_pdf(tf.math.log(m1), log_scale, sig)
            + _log_normal_pdf(tf.math.log(m2), log_scale, sig)
            + self._log_shape_b(m1, a1, c1)
            + self._log_shape_b(m2, a2, c2)
        )
        return self._ordered(m1, m2, val)

    def log_pb_x_sr(self, x):
        """log p_B(x | SR) by Gauss–Legendre quadrature over mjj in the SR."""
        b = self.sim.background
        m1, m2, a1, a2, c1, c2 = self._unpack(x)
        sig = b.jet_mass_log_sigma
        # Only the jet masses depend on mjj. With l_i = ln m_i and s = ln(0.025 mjj):
        # (l1 - s)² + (l2 - s)² = 2 (l̄ - s)² + (l1 - l2)² / 2, so the integral over mjj is a function of
        # l̄ = (l1 + l2) / 2 alone: one (n, n_quad) term instead of two log-normals per node (≈ 3× faster).
        lm1, lm2 = tf.math.log(m1), tf.math.log(m2)
        lbar = 0.5 * (lm1 + lm2)[:, None]
        integral = tf.reduce_logsumexp(
            -tf.square(lbar - self._log_node_scale[None, :]) / (sig * sig) + self._log_node_w[None, :], axis=1
        )
        mass_part = (
            integral
            - tf.square(lm1 - lm2) / (4.0 * sig * sig)
            - (lm1 + lm2)
            - 2.0 * math.log(sig)
            - 2.0 * _LOG_SQRT_2PI
        )
        val = math.log(2.0) + mass_part + self._log_shape_b(m1, a1, c1) + self._log_shape_b(m2, a2, c2)
        return self._ordered(m1, m2, val)

    def _log_jet_mass_s(self, log_m, mass):
        s = self.sim.signal
        log_mass = tf.math.log(as_float64(mass))
        core = math.log(s.core_fraction) + _log_normal_pdf(log_m, log_mass, s.core_log_sigma)
        tail = math.log1p(-s.core_fraction) + _log_normal_pdf(
            log_m, log_mass + math.log(s.tail_scale), s.tail_log_sigma
        )
        return _logaddexp(core, tail)

    def log_ps_x(self, x, mx, my):
        """log p_S(x | θ), both jet assignments summed; differentiable in (mx, my)."""
        s = self.sim.signal
        m1, m2, a1, a2, c1, c2 = self._unpack(x)
        masses = self._log_ps_masses(tf.math.log(m1), tf.math.log(m2), mx, my)
        shape = _log_beta_pdf(a1, s.tau21_a, s.tau21_b) + _log_beta_pdf(a2, s.tau21_a, s.tau21_b)
        if c1 is not None:
            shape = shape + _log_beta_pdf(c1, s.tau32_a, s.tau32_b) + _log_beta_pdf(c2, s.tau32_a, s.tau32_b)
        return self._ordered(m1, m2, masses + shape)

    def _log_ps_masses(self, lm1, lm2, mx, my):
        """log of the jet-mass factor of p_S, both jet assignments summed (the only θ-dependent part)."""
        return _logaddexp(
            self._log_jet_mass_s(lm1, mx) + self._log_jet_mass_s(lm2, my),
            self._log_jet_mass_s(lm1, my) + self._log_jet_mass_s(lm2, mx),
        )

    def split_log_ratio(self, x):
        """(log m1, log m2, rest): log Λ* = jet-mass part of log p_S(θ) + rest, rest θ-independent."""
        s = self.sim.signal
        m1, m2, a1, a2, c1, c2 = self._unpack(x)
        shape = _log_beta_pdf(a1, s.tau21_a, s.tau21_b) + _log_beta_pdf(a2, s.tau21_a, s.tau21_b)
        if c1 is not None:
            shape = shape + _log_beta_pdf(c1, s.tau32_a, s.tau32_b) + _log_beta_pdf(c2, s.tau32_a, s.tau32_b)
        rest = self._ordered(m1, m2, shape) - self.log_pb_x_sr(x)
        return tf.math.log(m1), tf.math.log(m2), rest

    def log_ratio_from_split(self, split, mx, my):
        """log Λ* from :meth:`split_log_ratio` at θ = (mx, my)."""
        lm1, lm2, rest = split
        return self._log_ps_masses(lm1, lm2, mx, my) + rest

    def log_ratio(self, x, mx, my):
        """Oracle log Λ*(x | θ) = log p_S(x | θ) − log p_B(x | SR)."""
        return self.log_ps_x(x, mx, my) - self.log_pb_x_sr(x)
