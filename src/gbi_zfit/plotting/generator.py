"""Generator quality figure: per-feature histograms of generated vs reference events, with ratio panels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._style import LABELS, save, style

__all__ = ["plot_generator_quality"]


def plot_generator_quality(
    quality,
    path: str | Path,
    *,
    generated_label: str = "CFM",
    reference_label: str = "true SR background",
) -> Path:
    """Draw :class:`~gbi_zfit.models.cfm.GeneratorQuality`: one histogram + ratio panel per feature.

    The title states the classifier two-sample AUC (target ≤ ``quality.target_auc``).
    """
    plt, _ = style()
    names = list(quality.names)
    ncol = min(3, len(names))
    nrow = math.ceil(len(names) / ncol)
    fig = plt.figure(figsize=(6.0 * ncol, 6.0 * nrow), layout="constrained")
    # one (histogram, ratio) pair per cell: tight inside a pair, room for tick labels between pairs
    cells = fig.add_gridspec(nrow, ncol)
    for i, name in enumerate(names):
        pair = cells[divmod(i, ncol)].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        ax = fig.add_subplot(pair[0])
        rax = fig.add_subplot(pair[1], sharex=ax)
        h = quality.histograms[name]
        edges = np.asarray(h["edges"])
        gen, ref = np.asarray(h["generated"]), np.asarray(h["reference"])
        gerr, rerr = np.asarray(h["generated_error"]), np.asarray(h["reference_error"])
        ax.stairs(ref, edges, color="black", label=reference_label)
        ax.stairs(gen, edges, color="tab:red", label=generated_label)
        ax.set_ylabel("density", fontsize="small")
        ax.tick_params(labelbottom=False)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax.legend(fontsize="xx-small", loc="best")
        ok = ref > 0
        centers = 0.5 * (edges[1:] + edges[:-1])
        ratio = np.where(ok, gen / np.where(ok, ref, 1.0), np.nan)
        err = np.where(ok, np.hypot(gerr, ratio * rerr) / np.where(ok, ref, 1.0), np.nan)
        rax.errorbar(centers, ratio, yerr=err, fmt="o", ms=2, color="tab:red")
        rax.axhline(1.0, color="black", lw=1)
        rax.set_ylim(0.5, 1.5)
        rax.set_yticks([0.75, 1.0, 1.25])  # no labels on the panel edges, where they meet the next axes
        rax.set_ylabel("ratio", fontsize="small")
        rax.set_xlabel(LABELS.get(name, name), fontsize="small")
    fig.suptitle(
        f"C2ST AUC = {quality.auc:.3f} ± {quality.auc_error:.3f} (target ≤ {quality.target_auc})",
        fontsize="small",
    )
    return save(fig, path)
