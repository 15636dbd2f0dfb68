"""Figures with matplotlib + mplhep; histograms with hist. One module per kind of figure."""

from .fit import plot_fit

__all__ = ["plot_fit"]
