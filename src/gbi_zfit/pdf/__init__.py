"""zfit PDFs backed by (learned or exact) density-ratio and density models.

:class:`FlowPDF` (TensorFlow-Probability flows) loads on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from .._util import lazy_getattr
from .penalty import low_mass_penalty
from .ratio import RatioPDF

_LAZY = {"FlowPDF": "gbi_zfit.pdf.flow"}

__all__ = ["FlowPDF", "RatioPDF", "low_mass_penalty"]


__getattr__ = lazy_getattr(globals(), _LAZY)
