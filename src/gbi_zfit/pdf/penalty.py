"""Penalty terms added to the NLL (as zfit constraints)."""

from __future__ import annotations

import tensorflow as tf
import zfit

from ..errors import InputError

__all__ = ["low_mass_penalty"]


def low_mass_penalty(
    mx, my, *, threshold: float = 85.0, scale: float = 10.0, strength: float = 1.0
) -> zfit.constraint.SimpleConstraint:
    """Exponential NLL penalty that steers the fit away from masses below ``threshold`` (GeV).

    The GBI paper adds it to avoid a background artefact at low jet mass. For each of mX, mY below the
    threshold, with d = (threshold − m) / scale, the NLL grows by ``strength · (exp(d) − 1 − d)``: zero
    with zero slope at the threshold (so Minuit sees a smooth function) and exponential beyond.

    Parameters
    ----------
    mx, my : zfit.Parameter
        The mass parameters.
    threshold, scale, strength : float
        Where the penalty starts, its e-folding length in GeV, and its size in NLL units.
    """
    if not (scale > 0 and strength >= 0):
        raise InputError(f"penalty needs scale > 0 and strength ≥ 0; got scale={scale}, strength={strength}")

    def value(params):
        total = tf.constant(0.0, tf.float64)
        for m in (params["mx"], params["my"]):
            d = tf.nn.relu((threshold - tf.cast(m, tf.float64)) / scale)
            total = total + strength * (tf.math.expm1(d) - d)
        return total

    return zfit.constraint.SimpleConstraint(value, params={"mx": mx, "my": my}, name="low_mass_penalty")
