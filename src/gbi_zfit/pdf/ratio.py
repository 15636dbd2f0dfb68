"""The weakly supervised ratio PDF Λ_WS(x | μ, θ) = μ Λ(x | θ) + 1 − μ as a zfit PDF."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import zfit
import zfit.z.numpy as znp
from zfit import z

from .._util import as_float64
from ..errors import InputError
from ..models.base import RatioModel

__all__ = ["RatioPDF"]

# exp(600) is finite in float64; no sane ratio model reaches it, and clipping keeps gradients finite.
_MAX_LOG_RATIO = 600.0


def log_mixture_ratio(log_ratio: tf.Tensor, mu: tf.Tensor) -> tf.Tensor:
    """log(μ Λ + 1 − μ) = log1p(μ (Λ − 1)), stable for μ → 0 and with finite ∂/∂μ at μ = 0."""
    mu = as_float64(mu)
    return tf.math.log1p(mu * tf.math.expm1(tf.minimum(log_ratio, _MAX_LOG_RATIO)))


class RatioPDF(zfit.pdf.BasePDF):
    """Signal-plus-background density *relative to the SR background*: μ Λ(x | θ) + 1 − μ.

    ``p(x) = p_B(x | SR) · (μ Λ(x | θ) + 1 − μ)``; because p_B does not depend on (μ, θ), the PDF returns
    only the factor, which is already normalised *with respect to the background*
    (E_B[μ Λ + 1 − μ] = 1 when E_B[Λ] = 1). zfit is told the PDF is normalised over its space, so it
    never tries to integrate it numerically over the feature space. Σ log of this PDF is the
    log-likelihood up to the constant Σ log p_B(x), so fits, profiles and likelihood ratios are exact.

    Parameters
    ----------
    obs : zfit.Space
        The feature space, e.g. :func:`gbi_zfit.feature_space` of the ratio model's feature set.
    ratio_model : RatioModel
        Any Λ(x | θ) model (oracle or learned).
    mu, mx, my : zfit.Parameter or float
        Signal fraction in the SR and the signal masses (GeV).
    reference : array (n_ref, d), optional
        Background events of the SR in the same features. Needed for :meth:`sample`: samples are drawn
        by weighted resampling (with replacement) of this sample with weights Λ_WS — the exact way
        to sample a density known only relative to p_B (zfit's accept–reject would sample Λ_WS as if
        it were a density in x, which it is not). Use a reference much larger than the toys you draw.
    extended : zfit.Parameter or float, optional
        Expected number of events, for an extended likelihood (``zfit.loss.ExtendedUnbinnedNLL``), e.g.
        a ``ComposedParameter`` ν_B / (1 − μ) with ν_B constrained by the sideband fit.

    Examples
    --------
    >>> obs = gbi_zfit.feature_space("paws")
    >>> pdf = RatioPDF(obs, OracleRatio(), mu=zfit.Parameter("mu", 0.01, 0, 1), mx=300.0, my=150.0)
    >>> nll = zfit.loss.UnbinnedNLL(pdf, gbi_zfit.to_zfit_data(sr_events, obs))
    """

    def __init__(
        self,
        obs,
        ratio_model: RatioModel,
        mu,
        mx,
        my,
        *,
        reference: np.ndarray | None = None,
        extended=None,
        name: str = "RatioPDF",
        label: str | None = None,
    ):
        if not isinstance(ratio_model, RatioModel):
            raise InputError(f"ratio_model must be a gbi_zfit RatioModel, got {type(ratio_model).__name__}")
        space = zfit.Space(obs) if not isinstance(obs, zfit.Space) else obs
        if tuple(space.obs) != tuple(ratio_model.feature_set.names):
            raise InputError(
                f"obs {space.obs} do not match the ratio model's features {ratio_model.feature_set.names} "
                "(same names, same order); build obs with gbi_zfit.feature_space(model.feature_set)"
            )
        self.ratio_model = ratio_model
        self._reference = None
        if reference is not None:
            ref = np.asarray(reference, dtype=np.float64)
            if ref.ndim != 2 or ref.shape[1] != space.n_obs or len(ref) == 0 or not np.isfinite(ref).all():
                raise InputError(
                    f"reference must be a finite, non-empty (n, {space.n_obs}) array; got shape {ref.shape}"
                )
            self._reference = tf.constant(ref)
            # θ-independent work on the reference (for the oracle: the mjj quadrature of p_B) is done once
            # here, not once per sample() call, so drawing many toys costs one Λ(θ) evaluation each
            self._reference_aux = tuple(ratio_model.precompute(self._reference))
        super().__init__(
            obs=space, params={"mu": mu, "mx": mx, "my": my}, extended=extended, name=name, label=label
        )

    @property
    def reference(self) -> np.ndarray | None:
        """The background reference sample used for sampling (or ``None``)."""
        return None if self._reference is None else self._reference.numpy()

    def _log_ratio_ws(self, x, params):
        # zfit drops Data rows outside the space, but a raw array reaches here as is: refuse NaN/inf
        # rather than return NaN densities (eager calls only; a traced graph cannot raise our errors)
        if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(x))):
            n_bad = int(tf.reduce_sum(tf.cast(~tf.reduce_all(tf.math.is_finite(x), axis=-1), tf.int32)))
            raise InputError(f"x contains NaN/inf in {n_bad} event(s); drop or repair those events")
        log_ratio = self.ratio_model.log_ratio(x, params["mx"], params["my"])
        return log_mixture_ratio(log_ratio, params["mu"])

    @zfit.supports(norm="space")
    def _log_pdf(self, x, norm, *, params):
        del norm  # normalised with respect to p_B over the full space, see the class docstring
        return self._log_ratio_ws(znp.asarray(x.value()), params)

    @zfit.supports(norm="space")
    def _pdf(self, x, norm, *, params):
        del norm
        return znp.exp(self._log_ratio_ws(znp.asarray(x.value()), params))

    @zfit.supports()
    def _sample(self, n, limits, *, params=None):
        del limits  # the reference lies inside the space by construction
        if self._reference is None:
            raise InputError(
                "RatioPDF.sample needs a background reference sample (reference=...) to resample from"
            )
        params = params or self.params
        log_ratio = self.ratio_model.log_ratio_precomputed(self._reference_aux, params["mx"], params["my"])
        log_w = log_mixture_ratio(log_ratio, params["mu"])
        cdf = tf.cumsum(znp.exp(log_w - tf.reduce_max(log_w)))
        u = z.random.uniform(shape=(n,), dtype=tf.float64) * cdf[-1]
        idx = tf.minimum(tf.searchsorted(cdf, u, side="right"), tf.shape(cdf)[0] - 1)
        return tf.gather(self._reference, idx)
