"""Figures with matplotlib + mplhep; histograms with hist."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._util import atomic_path
from .data.events import Events

__all__ = ["plot_fit"]

_LABELS = {
    "mj1": r"$m_{J_1}$ [GeV]",
    "mj2": r"$m_{J_2}$ [GeV]",
    "delta_mj": r"$m_{J_1} - m_{J_2}$ [GeV]",
    "tau21_j1": r"$\tau_{21}^{J_1}$",
    "tau21_j2": r"$\tau_{21}^{J_2}$",
    "tau32_j1": r"$\tau_{32}^{J_1}$",
    "tau32_j2": r"$\tau_{32}^{J_2}$",
}


def _style():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.ROOT)
    return plt, mplhep


def plot_fit(
    data: Events,
    reference: np.ndarray,
    log_ratio_ws: np.ndarray,
    mu: float,
    path: str | Path,
    *,
    features: tuple[str, ...] = ("mj1", "mj2"),
    bins: int = 40,
    title: str | None = None,
) -> Path:
    """Data in the SR with the background-only and fitted signal+background predictions.

    The prediction is the background reference sample, scaled to the data count, weighted by the fitted
    μ Λ + 1 − μ (the model is a density relative to p_B); its signal part is the μ Λ share.

    Parameters
    ----------
    data : Events
        SR data.
    reference : ndarray (n_ref, d)
        SR background reference sample in the PAWS feature order.
    log_ratio_ws : ndarray (n_ref,)
        log(μ Λ + 1 − μ) of the fitted model on the reference sample.
    mu : float
        Fitted μ.
    path : str or Path
        Output file (PNG/PDF); written atomically.
    """
    import hist

    from .data.events import PAWS_FEATURES

    plt, mplhep = _style()
    n_data = len(data)
    w_total = np.exp(log_ratio_ws) * n_data / len(reference)
    w_bkg = np.full(len(reference), (1.0 - mu) * n_data / len(reference))
    fig, axes = plt.subplots(
        2, len(features), figsize=(7 * len(features), 8), gridspec_kw={"height_ratios": [3, 1]}, sharex="col"
    )
    axes = np.asarray(axes).reshape(2, len(features))
    for j, name in enumerate(features):
        col = PAWS_FEATURES.names.index(name)
        vals = data.features(PAWS_FEATURES)[:, col]
        hi = float(np.quantile(vals, 0.995)) if name.startswith("m") else 1.0
        axis = hist.axis.Regular(bins, 0.0, hi, name=name, label=_LABELS.get(name, name))
        h_data = hist.Hist(axis).fill(vals)
        h_tot = hist.Hist(axis, storage=hist.storage.Weight()).fill(reference[:, col], weight=w_total)
        h_bkg = hist.Hist(axis, storage=hist.storage.Weight()).fill(reference[:, col], weight=w_bkg)
        ax, rax = axes[0, j], axes[1, j]
        mplhep.histplot(h_bkg, ax=ax, label="background only", color="tab:blue")
        mplhep.histplot(h_tot, ax=ax, label=rf"fit: $\hat\mu$ = {mu:.3g}", color="tab:red")
        mplhep.histplot(h_data, ax=ax, histtype="errorbar", color="black", label="data (SR)")
        ax.set_yscale("log")
        ax.set_ylabel("events / bin")
        ax.legend(fontsize="small")
        d, b = h_data.values(), h_bkg.values()
        ok = b > 0
        centers = axis.centers
        rax.errorbar(centers[ok], d[ok] / b[ok], yerr=np.sqrt(d[ok]) / b[ok], fmt="o", ms=3, color="black")
        rax.plot(centers[ok], h_tot.values()[ok] / b[ok], color="tab:red", drawstyle="steps-mid")
        rax.axhline(1.0, color="tab:blue", lw=1)
        rax.set_ylabel("data / bkg")
        rax.set_xlabel(axis.label)
        rax.set_ylim(0.5, 2.0)
    if title:
        fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)
    return path
