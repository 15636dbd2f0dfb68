"""Shared figure style and axis labels."""

from __future__ import annotations

from pathlib import Path

from .._util import atomic_path

LABELS = {
    "mu": r"$\mu$",
    "mx": r"$m_X$ [GeV]",
    "my": r"$m_Y$ [GeV]",
    "mj1": r"$m_{J_1}$ [GeV]",
    "mj2": r"$m_{J_2}$ [GeV]",
    "delta_mj": r"$m_{J_1} - m_{J_2}$ [GeV]",
    "tau21_j1": r"$\tau_{21}^{J_1}$",
    "tau21_j2": r"$\tau_{21}^{J_2}$",
    "tau32_j1": r"$\tau_{32}^{J_1}$",
    "tau32_j2": r"$\tau_{32}^{J_2}$",
}


def style():
    """(pyplot, mplhep) with the Agg backend and the ROOT-like mplhep style."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import mplhep

    plt.style.use(mplhep.style.ROOT)
    return plt, mplhep


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    """Save ``fig`` atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)
    return path
