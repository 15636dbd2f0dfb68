"""Data: the synthetic benchmark, events and regions, file I/O and the parametric mjj fit."""
