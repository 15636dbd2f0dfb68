"""The sampled normalisation κ(θ) of a learned ratio, tabulated on a regular θ grid and interpolated.

A learned Λ_FS(x | θ) = κ(θ) ⟨g⟩/(1 − ⟨g⟩) is a density ratio only if E_B[Λ_FS] = 1 at every θ. With
κ(θ) = 1 / E_B[⟨g⟩/(1 − ⟨g⟩)] this holds on the background reference; the fit needs it between the
points where κ was computed as well, and to high accuracy: on N background events a normalisation error
ε at some θ looks like a signal of significance ≈ √N ε / sd(Λ) (on 118k SR events and sd(Λ) ≈ 6, ε = 5 %
is a 3σ fake). A low-order global fit of log κ over the whole mass range is not accurate enough (its
residuals were 0.1–0.2 in log κ and produced fake signals of 10σ), so :class:`KappaSurface` tabulates
log κ on a fine regular grid (default 25 GeV) and interpolates it with a bicubic Catmull–Rom spline:
exact at the nodes, continuously differentiable (MIGRAD needs the gradient in θ) and local. Its accuracy
between nodes is measured at cell centres when it is built and stored with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from ..errors import InputError

__all__ = ["KappaSurface", "build_kappa_surface"]


def _catmull_rom_weights(t, xp):
    """Weights of the four nodes i − 1 … i + 2 at fraction t ∈ [0, 1] of cell i (last axis)."""
    t2, t3 = t * t, t * t * t
    return xp.stack(
        [
            0.5 * (-t3 + 2.0 * t2 - t),
            0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
            0.5 * (-3.0 * t3 + 4.0 * t2 + t),
            0.5 * (t3 - t2),
        ],
        axis=-1,
    )


def _pad_linearly(table: np.ndarray) -> np.ndarray:
    """One extra node on every side, extrapolated linearly (the end cells then have four neighbours)."""
    t = np.asarray(table, dtype=np.float64)
    t = np.concatenate([2 * t[:1] - t[1:2], t, 2 * t[-1:] - t[-2:-1]], axis=0)
    return np.concatenate([2 * t[:, :1] - t[:, 1:2], t, 2 * t[:, -1:] - t[:, -2:-1]], axis=1)


def regular_nodes(low: float, high: float, step: float) -> np.ndarray:
    """At least two equally spaced nodes from ``low`` to ``high`` with spacing ≤ ``step``."""
    n = max(2, math.ceil((high - low) / step - 1e-9) + 1)
    return np.linspace(low, high, n)


@dataclass
class KappaSurface:
    """log κ(θ) on a regular (mX, mY) grid, interpolated by a bicubic Catmull–Rom spline.

    Attributes
    ----------
    mx_nodes, my_nodes : list of float
        Equally spaced node masses (GeV), at least two per axis.
    log_kappa : list of lists
        log κ = −log E_B[⟨g⟩/(1 − ⟨g⟩)] at the nodes, shape (len(mx_nodes), len(my_nodes)).
    n_reference : int
        Background events the expectation was computed on.
    mc_error : float
        Median over the nodes of the Monte Carlo standard error of log κ (the reference's finite size).
    check_rms, check_max : float
        Interpolation error in log κ at ``n_check`` cell centres, against the directly computed value
        (NaN when not checked).
    n_check : int
        Number of cell centres checked.
    """

    mx_nodes: list[float]
    my_nodes: list[float]
    log_kappa: list[list[float]]
    n_reference: int = 0
    mc_error: float = float("nan")
    check_rms: float = float("nan")
    check_max: float = float("nan")
    n_check: int = 0

    def __post_init__(self):
        self.mx_nodes = [float(v) for v in self.mx_nodes]
        self.my_nodes = [float(v) for v in self.my_nodes]
        table = np.asarray(self.log_kappa, dtype=np.float64)
        if table.shape != (len(self.mx_nodes), len(self.my_nodes)) or min(table.shape) < 2:
            raise InputError(
                f"κ table of shape {table.shape} does not match {len(self.mx_nodes)} × {len(self.my_nodes)} "
                "nodes (at least 2 per axis)"
            )
        if not np.isfinite(table).all():
            raise InputError("κ table holds non-finite values: recompute it on a valid background reference")
        self.log_kappa = table.tolist()
        self._axes = []
        for nodes in (self.mx_nodes, self.my_nodes):
            steps = np.diff(nodes)
            if steps.min() <= 0 or np.ptp(steps) > 1e-6 * steps.mean():
                raise InputError(f"κ nodes must be equally spaced and increasing, got {nodes}")
            self._axes.append((nodes[0], float(steps.mean()), len(nodes)))
        self._padded = _pad_linearly(table)
        self._padded_tf = None

    # -- evaluation -------------------------------------------------------------------------------
    def __call__(self, mx, my) -> np.ndarray:
        """log κ at masses ``mx``, ``my`` (GeV; scalars or arrays of one shape), numpy."""
        mx, my = np.broadcast_arrays(np.asarray(mx, np.float64), np.asarray(my, np.float64))
        (iu, tu), (iv, tv) = (self._cell(v, axis, np) for axis, v in enumerate((mx.ravel(), my.ravel())))
        wu, wv = _catmull_rom_weights(tu, np), _catmull_rom_weights(tv, np)
        rows = iu[:, None] + np.arange(4)
        cols = iv[:, None] + np.arange(4)
        block = self._padded[rows[:, :, None], cols[:, None, :]]  # (n, 4, 4)
        return np.einsum("na,nab,nb->n", wu, block, wv).reshape(mx.shape)

    def tf_log_kappa(self, mx: tf.Tensor, my: tf.Tensor) -> tf.Tensor:
        """log κ at scalar float64 tensors ``mx``, ``my`` (GeV), differentiable in both."""
        if self._padded_tf is None:
            with tf.init_scope():  # an eager constant, usable by every graph that calls this later
                self._padded_tf = tf.constant(self._padded, tf.float64)
        (iu, tu), (iv, tv) = (self._cell(v, axis, tf) for axis, v in enumerate((mx, my)))
        block = tf.slice(self._padded_tf, tf.stack([iu, iv]), [4, 4])
        wu, wv = _catmull_rom_weights(tu, tf), _catmull_rom_weights(tv, tf)
        return tf.tensordot(wu, tf.linalg.matvec(block, wv), 1)

    def _cell(self, v, axis: int, xp):
        """Cell index (into the padded table) and the fraction within the cell."""
        low, step, n = self._axes[axis]
        s = (v - low) / step
        if xp is np:
            i = np.clip(np.floor(s), 0, n - 2)
            return i.astype(np.int64), s - i
        i = tf.stop_gradient(tf.clip_by_value(tf.floor(s), 0.0, float(n - 2)))
        return tf.cast(i, tf.int32), s - i

    # -- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KappaSurface:
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("mc_error", "check_rms", "check_max"):
            if kw.get(k) is None:
                kw.pop(k, None)
        return cls(**kw)


#: θ points per call of ``log_odds``: memory is this × the reference size × 8 bytes (1M events: 128 MB)
_THETA_BATCH = 16


def _log_mean_odds(
    log_odds: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, log_weights: np.ndarray | None = None
):
    """log E[odds] and the relative standard error of E[odds] per θ, a few θ at a time (bounded memory).

    With ``log_weights`` (importance weights of the reference) the mean is the self-normalised
    Σ w odds / Σ w and its error the delta-method one, √(Σ w² (odds/mean − 1)²) / Σ w (for equal weights:
    sd/√m, the plain case).
    """
    if log_weights is not None:  # normalised once: Σ w = 1
        lw = log_weights - np.logaddexp.reduce(log_weights)
        w2 = np.exp(2 * lw)
    log_mean, rel_sd = [], []
    for i in range(0, len(theta), _THETA_BATCH):
        lo = log_odds(theta[i : i + _THETA_BATCH])
        m = lo.shape[1]
        if log_weights is None:
            lm = np.logaddexp.reduce(lo, axis=1) - np.log(m)
            rel = np.exp(lo - lm[:, None])  # relative to the mean: no overflow
            rel_sd.append(rel.std(axis=1) / np.sqrt(m))
        else:
            lm = np.logaddexp.reduce(lo + lw[None, :], axis=1)
            rel = np.exp(lo - lm[:, None])
            rel_sd.append(np.sqrt(np.sum(w2[None, :] * (rel - 1.0) ** 2, axis=1)))
        log_mean.append(lm)
    return np.concatenate(log_mean), np.concatenate(rel_sd)


def build_kappa_surface(
    log_odds: Callable[[np.ndarray], np.ndarray],
    bounds: tuple[tuple[float, float], tuple[float, float]],
    *,
    step: float = 25.0,
    n_check: int = 40,
    seed: int | np.random.SeedSequence | None = 0,
    n_reference: int = 0,
    log_weights: np.ndarray | None = None,
) -> KappaSurface:
    """Compute log κ on a regular grid over ``bounds`` and check the interpolation at cell centres.

    Parameters
    ----------
    log_odds : callable
        ``log_odds(theta)`` with θ of shape (P, 2) returns log(⟨g⟩/(1 − ⟨g⟩)) on the reference, (P, m).
    bounds : ((float, float), (float, float))
        mX and mY range (GeV).
    step : float
        Largest node spacing (GeV).
    n_check : int
        Random cell centres at which the interpolation is compared with a direct computation.
    seed
        Chooses the cell centres.
    n_reference : int
        Size of the reference (recorded).
    log_weights : array (m,), optional
        Importance weights of the reference events (e.g. a tempered-flow sample,
        :meth:`~gbi_zfit.models.flowgen.FlowGenerator.sample_sr_reference`); means are self-normalised.
    """
    if not step > 0:
        raise InputError(f"κ grid step must be positive, got {step}")
    (a, b), (c, d) = bounds
    mx_nodes, my_nodes = regular_nodes(a, b, step), regular_nodes(c, d, step)
    theta = np.array([(u, v) for u in mx_nodes for v in my_nodes])
    log_mean, rel_sd = _log_mean_odds(log_odds, theta, log_weights)
    # standard error of log E[odds]: sd(odds)/(E[odds] √m)
    mc_error = float(np.median(rel_sd))
    surface = KappaSurface(
        mx_nodes.tolist(),
        my_nodes.tolist(),
        (-log_mean).reshape(len(mx_nodes), len(my_nodes)).tolist(),
        n_reference=n_reference,
        mc_error=mc_error,
    )
    n_cells = (len(mx_nodes) - 1) * (len(my_nodes) - 1)
    n_check = min(int(n_check), n_cells)
    if n_check > 0:
        rng = np.random.default_rng(seed)
        cells = rng.choice(n_cells, size=n_check, replace=False)
        iu, iv = np.divmod(cells, len(my_nodes) - 1)
        centres = np.stack(
            [0.5 * (mx_nodes[iu] + mx_nodes[iu + 1]), 0.5 * (my_nodes[iv] + my_nodes[iv + 1])], 1
        )
        direct = -_log_mean_odds(log_odds, centres, log_weights)[0]
        diff = surface(centres[:, 0], centres[:, 1]) - direct
        surface.check_rms = float(np.sqrt(np.mean(diff**2)))
        surface.check_max = float(np.max(np.abs(diff)))
        surface.n_check = n_check
    return surface
