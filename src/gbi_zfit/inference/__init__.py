"""Fits, intervals and pseudo-experiments."""

from .fit import FitResult, SignalFitter

__all__ = ["FitResult", "SignalFitter"]
