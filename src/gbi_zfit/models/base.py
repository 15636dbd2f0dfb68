"""The interface every likelihood-ratio model implements."""

from __future__ import annotations

import abc

import numpy as np
import tensorflow as tf

from ..data.events import FeatureSet, get_feature_set
from ..errors import InputError, ParameterRangeError

__all__ = ["RatioModel"]


class RatioModel(abc.ABC):
    """A signal-over-background density ratio Λ(x | θ) = p_S(x | θ) / p_B(x | SR), θ = (mX, mY).

    The zfit :class:`~gbi_zfit.pdf.RatioPDF` accepts any subclass: the exact oracle of the benchmark,
    or learned classifier ensembles. Subclasses implement :meth:`log_ratio` in TensorFlow (float64
    output, differentiable in ``mx`` and ``my``) and set :attr:`feature_set` and :attr:`theta_bounds`.
    """

    #: Feature set the model expects (columns of ``x`` in order).
    feature_set: FeatureSet = get_feature_set("paws")
    #: True for models whose evaluation per θ is expensive (networks): fits then tabulate log Λ in θ
    #: (:mod:`gbi_zfit.inference.table`) instead of evaluating the model at every step.
    theta_fast_preferred: bool = False
    #: ((mX_min, mX_max), (mY_min, mY_max)) in GeV where the model is valid.
    theta_bounds: tuple[tuple[float, float], tuple[float, float]] = ((25.0, 700.0), (25.0, 700.0))

    @abc.abstractmethod
    def log_ratio(self, x: tf.Tensor, mx: tf.Tensor, my: tf.Tensor) -> tf.Tensor:
        """log Λ(x | mX, mY) for ``x`` of shape (n, d); returns shape (n,), float64."""

    def precompute(self, x: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """θ-independent per-event quantities for :meth:`log_ratio_precomputed` (default: ``(x,)``).

        Fits on a fixed event set call this once, then evaluate :meth:`log_ratio_precomputed` at every
        step. Models override the pair to move work out of the minimisation loop; the result must equal
        :meth:`log_ratio`.
        """
        return (tf.convert_to_tensor(x, tf.float64),)

    def log_ratio_precomputed(self, aux: tuple[tf.Tensor, ...], mx: tf.Tensor, my: tf.Tensor) -> tf.Tensor:
        """log Λ from the output of :meth:`precompute`."""
        return self.log_ratio(aux[0], mx, my)

    def log_ratio_nodes(
        self, aux: tuple[tf.Tensor, ...], theta: np.ndarray, *, derivatives: bool = False
    ) -> np.ndarray:
        """log Λ from :meth:`precompute` output at several θ (shape (P, 2)), no gradient tape.

        Returns (P, n), or with ``derivatives`` (P, 4, n): log Λ, ∂/∂mX, ∂/∂mY and ∂²/∂mX∂mY per event
        (GeV units) — the data of a bicubic Hermite table in θ (:mod:`gbi_zfit.inference.table`). This
        default uses nested forward-mode autodiff of :meth:`log_ratio_precomputed`; models override it
        with a batched, cheaper evaluation.
        """
        theta = np.asarray(theta, np.float64).reshape(-1, 2)
        out = []
        for a, b in theta:
            self.check_theta(a, b)
            mx, my = tf.constant(a, tf.float64), tf.constant(b, tf.float64)
            if not derivatives:
                out.append(self.log_ratio_precomputed(aux, mx, my).numpy())
                continue
            one = tf.constant(1.0, tf.float64)
            with tf.autodiff.ForwardAccumulator(my, one) as acc_y:
                with tf.autodiff.ForwardAccumulator(mx, one) as acc_x:
                    f = self.log_ratio_precomputed(aux, mx, my)
                fx = acc_x.jvp(f, unconnected_gradients="zero")
            fy = acc_y.jvp(f, unconnected_gradients="zero")
            fxy = acc_y.jvp(fx, unconnected_gradients="zero")
            out.append(np.stack([t.numpy() for t in (f, fx, fy, fxy)]))
        return np.stack(out)

    def log_ratio_numpy(self, x: np.ndarray, mx: float, my: float) -> np.ndarray:
        """:meth:`log_ratio` on numpy input, after checking θ is in range and ``x`` is a finite (n, d) array."""
        self.check_theta(mx, my)
        return self._log_ratio_checked(self._checked_events(x), float(mx), float(my))

    def _checked_events(self, x) -> np.ndarray:
        d = self.feature_set.dim
        try:
            arr = np.asarray(x, np.float64)
        except (TypeError, ValueError):
            raise InputError(f"x must be a numeric (n, {d}) array of {self.feature_set.names}") from None
        if arr.ndim != 2 or arr.shape[1] != d:
            raise InputError(
                f"x must have shape (n, {d}) for features {self.feature_set.names}; got {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise InputError("x contains NaN/inf; drop or repair those events")
        return arr

    def _log_ratio_checked(self, x: np.ndarray, mx: float, my: float) -> np.ndarray:
        return self.log_ratio(tf.constant(x), mx, my).numpy()

    def check_theta(self, mx: float, my: float) -> None:
        """Raise :class:`ParameterRangeError` if θ is outside :attr:`theta_bounds`."""
        for name, val, (lo, hi) in zip(("mX", "mY"), (mx, my), self.theta_bounds, strict=True):
            try:
                val = float(val)
            except (TypeError, ValueError):
                raise ParameterRangeError(f"{name} must be a number in GeV, got {val!r}") from None
            if not (np.isfinite(val) and lo <= val <= hi):
                raise ParameterRangeError(
                    f"{name} = {val} GeV is outside the range [{lo}, {hi}] GeV this ratio model was built "
                    "for; restrict the parameter limits or retrain on a wider mass grid"
                )
