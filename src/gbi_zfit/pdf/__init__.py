"""zfit PDFs backed by (learned or exact) density-ratio and density models.

:class:`FlowPDF` (TensorFlow-Probability flows) loads on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from .penalty import low_mass_penalty
from .ratio import RatioPDF

_LAZY = {"FlowPDF": "gbi_zfit.pdf.flow"}

__all__ = ["FlowPDF", "RatioPDF", "low_mass_penalty"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gbi_zfit.pdf' has no attribute {name!r}")
