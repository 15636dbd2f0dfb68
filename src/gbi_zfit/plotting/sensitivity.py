"""Figures of the sensitivity study (learned GBI-PAWS vs the oracle), after the GBI paper's Fig. 1 and 2.

Both functions take plain data: the per-(θ, S/√B) summary rows and the per-data-set records written by
``benchmarks/sensitivity.py`` (and stored in its JSON), so figures can be redrawn from the file alone.

* :func:`plot_mu_hat` — Fig. 1 analogue: median μ̂ versus the injected μ (log–log) with the 16–84 %
  band over data realisations, learned and oracle overlaid, the diagonal μ̂ = μ_inj; a lower panel with
  the median fitted masses; the top axis gives S/√B.
* :func:`plot_mass_scatter` — Fig. 2 analogue: fitted (m̂X, m̂Y) of every data set, coloured by S/√B,
  with the truth marked; one row per mass point, one column per method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ._style import LABELS, save, style

__all__ = ["plot_mass_scatter", "plot_mu_hat"]

_METHODS = {"learned": ("GBI-PAWS (learned)", "tab:red"), "oracle": ("oracle", "tab:blue")}


def _mass_points(items: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    return sorted({(float(r["mx"]), float(r["my"])) for r in items})


def _num(v) -> float:
    return np.nan if v is None else float(v)


def plot_mu_hat(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path | None = None,
    *,
    records: Sequence[Mapping[str, Any]] | None = None,
    methods: Sequence[str] = ("learned", "oracle"),
):
    """Median μ̂ vs injected μ (log–log) with 16–84 % bands; lower panel: median m̂X, m̂Y.

    Parameters
    ----------
    rows
        Summary rows (``benchmarks/sensitivity.py: summarize``): per (mx, my, s_over_sqrt_b) the
        quantile dicts ``mu_true`` and, per method, ``mu_hat``, ``mx``, ``my`` (``median``, ``q16``,
        ``q84``).
    path
        Save the figure there (format from the suffix) and close it; otherwise return the figure.
    records
        Per-data-set results; if given, every single μ̂ is drawn as a faint dot.
    methods
        Which methods to draw.

    Notes
    -----
    μ̂ = 0 (the fit at its lower limit) cannot be drawn on a log axis: values and band edges below a
    floor of 0.2 × the smallest injected μ are drawn at that floor (the band then touches the bottom).
    """
    if not rows:
        raise InputError("no summary rows to plot")
    plt, _ = style()
    from matplotlib import ticker

    points = _mass_points(rows)
    fig, axes = plt.subplots(
        2,
        len(points),
        figsize=(7.5 * len(points), 9),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1.4], "hspace": 0.05},
    )
    for col, (mx, my) in enumerate(points):
        sel = sorted((r for r in rows if (r["mx"], r["my"]) == (mx, my)), key=lambda r: r["s_over_sqrt_b"])
        mu_inj = np.array([_num(r["mu_true"]["median"]) for r in sel])
        sosb = np.array([float(r["s_over_sqrt_b"]) for r in sel])
        ax, rax = axes[0, col], axes[1, col]
        if not np.isfinite(mu_inj).any():  # every data set of this mass point failed
            ax.text(0.5, 0.5, f"({mx:g}, {my:g}): no successful fits", transform=ax.transAxes, ha="center")
            continue
        floor = 0.2 * np.nanmin(mu_inj)
        lo_hi = np.array([np.nanmin(mu_inj) / 3, np.nanmax(mu_inj) * 3])
        ax.plot(lo_hi, lo_hi, color="black", lw=1.5, label=r"$\hat\mu = \mu_\mathrm{inj}$")
        top = 0.0
        for k, m in enumerate(methods):
            label, color = _METHODS.get(m, (m, f"C{k}"))
            shift = 1.0 + 0.04 * (k - (len(methods) - 1) / 2)  # side by side, not on top of each other
            q = {s: np.array([_num(r[m]["mu_hat"][s]) for r in sel]) for s in ("median", "q16", "q84")}
            clip = {s: np.maximum(v, floor) for s, v in q.items()}
            ax.fill_between(mu_inj, clip["q16"], clip["q84"], color=color, alpha=0.25, lw=0)
            top = max(top, float(np.nanmax(clip["q84"], initial=0.0)))
            ax.plot(mu_inj * shift, clip["median"], "o-", color=color, label=f"{label}: median, 16–84 %")
            if records is not None:
                rec = [r for r in records if r.get("ok") and (r["mx"], r["my"]) == (mx, my)]
                ax.plot(
                    [r["mu_true"] * shift for r in rec],
                    [max(r[m]["values"]["mu"], floor) for r in rec],
                    ".",
                    color=color,
                    alpha=0.3,
                    ms=4,
                )
            for name, ls in (("mx", "-"), ("my", "--")):
                med = np.array([_num(r[m][name]["median"]) for r in sel])
                lo = np.array([_num(r[m][name]["q16"]) for r in sel])
                hi = np.array([_num(r[m][name]["q84"]) for r in sel])
                rax.errorbar(
                    mu_inj * shift,
                    med,
                    yerr=[med - lo, hi - med],
                    fmt="o",
                    ls=ls,
                    color=color,
                    ms=4,
                    capsize=2,
                    label=f"{label} " + (r"$\hat m_X$" if name == "mx" else r"$\hat m_Y$"),
                )
        for v in (mx, my):
            rax.axhline(v, color="black", lw=1, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis, rax.xaxis):  # the ROOT style labels minor log ticks: they overlap
            axis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlim(*lo_hi)
        ax.set_ylim(floor * 0.8, max(lo_hi[1], 1.5 * top))  # a far-off method stays in view
        ax.set_ylabel(r"$\hat\mu$")
        ax.set_title(rf"$(m_X, m_Y)$ = ({mx:g}, {my:g}) GeV", fontsize="small")
        ax.legend(fontsize="x-small", loc="upper left")
        rax.set_xlabel(r"injected $\mu_\mathrm{inj}$")
        rax.set_ylabel(r"$\hat m$ [GeV]", fontsize="small")
        rax.set_ylim(0, max(700.0, 1.1 * max(mx, my)))
        rax.legend(fontsize=7, ncol=2, loc="upper left")
        if len(sel) >= 2 and np.all(np.diff(mu_inj) > 0):
            # top axis in S/√B: μ/(1 − μ) = S/B = (S/√B)/√B, with √B from the data (exact per row)
            sqrt_b = float(np.median(sosb / (mu_inj / (1.0 - mu_inj))))
            sec = ax.secondary_xaxis(
                "top",
                functions=(
                    lambda mu, s=sqrt_b: np.asarray(mu) / (1.0 - np.asarray(mu)) * s,
                    lambda z, s=sqrt_b: (np.asarray(z) / s) / (1.0 + np.asarray(z) / s),
                ),
            )
            sec.set_xlabel("S/√B", fontsize="small")
    fig.subplots_adjust(left=0.16, right=0.98, top=0.88, bottom=0.1, wspace=0.3)
    return save(fig, path) if path is not None else fig


def plot_mass_scatter(
    records: Sequence[Mapping[str, Any]],
    path: str | Path | None = None,
    *,
    methods: Sequence[str] = ("learned", "oracle"),
    mass_range: tuple[float, float] = (0.0, 700.0),
):
    """Fitted (m̂X, m̂Y) of every data set, coloured by S/√B, truth marked (paper Fig. 2, top).

    Parameters
    ----------
    records
        Per-data-set results with ``mx``, ``my``, ``s_over_sqrt_b``, ``ok`` and per method
        ``{"values": {"mx": ..., "my": ...}}``; failed records (``ok`` False) are skipped.
    path
        Save the figure there and close it; otherwise return the figure.
    methods
        One column per method.
    mass_range
        Axis range (GeV) of both masses.
    """
    ok = [r for r in records if r.get("ok")]
    if not ok:
        raise InputError("no successful records to plot")
    plt, _ = style()
    from matplotlib import colors

    points = _mass_points(ok)
    levels = sorted({float(r["s_over_sqrt_b"]) for r in ok})
    cmap = plt.get_cmap("viridis", max(len(levels), 2))
    norm = colors.BoundaryNorm(np.arange(len(levels) + 1) - 0.5, cmap.N)
    fig, axes = plt.subplots(
        len(points), len(methods), figsize=(6.5 * len(methods), 6 * len(points)), squeeze=False
    )
    for i, (mx, my) in enumerate(points):
        for j, m in enumerate(methods):
            ax = axes[i, j]
            rec = [r for r in ok if (r["mx"], r["my"]) == (mx, my)]
            xs = np.array([r[m]["values"]["mx"] for r in rec])
            ys = np.array([r[m]["values"]["my"] for r in rec])
            cs = np.array([levels.index(float(r["s_over_sqrt_b"])) for r in rec])
            sc = ax.scatter(xs, ys, c=cs, cmap=cmap, norm=norm, s=30, edgecolors="black", linewidths=0.3)
            ax.plot([mx], [my], marker="*", color="red", ms=20, mec="black", ls="none", label="truth")
            ax.plot(mass_range, mass_range, color="grey", lw=0.8, ls=":")  # m̂X ≥ m̂Y by convention
            ax.set_xlim(*mass_range)
            ax.set_ylim(*mass_range)
            ax.set_xlabel(r"$\hat m_X$ [GeV]" if "mx" not in LABELS else "fitted " + LABELS["mx"])
            ax.set_ylabel("fitted " + LABELS["my"])
            ax.set_title(f"{_METHODS.get(m, (m,))[0]}, truth ({mx:g}, {my:g})", fontsize="small")
            ax.legend(fontsize="x-small", loc="upper left")
            cb = fig.colorbar(sc, ax=ax, ticks=np.arange(len(levels)))
            cb.ax.set_yticklabels([f"{v:g}" for v in levels])
            cb.set_label("S/√B")
    fig.tight_layout()
    return save(fig, path) if path is not None else fig
