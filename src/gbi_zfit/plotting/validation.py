"""Figures of learned-model validation: the spurious signal per sideband window, and E_B,true[Λ] − 1 per θ."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._style import save, style

__all__ = ["plot_normalisation_map", "plot_sideband_validation"]


def plot_sideband_validation(result, path: str | Path | None = None):
    """μ̂ ± σ (top) and local Z (bottom) per sideband window, learned and (if present) oracle.

    Parameters
    ----------
    result : SidebandValidation or dict
        From :func:`~gbi_zfit.inference.validation.validate_sidebands` (or its ``to_dict()``).
    path : path, optional
        Save the figure there and close it; otherwise return the figure.
    """
    plt, _ = style()
    d = result if isinstance(result, dict) else result.to_dict()
    wins = d["windows"]
    centre = np.array([0.5 * (w["low"] + w["high"]) for w in wins])
    half = np.array([0.5 * (w["high"] - w["low"]) for w in wins])
    fig, (ax_mu, ax_z) = plt.subplots(2, 1, figsize=(9, 8), sharex=True)
    mu = np.array([w["mu_hat"] for w in wins])
    err = np.array([w["mu_error"] for w in wins])
    ok = np.array([bool(w.get("valid", True)) for w in wins])
    ax_mu.errorbar(
        centre[ok], mu[ok], yerr=err[ok], xerr=half[ok], fmt="o", color="tab:red", label="learned ratio"
    )
    if (~ok).any():  # an invalid fit's HESSE error means nothing: no error bar, open marker
        ax_mu.plot(centre[~ok], mu[~ok], "o", mfc="none", color="tab:red", label="learned (invalid fit)")
    ax_z.errorbar(centre, [w["z_local"] for w in wins], xerr=half, fmt="o", color="tab:red", label="learned")
    if all(w.get("oracle") for w in wins):
        om = np.array([w["oracle"]["mu_hat"] for w in wins])
        oe = np.array([w["oracle"]["mu_error"] for w in wins])
        ax_mu.errorbar(centre + 0.1 * half, om, yerr=oe, fmt="s", color="tab:blue", label="exact oracle")
        ax_z.plot(
            centre + 0.1 * half,
            [w["oracle"]["z_local"] for w in wins],
            "s",
            color="tab:blue",
            label="exact oracle",
        )
    ss = d["spurious_signal"]["sigma_mu"]
    ax_mu.axhline(ss, color="tab:red", ls="--", lw=1.5, label=rf"$\sigma_{{ss}}$ = {ss:.2g}")
    ax_mu.axhline(0.0, color="black", lw=1)
    ax_mu.set_ylabel(r"spurious $\hat\mu$")
    ax_mu.legend(fontsize="x-small")
    for z, ls in ((3.0, ":"), (5.0, "--")):
        ax_z.axhline(z, color="gray", ls=ls, lw=1)
    ax_z.set_ylabel(r"local $Z$ at $\hat\theta$")
    ax_z.set_xlabel(r"validation window in $m_{jj}$ [GeV]")
    ax_z.set_ylim(bottom=0)
    ax_z.legend(fontsize="x-small")
    fig.suptitle("sideband validation (no signal expected)", fontsize="small")
    fig.tight_layout()
    return save(fig, path) if path is not None else fig


def plot_normalisation_map(check, path: str | Path | None = None, *, vmax: float | None = None):
    """E_B,true[f(x | θ)] − 1 per θ as a map over (mX, mY), with the goal marked in the title.

    Parameters
    ----------
    check : NormalisationCheck or dict
        From :func:`~gbi_zfit.models.fidelity.ratio_normalisation` or
        :func:`~gbi_zfit.models.fidelity.generator_normalisation` (or their ``to_dict()``).
    vmax : float, optional
        Colour range ±vmax (default: the largest |ε|).
    """
    plt, _ = style()
    d = check if isinstance(check, dict) else check.to_dict()
    theta = np.asarray(d["theta"], np.float64)
    eps = np.asarray(d["epsilon"], np.float64)
    mx, my = np.unique(theta[:, 0]), np.unique(theta[:, 1])
    grid = np.full((len(my), len(mx)), np.nan)
    for (a, b), e in zip(theta, eps, strict=True):
        grid[np.searchsorted(my, b), np.searchsorted(mx, a)] = e
    v = float(vmax if vmax is not None else max(np.nanmax(np.abs(eps)), 1e-3))
    fig, ax = plt.subplots(figsize=(9, 7.5))
    step = (mx[1] - mx[0]) if len(mx) > 1 else 50.0
    mesh = ax.pcolormesh(
        np.r_[mx - step / 2, mx[-1] + step / 2],
        np.r_[my - step / 2, my[-1] + step / 2],
        grid,
        cmap="RdBu_r",
        vmin=-v,
        vmax=v,
    )
    fig.colorbar(mesh, ax=ax, label=r"$E_{B,\mathrm{true}}[f(x|\theta)] - 1$")
    for (a, b), e in zip(theta, eps, strict=True):
        ax.text(a, b, f"{100 * e:+.0f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel(r"$m_X$ [GeV]")
    ax.set_ylabel(r"$m_Y$ [GeV]")
    ax.set_title(
        f"{d['what']}: max |ε| = {d['max_abs']:.3f} (goal ≤ {d['tolerance']:g}), median {d['median_abs']:.3f}; "
        "numbers in %",
        fontsize="x-small",
    )
    fig.tight_layout()
    return save(fig, path) if path is not None else fig
