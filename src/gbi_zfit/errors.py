"""Typed exceptions of gbi_zfit.

Every error the package raises on purpose derives from :class:`GBIError`, so a caller can catch all of
them at once; the subclasses say *what* went wrong. Messages state the problem and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataFileError",
    "FitError",
    "GBIError",
    "InputError",
    "ModelFileError",
    "ParameterRangeError",
    "RegionError",
]


class GBIError(Exception):
    """Base class of all gbi_zfit errors."""


class InputError(GBIError, ValueError):
    """Bad input values: NaN/inf, wrong shape, missing or unexpected columns, suspicious units."""


class RegionError(InputError):
    """A region (signal region or sidebands) has no events, or its bounds are inconsistent."""


class ParameterRangeError(InputError):
    """A parameter (e.g. θ = (mX, mY) or μ) is outside the range the model supports."""


class DataFileError(GBIError, OSError):
    """A data file cannot be read or written: missing, corrupt, wrong tree/key or wrong layout."""


class ModelFileError(GBIError, OSError):
    """A saved model is corrupt, incomplete or incompatible with this package or its inputs."""


class ConfigError(GBIError, ValueError):
    """A configuration file or object is invalid."""


class FitError(GBIError, RuntimeError):
    """A fit did not converge to a valid minimum; carries the minimizer diagnostics."""

    def __init__(self, message: str, diagnostics: dict | None = None):
        super().__init__(message)
        self.diagnostics = diagnostics or {}
