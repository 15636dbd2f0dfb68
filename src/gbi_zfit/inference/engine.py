"""The fast likelihood engine: one compiled NLL whose events and weights can be swapped without retracing.

``RatioNLL`` evaluates

    NLL(μ, mX, mY) = − Σ_i w_i log(1 + μ (Λ(x_i | θ) − 1)) + penalty(θ) [+ extended terms]

with TensorFlow (value and exact gradient in one call) and hands it to iminuit directly. It gives the
same numbers as zfit's ``UnbinnedNLL`` of a :class:`~gbi_zfit.pdf.RatioPDF` (tested), but

* θ-independent per-event work is done once per data set (``RatioModel.precompute``: for the oracle the
  64-node mjj quadrature of p_B(x | SR); for learned models whatever they cache), and
* the compiled function takes the events as *arguments* with a variable leading dimension, so toys,
  bootstrap replicas and Asimov sets (all just new events and/or weights) reuse one graph instead of
  retracing a new zfit loss each time (which is slow and leaks memory).

Weights make bootstrap replicas (Poisson(1) weights) and unbinned Asimov data sets (reference sample
weighted by the model) first-class.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ..errors import InputError, ParameterRangeError
from ..models.base import RatioModel
from ..pdf.ratio import log_mixture_ratio

__all__ = ["PARAM_NAMES", "RatioNLL"]

PARAM_NAMES = ("mu", "mx", "my")


class RatioNLL:
    """Negative log-likelihood of SR events under μ Λ(x | θ) + 1 − μ (relative to p_B).

    Parameters
    ----------
    ratio_model : RatioModel
        Λ(x | θ).
    x : ndarray (n, d)
        SR events in the model's features.
    weights : ndarray (n,), optional
        Per-event weights (default 1).
    penalty_threshold : float or None
        Low-mass exponential penalty below this mass (GeV), as
        :func:`~gbi_zfit.pdf.low_mass_penalty`; ``None`` disables it.
    penalty_scale, penalty_strength : float
        Its e-folding length (GeV) and size (NLL units).
    background_yield : (float, float), optional
        Enables the *extended* likelihood: expected SR background count and its Gaussian uncertainty
        (e.g. from :func:`~gbi_zfit.data.mjj.fit_sidebands`). A fourth parameter ``nu_b`` (background
        yield) is then profiled with that Gaussian constraint, and the Poisson term of the observed count
        N = Σ w under ν = ν_B / (1 − μ) is added.
    """

    def __init__(
        self,
        ratio_model: RatioModel,
        x: np.ndarray,
        weights: np.ndarray | None = None,
        *,
        penalty_threshold: float | None = 85.0,
        penalty_scale: float = 10.0,
        penalty_strength: float = 1.0,
        background_yield: tuple[float, float] | None = None,
    ):
        if not isinstance(ratio_model, RatioModel):
            raise InputError(f"ratio_model must be a RatioModel, got {type(ratio_model).__name__}")
        self.ratio_model = ratio_model
        self.penalty = (
            None if penalty_threshold is None else (penalty_threshold, penalty_scale, penalty_strength)
        )
        self.extended = background_yield is not None
        if self.extended:
            try:
                nu, err = map(float, background_yield)
            except (TypeError, ValueError):
                raise InputError(
                    f"background_yield must be a pair (value, error), got {background_yield!r}"
                ) from None
            if not (nu > 0 and err > 0 and math.isfinite(nu) and math.isfinite(err)):
                raise InputError(f"background_yield must be (value > 0, error > 0), got {background_yield}")
            self.background_yield = (nu, err)
        self.param_names = PARAM_NAMES + (("nu_b",) if self.extended else ())
        self._fn = tf.function(self._value_and_grad, reduce_retracing=True)
        self._fn_value = tf.function(self.nll_tensor, reduce_retracing=True)
        self.set_data(x, weights)

    # ------------------------------------------------------------------------------------------------
    def set_data(self, x: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Replace the events (and weights); runs the model's θ-independent precomputation once."""
        x = np.asarray(x, dtype=np.float64)
        d = self.ratio_model.feature_set.dim
        if x.ndim != 2 or x.shape[1] != d or len(x) == 0:
            raise InputError(f"events must be a non-empty (n, {d}) array; got shape {x.shape}")
        if not np.isfinite(x).all():
            raise InputError("events contain NaN/inf; drop or repair them first")
        self._aux = tuple(self.ratio_model.precompute(tf.constant(x)))
        self._x = x
        self.data_version += 1  # θ tables of these events watch it (they read the weights live)
        self.n_events = len(x)
        self.set_weights(weights)

    def set_weights(self, weights: np.ndarray | None) -> None:
        """Replace the per-event weights (e.g. a bootstrap replica); ``None`` means all ones."""
        if weights is None:
            w = np.ones(self.n_events)
        else:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (self.n_events,) or not np.isfinite(w).all() or (w < 0).any():
                raise InputError(f"weights must be finite, ≥ 0 and of shape ({self.n_events},)")
        self._w = tf.constant(w)
        self.sum_weights = float(w.sum())
        self.version += 1

    #: Incremented whenever the events or the weights change.
    version: int = 0
    #: Incremented whenever the events change.
    data_version: int = 0

    @property
    def events(self) -> np.ndarray:
        """The current events (float64, (n, d)), as given to :meth:`set_data`."""
        return self._x

    @property
    def precomputed(self) -> tuple[tf.Tensor, ...]:
        """The model's θ-independent per-event tensors of the current events (``RatioModel.precompute``)."""
        return self._aux

    @property
    def weights(self) -> tf.Tensor:
        """The current per-event weights (float64 tensor, shape (n,))."""
        return self._w

    # ------------------------------------------------------------------------------------------------
    def nll_tensor(self, p: tf.Tensor, aux: tuple[tf.Tensor, ...], w: tf.Tensor) -> tf.Tensor:
        """The NLL as a TensorFlow expression of parameters ``p``, precomputed events ``aux`` and weights ``w``.

        Pure in its arguments (the engine supplies only the model and the likelihood's configuration), so
        compiled derivatives (Hessians, profiles) can take any events as inputs.
        """
        mu, mx, my = p[0], p[1], p[2]
        log_ratio = self.ratio_model.log_ratio_precomputed(aux, mx, my)
        nll = -tf.reduce_sum(w * log_mixture_ratio(log_ratio, mu))
        return nll + self.constraint_terms(p, tf.reduce_sum(w))

    def constraint_terms(self, p: tf.Tensor, n_obs: tf.Tensor) -> tf.Tensor:
        """The NLL's terms other than the events' sum: low-mass penalty and, if extended, the yield terms.

        ``n_obs`` is the observed (weighted) event count Σ w.
        """
        mx, my = p[1], p[2]
        nll = tf.zeros([], tf.float64)
        if self.penalty is not None:
            thr, scale, strength = self.penalty
            for m in (mx, my):
                d = tf.nn.relu((thr - m) / scale)
                nll = nll + strength * (tf.math.expm1(d) - d)
        if self.extended:
            nu_hat, err = self.background_yield
            nu_b = p[3]
            nu = nu_b / (1.0 - p[0])
            nll = nll + nu - n_obs * tf.math.log(nu) + 0.5 * tf.square((nu_b - nu_hat) / err)
        return nll

    def _value_and_grad(self, p, aux, w):
        with tf.GradientTape() as tape:
            tape.watch(p)
            v = self.nll_tensor(p, aux, w)
        return v, tape.gradient(v, p)

    def _check(self, params) -> tf.Tensor:
        p = np.asarray(params, dtype=np.float64)
        if p.shape != (len(self.param_names),):
            raise InputError(f"expected {len(self.param_names)} parameters {self.param_names}, got {p.shape}")
        return tf.constant(p)

    def __call__(self, params) -> float:
        """NLL at ``params`` = (μ, mX, mY[, ν_B])."""
        return float(self._fn_value(self._check(params), self._aux, self._w))

    def grad(self, params) -> np.ndarray:
        """Exact gradient of the NLL."""
        return self.value_and_grad(params)[1]

    def value_and_grad(self, params) -> tuple[float, np.ndarray]:
        v, g = self._fn(self._check(params), self._aux, self._w)
        return float(v), g.numpy()

    def log_ratio(self, mx: float, my: float) -> np.ndarray:
        """Per-event log Λ(x | θ) of the current events."""
        self.ratio_model.check_theta(mx, my)
        return self.ratio_model.log_ratio_precomputed(
            self._aux, tf.constant(mx, tf.float64), tf.constant(my, tf.float64)
        ).numpy()

    def default_limits(self, mu_bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, tuple[float, float]]:
        """Parameter limits: μ as given, θ from the ratio model, ν_B within ±10σ."""
        try:
            lo, hi = (float(v) for v in mu_bounds)
        except (TypeError, ValueError):
            raise ParameterRangeError(
                f"mu bounds must be a pair (low, high) of numbers, got {mu_bounds!r}"
            ) from None
        if not (-1.0 < lo < hi <= 1.0):
            raise ParameterRangeError(f"mu bounds {mu_bounds} must satisfy -1 < low < high ≤ 1")
        (xl, xh), (yl, yh) = self.ratio_model.theta_bounds
        limits = {"mu": (lo, hi), "mx": (xl, xh), "my": (yl, yh)}
        if self.extended:
            nu, err = self.background_yield
            limits["nu_b"] = (max(1e-9, nu - 10 * err), nu + 10 * err)
        return limits
