"""Figures of pseudo-experiments: μ pulls, the Wilks test statistics against their χ² laws, and the
background-only toys of a global significance (look-elsewhere effect)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from ._style import save, style

__all__ = ["plot_global_significance", "plot_pulls", "plot_test_statistics"]


def _finite(values) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a)]


def _samples(result) -> dict:
    samples = getattr(result, "samples", None)
    if samples is None:
        samples = result["samples"] if isinstance(result, dict) and "samples" in result else result
    return samples


def _title(result) -> str | None:
    cfg = getattr(result, "config", None)
    if not cfg:
        return None
    return (
        f"{cfg.get('kind')} toys, S/√B = {cfg.get('s_over_sqrt_b'):g}, "
        f"θ = ({cfg.get('mx'):g}, {cfg.get('my'):g}) GeV"
    )


def plot_pulls(result, path: str | Path | None = None, *, bins: int = 30, span: float = 4.5):
    """Histogram of the μ pulls (θ floating and θ fixed at the truth) with a unit Gaussian overlay.

    Parameters
    ----------
    result : CoverageResult or dict
        A coverage result (its ``samples``) or a mapping with ``"pull"`` (and optionally
        ``"pull_fixed"``) arrays.
    path : path, optional
        Save the figure there (format from the suffix) and close it; otherwise return the figure.
    """
    plt, _ = style()
    s = _samples(result)
    edges = np.linspace(-span, span, bins + 1)
    width = edges[1] - edges[0]
    fig, ax = plt.subplots(figsize=(8, 6))
    n_max = 0
    for key, label, color in (
        ("pull", r"$\theta$ floating", "black"),
        ("pull_fixed", r"$\theta$ fixed", "tab:red"),
    ):
        x = _finite(s.get(key, []))
        if len(x) < 2:
            continue
        n_max = max(n_max, len(x))
        mean, sd = np.mean(x), np.std(x, ddof=1)
        em, es = sd / np.sqrt(len(x)), sd / np.sqrt(2 * (len(x) - 1))
        ax.hist(
            np.clip(x, -span + 1e-9, span - 1e-9),
            bins=edges,
            histtype="step",
            lw=2,
            color=color,
            label=f"{label}: mean {mean:+.2f}±{em:.2f}, width {sd:.2f}±{es:.2f}",
        )
    z = np.linspace(-span, span, 400)
    ax.plot(z, n_max * width * stats.norm.pdf(z), color="tab:blue", ls="--", label="N(0, 1)")
    ax.set_xlabel(r"$(\hat\mu - \mu_\mathrm{true}) / \sigma_\mathrm{HESSE}$")
    ax.set_ylabel("toys / bin")
    ax.set_xlim(-span, span)
    ax.set_ylim(0, 1.5 * ax.get_ylim()[1])  # room for the legend
    ax.legend(fontsize="x-small", loc="upper left")
    title = _title(result)
    if title:
        ax.set_title(title, fontsize="small")
    fig.tight_layout()
    return save(fig, path) if path is not None else fig


def plot_test_statistics(result, path: str | Path | None = None, *, bins: int = 30):
    """Distributions of t_μ and t_θ over the toys with the χ²_1 / χ²_2 densities.

    Dashed lines: Wilks thresholds χ²_k at 68.3 % and 95 %; solid lines: the toy quantiles (the
    calibrated thresholds).
    """
    plt, _ = style()
    s = _samples(result)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax, key, k, name in (
        (axes[0], "t_mu", 1, r"$t_\mu = 2\Delta\mathrm{NLL}(\mu_\mathrm{true})$"),
        (axes[1], "t_theta", 2, r"$t_\theta = 2\Delta\mathrm{NLL}(m_X, m_Y)_\mathrm{true}$"),
    ):
        t = np.clip(_finite(s.get(key, [])), 0.0, None)
        hi = max(float(stats.chi2.ppf(0.995, k)), float(np.quantile(t, 0.99)) if len(t) else 0.0)
        edges = np.linspace(0.0, hi, bins + 1)
        if len(t):
            ax.hist(
                np.clip(t, 0, hi - 1e-9),
                bins=edges,
                density=True,
                histtype="step",
                lw=2,
                color="black",
                label=f"toys ({len(t)})",
            )
        x = np.linspace(1e-3, hi, 400)
        ax.plot(x, stats.chi2.pdf(x, k), color="tab:blue", label=rf"$\chi^2_{k}$")
        for cl, color in ((0.683, "tab:green"), (0.95, "tab:red")):
            ax.axvline(stats.chi2.ppf(cl, k), color=color, ls="--", lw=1.5, label=rf"$\chi^2_{k}$ {cl:.1%}")
            if len(t):
                ax.axvline(np.quantile(t, cl), color=color, ls="-", lw=1.5, label=f"toys {cl:.1%}")
        ax.set_yscale("log")
        lo, top = ax.get_ylim()
        ax.set_ylim(lo, top * 300)  # room for the legend above the curves
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        ax.legend(fontsize="xx-small", ncol=2, loc="upper right")
    title = _title(result)
    if title:
        fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    return save(fig, path) if path is not None else fig


def plot_global_significance(result, path: str | Path | None = None, *, bins: int = 30):
    """Histogram of the background-only toys' maximum local Z with the observed local Z marked.

    Overlaid: the density of √q0 at a *fixed* θ (½ δ(0) + half-normal; dotted) — what the local Z would
    follow without the look-elsewhere effect — and, if there is one, the χ²_ν tail fit of the toys
    (dashed), both scaled to the number of toys.

    Parameters
    ----------
    result : GlobalSignificance or dict
        From :func:`~gbi_zfit.inference.lee.global_significance` (or its ``to_dict()``).
    path : path, optional
        Save the figure there (format from the suffix) and close it; otherwise return the figure.
    """
    plt, _ = style()
    d = result if isinstance(result, dict) else result.to_dict()
    z = _finite(d["toy_z"])
    z_obs = float(d["z_local_obs"])
    hi = max(4.0, 1.1 * float(z.max()) if len(z) else 0.0)
    z_shown = min(z_obs, 1.5 * hi)  # a far-off observation is drawn at the edge, with its value in the label
    hi = max(hi, 1.05 * z_shown)
    edges = np.linspace(0.0, hi, bins + 1)
    width = edges[1] - edges[0]
    fig, ax = plt.subplots(figsize=(9, 6.5))
    ax.hist(
        np.clip(z, 0, hi - 1e-9),
        bins=edges,
        histtype="stepfilled",
        color="tab:gray",
        alpha=0.5,
        edgecolor="black",
        label=f"background-only toys ({len(z)}): max local Z",
    )
    grid = np.linspace(1e-3, hi, 400)
    n = len(z)
    ax.plot(
        grid,
        n * width * stats.norm.pdf(grid),
        color="tab:blue",
        ls=":",
        lw=2,
        label=r"fixed $\theta$: $\sqrt{q_0}$",
    )
    ex = d.get("extrapolation")
    if ex:
        nu, u0, frac = ex["ndf"], ex["threshold"], ex["n_tail"] / max(n, 1)
        zt = grid[grid**2 > u0]
        dens = frac * 2 * zt * stats.chi2.pdf(zt**2, nu) / stats.chi2.sf(u0, nu)  # density of Z = √q0
        ax.plot(
            zt,
            n * width * dens,
            color="tab:green",
            ls="--",
            lw=2,
            label=rf"$\chi^2_{{\nu}}$ tail fit, $\nu$ = {nu:.2f}",
        )
    bound = d.get("bound")
    z_glob = d["z_global"]
    glob = f"global Z {'>' if bound else '='} {z_glob:.2f}"
    ax.axvline(z_shown, color="tab:red", lw=2.5, label=f"observed: local Z = {z_obs:.2f}, {glob}")
    ax.set_xlim(0, hi)
    ax.set_yscale("log")
    lo, top = ax.get_ylim()
    ax.set_ylim(max(lo, 0.3), max(top, 1.0) * 30)  # room for the legend
    ax.set_xlabel(r"maximum local significance $Z = \sqrt{q_0}$")
    ax.set_ylabel("toys / bin")
    ax.legend(fontsize="x-small", loc="upper right")
    p, err = d["p_global"], d["p_global_error"]
    ax.set_title(
        f"look-elsewhere effect: p = {p:.3g}" + (" (bound)" if bound else f" ± {err:.2g}"), fontsize="small"
    )
    fig.tight_layout()
    return save(fig, path) if path is not None else fig
