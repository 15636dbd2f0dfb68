"""The oracle ratio of the synthetic benchmark: exact Λ*(x | θ) from the generator's densities."""

from __future__ import annotations

import tensorflow as tf

from ..data.benchmark import THETA_RANGE, LHCOSim
from ..data.benchmark_tf import BenchmarkDensitiesTF
from ..data.events import get_feature_set
from .base import RatioModel

__all__ = ["OracleRatio"]


class OracleRatio(RatioModel):
    """Exact Λ*(x | θ) = p_S(x | θ) / p_B(x | SR) of :class:`~gbi_zfit.data.benchmark.LHCOSim`.

    No learned model can do better on benchmark data: it is the physical limit used to judge them.

    Parameters
    ----------
    sim : LHCOSim, optional
        The benchmark (default: the standard one).
    feature_set : str
        ``"paws"`` (default) or ``"ranode"``.
    """

    def __init__(self, sim: LHCOSim | None = None, feature_set: str = "paws"):
        self.sim = sim or LHCOSim()
        self.feature_set = get_feature_set(feature_set)
        self.theta_bounds = (THETA_RANGE, THETA_RANGE)
        self._densities = BenchmarkDensitiesTF(self.sim, self.feature_set.name)
        self._split = None

    def log_ratio(self, x: tf.Tensor, mx: tf.Tensor, my: tf.Tensor) -> tf.Tensor:
        return self._densities.log_ratio(x, mx, my)

    def precompute(self, x: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # Only the jet-mass part of p_S depends on θ: log p_B(x | SR) (the mjj quadrature), the τ shapes
        # and the mass ordering are done once per data set.
        if self._split is None:  # compiled once for any number of events (toys call this per toy)
            spec = tf.TensorSpec([None, self.feature_set.dim], tf.float64)
            self._split = tf.function(self._densities.split_log_ratio, input_signature=[spec])
        return self._split(tf.convert_to_tensor(x, tf.float64))

    def log_ratio_precomputed(self, aux, mx, my):
        return self._densities.log_ratio_from_split(aux, mx, my)

    def __repr__(self) -> str:
        return f"OracleRatio(feature_set={self.feature_set.name!r}, sr={self.sim.signal_region!s})"
