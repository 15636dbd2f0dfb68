"""Sphinx configuration of the gbi_zfit user documentation.

Build (≈ 30 s on 2 CPU cores, most of it importing TensorFlow for autodoc)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Pages are MyST Markdown; the API reference is generated from the numpy-style docstrings by autodoc +
napoleon (the package is imported for real, nothing of ours is mocked). The numbers of the
"statistical validation" page come from ``benchmarks/results/*.json`` through the small local extension
``_ext/gbi_results.py``, so the page follows whatever results are committed there.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

# quiet TensorFlow/zfit while autodoc imports the package
os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

import gbi_zfit  # after the environment above

project = "gbi_zfit"
author = "gbi_zfit developers"
copyright = "gbi_zfit developers"
version = release = gbi_zfit.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "gbi_results",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
# Parameter types are written in prose ("Events or (features, mjj)"); Sphinx tries to cross-reference each
# word and warns when a word names attributes of several classes. Those words are not references.
suppress_warnings = ["ref.python"]

# -- MyST ------------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- autodoc / napoleon ----------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
# Names re-exported from a package (gbi_zfit.RatioPDF, gbi_zfit.models.OracleRatio, ...) are documented
# once, in the module that defines them; the API pages list modules, not packages.
autodoc_inherit_docstrings = False  # overrides of hepstats/zfit methods must not pull in their docstrings
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_preprocess_types = False

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"gbi_zfit {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}

# -- statistical validation page -------------------------------------------------------------------
gbi_results_dir = str(DOCS.parent / "benchmarks" / "results")


# -- docstrings: plain-text |x| is an absolute value, not a reST substitution ----------------------
# The package writes math in plain Unicode (``log |det ∂y/∂x|``, ``|y| ≤ 1``); in reST ``|name|`` is a
# substitution reference. Escape such pipes outside inline literals and roles; lines that start with a
# pipe (line blocks) or '+' (grid tables) are left alone.
_CODE = re.compile(r"(:\w+:)?`+[^`]*`+")


def _escape_pipes(line: str) -> str:
    if "|" not in line or line.lstrip().startswith(("|", "+")):
        return line
    out, last = [], 0
    for m in _CODE.finditer(line):
        out.append(line[last : m.start()].replace("|", "\\|"))
        out.append(m.group(0))
        last = m.end()
    out.append(line[last:].replace("|", "\\|"))
    return "".join(out)


def _process_docstring(app, what, name, obj, options, lines):
    lines[:] = [_escape_pipes(line) for line in lines]


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring)
