"""Profile-likelihood figures: 1-D 2ΔNLL curves with Wilks intervals, 2-D (mX, mY) maps with contours."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..inference.profile import DEFAULT_CLS, OpenIntervalWarning, ProfileScan, ProfileScan2D, chi2_threshold
from ._style import LABELS, save, style

__all__ = ["plot_profile_1d", "plot_profile_2d"]

_CL_STYLE = {0.683: ("tab:green", "--"), 0.95: ("tab:orange", ":")}


def plot_profile_1d(
    scan: ProfileScan, path: str | Path, truth: float | None = None, *, title: str | None = None
) -> Path:
    """2ΔNLL of a 1-D profile scan, with the χ²₁ thresholds (68.3 %, 95 %) and the intervals marked.

    Parameters
    ----------
    scan : ProfileScan
        From :func:`~gbi_zfit.inference.profile.profile_1d`.
    path : str or Path
        Output file (PNG/PDF), written atomically.
    truth : float, optional
        True value (default: ``scan.truth``), drawn as a vertical line.
    """
    plt, _ = style()
    truth = scan.truth if truth is None else truth
    x = np.append(scan.values, scan.best_value)
    t = np.append(scan.two_delta_nll, 0.0)
    order = np.argsort(x)
    x, t = x[order], t[order]
    fig, ax = plt.subplots(figsize=(9, 7))
    ax.plot(x, t, "-", color="black", lw=1.5, label="profile likelihood")
    ok = np.append(scan.valid, True)[order]
    ax.plot(x[ok], t[ok], "o", color="black", ms=4)
    if (~ok).any():
        ax.plot(x[~ok], t[~ok], "x", color="tab:red", ms=7, label="fit not valid")
    for cl in DEFAULT_CLS:
        color, ls = _CL_STYLE[cl]
        level = chi2_threshold(cl, 1)
        ax.axhline(level, color=color, ls=ls, lw=1.2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OpenIntervalWarning)  # open ends are shown as missing lines
            lo, hi = scan.interval(cl)
        for end in (lo, hi):
            if end is not None:
                ax.plot([end, end], [0, level], color=color, ls=ls, lw=1.2)
        text = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "open"
        ax.plot([], [], color=color, ls=ls, label=f"{cl:.1%} CL: {text}")
    ax.axvline(scan.best_value, color="tab:blue", lw=1, label=f"best fit {scan.best_value:.4g}")
    if truth is not None:
        ax.axvline(truth, color="tab:red", lw=1.5, ls="-.", label=f"truth {truth:.4g}")
    finite = t[np.isfinite(t)]
    ax.set_ylim(0, max(1.3 * chi2_threshold(0.95, 1), min(float(finite.max()) * 1.05, 25.0)))
    ax.set_xlim(x.min(), x.max())
    ax.set_xlabel(LABELS.get(scan.parameter, scan.parameter))
    ax.set_ylabel(r"$-2\,\Delta\ln L$ (profiled)")
    ax.legend(fontsize="x-small", loc="upper center")
    if title:
        ax.set_title(title, fontsize="small")
    return save(fig, path)


def plot_profile_2d(
    scan: ProfileScan2D,
    path: str | Path,
    truth: tuple[float, float] | None = None,
    best: dict[str, float] | tuple[float, float] | None = None,
    *,
    zmax: float = 25.0,
    title: str | None = None,
) -> Path:
    """Map of 2ΔNLL(mX, mY) (μ profiled) with the 68.3 % / 95 % Wilks contours (χ²₂).

    The fitted canonical half (mX ≥ mY) is shown together with its mirror image (the likelihood is
    symmetric under mX ↔ mY); the diagonal mX = mY separates them.

    Parameters
    ----------
    scan : ProfileScan2D
        From :func:`~gbi_zfit.inference.profile.profile_2d`.
    path : str or Path
        Output file, written atomically.
    truth : (float, float), optional
        True θ (default: ``scan.truth``), a star.
    best : dict or (float, float), optional
        Best-fit θ (default: ``scan.best_values``), a cross.
    zmax : float
        Upper end of the colour scale.
    """
    plt, _ = style()
    truth = scan.truth if truth is None else truth
    best = scan.best_values if best is None else best
    if isinstance(best, dict):
        best = (best["mx"], best["my"])
    z = scan.filled()
    fig, ax = plt.subplots(figsize=(10, 8))
    if len(scan.mx) > 1 and len(scan.my) > 1:
        mesh = ax.pcolormesh(
            scan.mx, scan.my, np.clip(z, 0, zmax).T, shading="nearest", cmap="viridis_r", vmin=0, vmax=zmax
        )
        fig.colorbar(mesh, ax=ax, label=r"$-2\,\Delta\ln L$ ($\mu$ profiled)")
        levels = scan.contour_levels()
        finite = np.isfinite(z)
        if finite.sum() >= 4 and np.nanmin(z) < max(levels.values()):
            zc = np.where(finite, z, 10 * zmax)  # no contour leaks into never-computed cells
            cs = ax.contour(
                scan.mx,
                scan.my,
                zc.T,
                levels=sorted(levels.values()),
                colors=[_CL_STYLE[c][0] for c in sorted(levels, key=levels.get)],
                linestyles=[_CL_STYLE[c][1] for c in sorted(levels, key=levels.get)],
                linewidths=2,
            )
            ax.clabel(cs, fmt={v: f"{c:.1%}" for c, v in levels.items()}, fontsize="x-small")
    for cl, (color, ls) in _CL_STYLE.items():
        ax.plot([], [], color=color, ls=ls, lw=2, label=f"{cl:.1%} CL (Wilks, 2 dof)")
    lo = min(scan.mx.min(), scan.my.min())
    hi = max(scan.mx.max(), scan.my.max())
    ax.plot([lo, hi], [lo, hi], color="white", ls="--", lw=1, label=r"$m_X = m_Y$")
    # veil the mirror half (mX < mY): it repeats the fitted half, it was not fitted itself
    ax.fill_between([lo, hi], [lo, hi], [hi, hi], color="white", alpha=0.25, lw=0, label="mirror image")
    ax.plot(*best, "x", color="tab:blue", ms=12, mew=3, label=f"best fit ({best[0]:.0f}, {best[1]:.0f})")
    if truth is not None:
        ax.plot(*truth, "*", color="tab:red", ms=16, label=f"truth ({truth[0]:.0f}, {truth[1]:.0f})")
    ax.set_xlim(scan.mx.min(), scan.mx.max())
    ax.set_ylim(scan.my.min(), scan.my.max())
    ax.set_xlabel(LABELS["mx"])
    ax.set_ylabel(LABELS["my"])
    ax.legend(fontsize="x-small", loc="best", frameon=True, framealpha=0.8)
    if title:
        ax.set_title(title, fontsize="small")
    return save(fig, path)
