"""Invertible per-feature transforms with exact log-Jacobians, stored with every learned model.

Learned models (the CFM generator, the parameterized classifier, the background flows) see features on
an unbounded, roughly standardised scale:

* masses (``mj1``, ``mj2``, ``delta_mj``, ``mjj``) → ``log m``;
* substructure ratios τ ∈ [0, 1] → ``logit(ε + (1 − 2ε) τ)`` (the squeeze by ε keeps τ = 0 or 1 finite
  and the map exactly invertible on the closed interval);
* then ``(y − mean) / std`` per column.

:class:`FeatureTransform` holds these maps and their parameters, evaluates them on numpy arrays *or*
TensorFlow tensors (so density models can use the same object inside zfit graphs, differentiably), and
round-trips through a plain JSON-compatible dict (:meth:`~FeatureTransform.to_dict`), which the model
bundles keep in their sidecar. Every transform is element-wise, so the Jacobian is diagonal and

    log |det ∂y/∂x| = Σ_j [log g_j'(x_j) − log std_j].

Examples
--------
>>> import numpy as np
>>> x = np.array([[120.0, 0.4], [60.0, 0.7], [300.0, 0.2]])
>>> t = FeatureTransform.fit(x, names=("mj1", "tau21_j1"))
>>> t.kinds
('log', 'logit')
>>> np.allclose(t.inverse(t.forward(x)), x)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, ModelFileError

__all__ = ["KINDS", "FeatureTransform", "default_kind"]

#: The element-wise maps a column can get before standardisation.
KINDS: tuple[str, ...] = ("identity", "log", "logit")
_SCHEMA = 1
_DEFAULT_EPS = 1e-6


def default_kind(name: str) -> str:
    """The default map of a feature by its name: ``log`` for masses, ``logit`` for τ ratios."""
    if name.startswith("tau"):
        return "logit"
    if name.startswith(("m", "delta_m")):
        return "log"
    return "identity"


def _is_tf(x) -> bool:
    mod = type(x).__module__ or ""
    return mod.startswith("tensorflow")


class _NumpyOps:
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    exp = staticmethod(np.exp)

    @staticmethod
    def sigmoid(y):
        return 0.5 * (1.0 + np.tanh(0.5 * y))  # no overflow warning for large |y|

    @staticmethod
    def clip(x, lo, hi):
        return np.clip(x, lo, hi)

    @staticmethod
    def columns(x):
        return [x[:, j] for j in range(x.shape[1])]

    @staticmethod
    def stack(cols):
        return np.stack(cols, axis=1)

    @staticmethod
    def zeros(x):
        return np.zeros(x.shape[0], dtype=x.dtype)


class _TFOps:
    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        self.log = tf.math.log
        self.log1p = tf.math.log1p
        self.exp = tf.math.exp
        self.sigmoid = tf.math.sigmoid

    def clip(self, x, lo, hi):
        return self.tf.clip_by_value(x, lo, hi)

    def columns(self, x):
        return self.tf.unstack(x, axis=1)

    def stack(self, cols):
        return self.tf.stack(cols, axis=1)

    def zeros(self, x):
        return self.tf.zeros(self.tf.shape(x)[:1], dtype=x.dtype)


def _ops(x):
    return _TFOps() if _is_tf(x) else _NumpyOps()


@dataclass(frozen=True)
class FeatureTransform:
    """Element-wise invertible map x → y = (g(x) − mean) / std, one map ``g`` per column.

    Build it with :meth:`fit` from training data; construct directly only to restore saved values.

    Parameters
    ----------
    names : tuple of str
        Feature names, in column order.
    kinds : tuple of str
        One of :data:`KINDS` per column.
    mean, std : tuple of float
        Standardisation of ``g(x)`` per column (std > 0).
    eps : float
        Squeeze of the logit map: ``logit(eps + (1 − 2 eps) x)``.

    Notes
    -----
    On numpy input, :meth:`forward` checks the domain (``log`` needs x > 0, ``logit`` 0 ≤ x ≤ 1) and raises
    :class:`~gbi_zfit.errors.InputError`; on TensorFlow input there is no check (values outside the
    domain give NaN), so that graphs stay cheap. :meth:`inverse` clips ``logit`` columns to [0, 1]
    (rounding at |y| ≳ 30 could step outside).
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float = _DEFAULT_EPS

    def __post_init__(self):
        d = len(self.names)
        for field_name in ("kinds", "mean", "std"):
            if len(getattr(self, field_name)) != d:
                raise InputError(
                    f"FeatureTransform: {field_name} has {len(getattr(self, field_name))} entries for {d} names"
                )
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise InputError(f"unknown transform kind(s) {bad}; choose from {KINDS}")
        if not all(math.isfinite(s) and s > 0 for s in self.std) or not all(
            math.isfinite(m) for m in self.mean
        ):
            raise InputError(f"FeatureTransform needs finite means and std > 0; got {self.mean}, {self.std}")
        if not (0.0 <= self.eps < 0.5):
            raise InputError(f"eps must be in [0, 0.5), got {self.eps}")

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        names: Sequence[str],
        kinds: Sequence[str] | None = None,
        *,
        eps: float = _DEFAULT_EPS,
        standardize: bool = True,
    ) -> FeatureTransform:
        """Choose the maps (default by feature name, :func:`default_kind`) and standardise on ``x``.

        Parameters
        ----------
        x : ndarray (n, d)
            Training data.
        names : sequence of str
            Feature names in column order.
        kinds : sequence of str, optional
            Override the map per column.
        eps : float
            Logit squeeze.
        standardize : bool
            Fit mean/std (default); ``False`` keeps mean 0, std 1.
        """
        x = _as_2d(x, len(names))
        kinds = tuple(default_kind(n) for n in names) if kinds is None else tuple(kinds)
        pre = cls(tuple(names), kinds, (0.0,) * len(names), (1.0,) * len(names), eps)
        if not standardize:
            return pre
        if len(x) < 2:
            raise InputError("need at least 2 events to standardise the features")
        y = pre.forward(x)
        std = y.std(axis=0)
        if not np.all(std > 0):
            flat = [n for n, s in zip(names, std, strict=True) if not s > 0]
            raise InputError(f"features {flat} are constant in the training data; cannot standardise")
        return cls(pre.names, kinds, tuple(map(float, y.mean(axis=0))), tuple(map(float, std)), eps)

    @property
    def dim(self) -> int:
        return len(self.names)

    def _check_domain(self, x: np.ndarray) -> None:
        for j, (name, kind) in enumerate(zip(self.names, self.kinds, strict=True)):
            col = x[:, j]
            if kind == "log" and not np.all(col > 0):
                raise InputError(f"feature {name!r} needs values > 0 for the log transform; min {col.min()}")
            if kind == "logit" and not np.all((col >= 0) & (col <= 1)):
                raise InputError(
                    f"feature {name!r} needs values in [0, 1] for the logit transform; "
                    f"range [{col.min()}, {col.max()}]"
                )

    def forward(self, x):
        """y = (g(x) − mean) / std; numpy (n, d) → numpy, tf tensor → tf tensor of the same dtype."""
        ops = _ops(x)
        if not _is_tf(x):
            x = _as_2d(x, self.dim)
            self._check_domain(x)
        s = 1.0 - 2.0 * self.eps
        out = []
        for col, kind, m, sd in zip(ops.columns(x), self.kinds, self.mean, self.std, strict=True):
            if kind == "log":
                col = ops.log(col)
            elif kind == "logit":
                u = self.eps + s * col
                col = ops.log(u) - ops.log1p(-u)
            out.append((col - m) / sd)
        return ops.stack(out)

    def inverse(self, y):
        """x from y (inverse of :meth:`forward`)."""
        ops = _ops(y)
        if not _is_tf(y):
            y = _as_2d(y, self.dim)
        s = 1.0 - 2.0 * self.eps
        out = []
        for col, kind, m, sd in zip(ops.columns(y), self.kinds, self.mean, self.std, strict=True):
            col = col * sd + m
            if kind == "log":
                col = ops.exp(col)
            elif kind == "logit":
                col = ops.clip((ops.sigmoid(col) - self.eps) / s, 0.0, 1.0)
            out.append(col)
        return ops.stack(out)

    def log_det_jacobian(self, x):
        """log |det ∂y/∂x| of :meth:`forward` per event, shape (n,)."""
        ops = _ops(x)
        if not _is_tf(x):
            x = _as_2d(x, self.dim)
            self._check_domain(x)
        s = 1.0 - 2.0 * self.eps
        total = ops.zeros(x) - sum(math.log(sd) for sd in self.std)
        for col, kind in zip(ops.columns(x), self.kinds, strict=True):
            if kind == "log":
                total = total - ops.log(col)
            elif kind == "logit":
                u = self.eps + s * col
                total = total + (math.log(s) - ops.log(u) - ops.log1p(-u))
        return total

    def inverse_log_det_jacobian(self, y):
        """log |det ∂x/∂y| of :meth:`inverse` per event (= −log_det_jacobian(inverse(y)))."""
        ops = _ops(y)
        if not _is_tf(y):
            y = _as_2d(y, self.dim)
        s = 1.0 - 2.0 * self.eps
        total = ops.zeros(y) + sum(math.log(sd) for sd in self.std)
        for col, kind, m, sd in zip(ops.columns(y), self.kinds, self.mean, self.std, strict=True):
            z = col * sd + m
            if kind == "log":
                total = total + z
            elif kind == "logit":
                # d/dz [(σ(z) − ε) / s] = σ(z) σ(−z) / s, in log space: −softplus(−z) − softplus(z) − log s
                total = total - _softplus(ops, z) - _softplus(ops, -z) - math.log(s)
        return total

    # ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-compatible parameters (:meth:`from_dict` restores the transform exactly)."""
        return {
            "type": "FeatureTransform",
            "schema": _SCHEMA,
            "names": list(self.names),
            "kinds": list(self.kinds),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "eps": float(self.eps),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureTransform:
        """Restore from :meth:`to_dict`.

        Raises
        ------
        ModelFileError
            If the dict is not a saved FeatureTransform or is inconsistent.
        """
        try:
            if data.get("type") != "FeatureTransform" or int(data.get("schema", 0)) > _SCHEMA:
                raise ModelFileError(
                    f"not a FeatureTransform of schema ≤ {_SCHEMA}: type {data.get('type')!r}, "
                    f"schema {data.get('schema')!r}"
                )
            return cls(
                tuple(str(n) for n in data["names"]),
                tuple(str(k) for k in data["kinds"]),
                tuple(float(v) for v in data["mean"]),
                tuple(float(v) for v in data["std"]),
                float(data.get("eps", _DEFAULT_EPS)),
            )
        except (KeyError, TypeError, ValueError, AttributeError, InputError) as exc:
            raise ModelFileError(f"invalid saved feature transform: {exc}") from exc


def _softplus(ops, z):
    if isinstance(ops, _TFOps):
        return ops.tf.math.softplus(z)
    return np.logaddexp(0.0, z)


def _as_2d(x, d: int) -> np.ndarray:
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"expected numeric features of shape (n, {d}); got {type(x).__name__}") from None
    if x.ndim != 2 or x.shape[1] != d:
        raise InputError(f"expected features of shape (n, {d}); got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("features contain NaN/inf")
    return x
