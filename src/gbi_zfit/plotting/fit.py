"""Figures with matplotlib + mplhep; histograms with hist."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._style import LABELS, save, style

__all__ = ["plot_fit"]


def _hist_panel(ax, rax, axis, data_vals, ref_vals, w_bkg, w_fit, mu, log=True):
    import hist

    _, mplhep = style()
    h_data = hist.Hist(axis).fill(data_vals)
    h_bkg = hist.Hist(axis, storage=hist.storage.Weight()).fill(ref_vals, weight=w_bkg)
    h_fit = hist.Hist(axis, storage=hist.storage.Weight()).fill(ref_vals, weight=w_fit)
    mplhep.histplot(h_bkg, ax=ax, label="background only (μ = 0)", color="tab:blue")
    mplhep.histplot(h_fit, ax=ax, label=rf"fit, $\hat\mu$ = {mu:.3g}", color="tab:red")
    mplhep.histplot(h_data, ax=ax, histtype="errorbar", color="black", label="data")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel("events / bin")
    ax.set_xlabel("")
    ax.legend(fontsize="x-small", loc="best")
    d, b = h_data.values(), h_bkg.values()
    ok = b > 0
    c = axis.centers
    rax.errorbar(c[ok], d[ok] / b[ok], yerr=np.sqrt(d[ok]) / b[ok], fmt="o", ms=3, color="black")
    rax.stairs(np.where(ok, h_fit.values() / np.where(ok, b, 1), np.nan), axis.edges, color="tab:red")
    rax.axhline(1.0, color="tab:blue", lw=1)
    rax.set_ylabel("data / bkg", fontsize="small")
    rax.set_xlabel(axis.label)


def plot_fit(
    data_features: np.ndarray,
    data_log_ratio: np.ndarray,
    reference: np.ndarray,
    reference_log_ratio: np.ndarray,
    mu: float,
    path: str | Path,
    *,
    background_efficiency: float = 0.01,
    bins: int = 30,
    title: str | None = None,
) -> Path:
    """Data in the SR against the background-only and the fitted signal+background predictions.

    Left: the distribution of log Λ(x | θ̂), where a signal appears as an excess at large values.
    Middle/right: mJ1 and mJ2 of the signal-enriched events (log Λ above the cut that keeps
    ``background_efficiency`` of the background). Predictions are the background reference sample scaled
    to the data count, weighted by 1 (background only) or μ̂ Λ + 1 − μ̂ (fit), because the model is a
    density relative to p_B.

    Parameters
    ----------
    data_features, reference : ndarray (n, 6)
        SR data and SR background reference sample, PAWS feature order.
    data_log_ratio, reference_log_ratio : ndarray
        log Λ(x | θ̂) of the fitted ratio model on each.
    mu : float
        Fitted μ.
    path : str or Path
        Output file (PNG/PDF); written atomically.
    """
    import hist

    from ..pdf.ratio import log_mixture_ratio

    plt, _ = style()
    n_data, n_ref = len(data_features), len(reference)
    w_bkg = np.full(n_ref, n_data / n_ref)
    w_fit = np.exp(log_mixture_ratio(reference_log_ratio, mu).numpy()) * n_data / n_ref
    cut = float(np.quantile(reference_log_ratio, 1.0 - background_efficiency))
    fig, axes = plt.subplots(2, 3, figsize=(20, 8), gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    lo = float(np.quantile(reference_log_ratio, 0.01))
    hi = float(max(np.max(data_log_ratio), cut + 1.0))
    _hist_panel(
        axes[0, 0],
        axes[1, 0],
        hist.axis.Regular(bins, lo, hi, label=r"$\log\Lambda(x|\hat\theta)$"),
        data_log_ratio,
        reference_log_ratio,
        w_bkg,
        w_fit,
        mu,
    )
    axes[0, 0].axvline(cut, color="gray", ls="--", lw=1)
    d_sel, r_sel = data_log_ratio > cut, reference_log_ratio > cut
    for j, name in enumerate(("mj1", "mj2"), start=1):
        vals = data_features[d_sel, j - 1]
        top = float(np.quantile(reference[r_sel, j - 1], 0.99)) if r_sel.any() else 1.0
        axis = hist.axis.Regular(bins, 0.0, max(top, float(vals.max(initial=0.0))), label=LABELS[name])
        _hist_panel(
            axes[0, j],
            axes[1, j],
            axis,
            vals,
            reference[r_sel, j - 1],
            w_bkg[r_sel],
            w_fit[r_sel],
            mu,
            log=False,
        )
        axes[0, j].set_title(
            f"log Λ > {cut:.2f} (background efficiency {background_efficiency:g})", fontsize="small"
        )
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    return save(fig, path)
