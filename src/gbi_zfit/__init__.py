"""gbi_zfit: Generator-Based Inference for resonant new-physics searches, as zfit PDFs.

The public API is small; heavy dependencies (TensorFlow, zfit) load on first use of an attribute, so
``import gbi_zfit`` and the ``gbi`` command start quickly.

>>> import gbi_zfit as gz
>>> sim = gz.LHCOSim()
>>> data = sim.make_dataset(s_over_sqrt_b=1.0, mx=300, my=150, seed=1)
>>> sr = sim.signal_region.signal_region(data)
>>> result = gz.SignalFitter(gz.OracleRatio(sim), sr).fit(start={"mu": 0.003, "mx": 280, "my": 160})
"""

from __future__ import annotations

from . import errors
from ._util import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Events": "gbi_zfit.data.events",
    "FeatureSet": "gbi_zfit.data.events",
    "SignalRegion": "gbi_zfit.data.regions",
    "LHCOSim": "gbi_zfit.data.benchmark",
    "feature_space": "gbi_zfit.data.convert",
    "to_zfit_data": "gbi_zfit.data.convert",
    "fit_sidebands": "gbi_zfit.data.mjj",
    "read_events": "gbi_zfit.data.io",
    "write_events": "gbi_zfit.data.io",
    "RatioModel": "gbi_zfit.models.base",
    "OracleRatio": "gbi_zfit.models.oracle",
    "RatioPDF": "gbi_zfit.pdf.ratio",
    "low_mass_penalty": "gbi_zfit.pdf.penalty",
    "SignalFitter": "gbi_zfit.inference.fit",
    "FitResult": "gbi_zfit.inference.fit",
}

__all__ = [  # noqa: RUF022 -- grouped by layer, like _LAZY
    "__version__",
    "errors",
    "Events",
    "FeatureSet",
    "SignalRegion",
    "LHCOSim",
    "feature_space",
    "to_zfit_data",
    "fit_sidebands",
    "read_events",
    "write_events",
    "RatioModel",
    "OracleRatio",
    "RatioPDF",
    "low_mass_penalty",
    "SignalFitter",
    "FitResult",
]


__getattr__ = lazy_getattr(globals(), _LAZY)


def __dir__() -> list[str]:
    return __all__
