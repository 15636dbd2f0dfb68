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
    fig = plt.figure(figsize=(5.0 * ncol, 5.0 * nrow))
    grid = fig.add_gridspec(2 * nrow, ncol, height_ratios=[3, 1] * nrow, hspace=0.08, wspace=0.3)
    for i, name in enumerate(names):
        r, c = divmod(i, ncol)
        ax = fig.add_subplot(grid[2 * r, c])
        rax = fig.add_subplot(grid[2 * r + 1, c], sharex=ax)
        h = quality.histograms[name]
        edges = np.asarray(h["edges"])
        gen, ref = np.asarray(h["generated"]), np.asarray(h["reference"])
        gerr, rerr = np.asarray(h["generated_error"]), np.asarray(h["reference_error"])
        ax.stairs(ref, edges, color="black", label=reference_label)
        ax.stairs(gen, edges, color="tab:red", label=generated_label)
        ax.set_ylabel("density", fontsize="small")
        ax.tick_params(labelbottom=False)
        ax.legend(fontsize="xx-small", loc="best")
        ok = ref > 0
        centers = 0.5 * (edges[1:] + edges[:-1])
        ratio = np.where(ok, gen / np.where(ok, ref, 1.0), np.nan)
        err = np.where(ok, np.hypot(gerr, ratio * rerr) / np.where(ok, ref, 1.0), np.nan)
        rax.errorbar(centers, ratio, yerr=err, fmt="o", ms=2, color="tab:red")
        rax.axhline(1.0, color="black", lw=1)
        rax.set_ylim(0.5, 1.5)
        rax.set_ylabel("ratio", fontsize="small")
        rax.set_xlabel(LABELS.get(name, name), fontsize="small")
    fig.suptitle(
        f"C2ST AUC = {quality.auc:.3f} ± {quality.auc_error:.3f} (target ≤ {quality.target_auc})",
        fontsize="small",
    )
    return save(fig, path)
