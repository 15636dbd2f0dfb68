"""Conversion of events to zfit spaces and data sets."""

from __future__ import annotations

import numpy as np
import zfit

from ..errors import InputError
from .events import Events, FeatureSet, get_feature_set

__all__ = ["feature_space", "to_zfit_data"]

# Wide, physical limits: zfit drops events outside a space's limits, so these must never cut real events.
_LIMITS = {
    "mj1": (0.0, 14000.0),
    "mj2": (0.0, 14000.0),
    "delta_mj": (0.0, 14000.0),
    "tau21_j1": (0.0, 1.0),
    "tau21_j2": (0.0, 1.0),
    "tau32_j1": (0.0, 1.0),
    "tau32_j2": (0.0, 1.0),
}


def feature_space(feature_set: str | FeatureSet = "paws") -> zfit.Space:
    """The zfit observable space of a feature set (one named obs per feature, physical limits)."""
    fs = get_feature_set(feature_set)
    spaces = [zfit.Space(name, limits=_LIMITS[name]) for name in fs.names]
    space = spaces[0]
    for s in spaces[1:]:
        space = space * s
    return space


def to_zfit_data(
    events: Events | np.ndarray, space: zfit.Space | None = None, feature_set: str | FeatureSet = "paws"
) -> zfit.Data:
    """Features of ``events`` (or an ``(n, d)`` array) as :class:`zfit.Data` on ``space``.

    Raises
    ------
    InputError
        If the array has the wrong shape, holds NaN/inf, or has values outside the space's limits.
    """
    fs = get_feature_set(feature_set)
    space = space or feature_space(fs)
    try:
        x = events.features(fs) if isinstance(events, Events) else np.asarray(events, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"events must be Events or a numeric (n, {space.n_obs}) array; got {type(events).__name__} "
            "that does not convert to numbers"
        ) from None
    if x.ndim != 2 or x.shape[1] != space.n_obs:
        raise InputError(f"features must have shape (n, {space.n_obs}) for obs {space.obs}; got {x.shape}")
    if len(x) == 0:
        raise InputError("no events to convert: the data set is empty")
    if not np.isfinite(x).all():
        raise InputError("features contain NaN/inf; drop or repair those events first")
    # our own table, not space.v1.limits (zfit 0.28 raises a DeprecationWarning from inside it)
    lower, upper = np.array([_LIMITS.get(o, (-np.inf, np.inf)) for o in space.obs]).T
    outside = (x < lower) | (x > upper)
    if outside.any():
        col = int(np.flatnonzero(outside.any(axis=0))[0])
        raise InputError(
            f"{outside.any(axis=1).sum()} event(s) have {space.obs[col]} outside [{lower[col]}, {upper[col]}]"
        )
    return zfit.Data.from_numpy(obs=space, array=x)
