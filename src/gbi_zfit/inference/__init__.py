"""Fits, intervals and pseudo-experiments."""

from .._util import lazy_getattr
from .fit import FitResult, SignalFitter

# public name -> module that defines it, imported on first use
_LAZY = {
    "SpuriousSignal": "gbi_zfit.inference.systematics",
    "SystematicResult": "gbi_zfit.inference.systematics",
    "profile_with_spurious_signal": "gbi_zfit.inference.systematics",
}

__all__ = ["FitResult", "SignalFitter", "SpuriousSignal", "SystematicResult", "profile_with_spurious_signal"]

__getattr__ = lazy_getattr(globals(), _LAZY)
