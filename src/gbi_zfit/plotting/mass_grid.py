"""Fitted / true of (μ, mX, mY) across signal mass points, error bars of each uncertainty method.

The analogue of the GBI paper's Fig. 3: one panel per parameter, the mass points along the x axis, and
at every point the estimate κ = fitted / true drawn once per method with that method's error bar (of κ),
offset side by side: bootstrap, profile likelihood (asymmetric), Fisher information (observed HESSE and
expected). A line marks κ = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..inference.fit import PARAM_NAMES
from ..inference.mass_grid import METHOD_LABELS, METHODS, MassGridResult
from ._style import save, style

__all__ = ["plot_mass_grid"]

_METHOD_STYLE = {
    "bootstrap": {"color": "tab:blue", "marker": "o"},
    "profile": {"color": "black", "marker": "s"},
    "hesse": {"color": "tab:red", "marker": "D"},
    "expected": {"color": "tab:orange", "marker": "^", "mfc": "white"},
}
_PANEL_LABELS = {
    "mu": r"$\hat\mu / \mu_\mathrm{true}$",
    "mx": r"$\hat m_X / m_X^\mathrm{true}$",
    "my": r"$\hat m_Y / m_Y^\mathrm{true}$",
}


def plot_mass_grid(
    result: MassGridResult | dict,
    path: str | Path | None = None,
    *,
    methods: Sequence[str] = METHODS,
    title: str | None = None,
):
    """Three panels (μ, mX, mY) of fitted / true vs mass point with the methods' error bars side by side.

    Parameters
    ----------
    result : MassGridResult or dict
        From :func:`~gbi_zfit.inference.mass_grid.run_mass_grid` (or its ``to_dict()``).
    path : path, optional
        Save the figure there (format from the suffix, written atomically) and close it; otherwise
        return the figure.
    methods : sequence of str
        Methods to draw, from ``("bootstrap", "profile", "hesse", "expected")``.
    title : str, optional
        Figure title (default: μ and the data size).

    Returns
    -------
    Path or Figure
    """
    if isinstance(result, dict):
        result = MassGridResult.from_dict(result)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {list(methods)}")
    plt, _ = style()
    pts = result.points
    x = np.arange(len(pts), dtype=float)
    width = 0.6  # total spread of the offsets at a point
    offsets = (np.arange(len(methods)) - 0.5 * (len(methods) - 1)) * (width / max(1, len(methods)))
    fig, axes = plt.subplots(3, 1, figsize=(max(11.0, 1.5 * len(pts) + 3.0), 13), sharex=True)
    missing = False
    for ax, name in zip(axes, PARAM_NAMES, strict=True):
        k = result.ratios(name)
        for off, method in zip(offsets, methods, strict=True):
            err = result.relative_errors(name, method)  # (n, 2): lower, upper
            ok = np.isfinite(k) & np.all(np.isfinite(err), axis=1)
            st = _METHOD_STYLE[method]
            ax.errorbar(
                x[ok] + off,
                k[ok],
                yerr=err[ok].T,
                fmt=st["marker"],
                color=st["color"],
                mfc=st.get("mfc", st["color"]),
                ms=6,
                capsize=3,
                lw=1.5,
                label=METHOD_LABELS[method],
            )
            if (~ok).any():  # estimate without this method's error (e.g. an open profile interval)
                ax.plot(x[~ok] + off, k[~ok], "x", color=st["color"], ms=7)
            missing = missing or bool((np.isfinite(k) & ~ok).any())
        ax.axhline(1.0, color="gray", ls="--", lw=1.2, zorder=0)
        ax.set_ylabel(_PANEL_LABELS[name])
        for xi in x[:-1]:
            ax.axvline(xi + 0.5, color="lightgray", lw=0.8, zorder=0)
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi + (0.4 if name == PARAM_NAMES[0] else 0.1) * (hi - lo))  # room for the legend
    if missing:
        axes[0].plot([], [], "x", color="gray", label="× : that method gave no error")
    axes[0].legend(fontsize="xx-small", ncol=2, loc="upper center")
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels([_tick(p, result) for p in pts], fontsize="small")
    axes[-1].set_xlabel(r"signal mass point $(m_X, m_Y)$ [GeV]")
    axes[-1].set_xlim(-0.6, len(pts) - 0.4)
    cfg = result.config
    if title is None:
        title = (
            f"oracle fit, $\\mu$ = {100 * cfg.get('mu', float('nan')):g} %, "
            f"{cfg.get('n_background', 0):,} background events, {cfg.get('n_bootstrap')} bootstraps"
        )
    fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    return save(fig, path) if path is not None else fig


def _tick(p, result: MassGridResult) -> str:
    text = f"({p.mx:g}, {p.my:g})"
    if result.config.get("n_datasets", 1) > 1:
        text += f"\n#{p.dataset}"
    return text
