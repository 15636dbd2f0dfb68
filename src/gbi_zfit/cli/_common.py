"""Shared helpers of the ``gbi`` subcommands: output layout, manifest, quiet TensorFlow."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .. import __version__

__all__ = ["out_dirs", "quiet_tf", "write_manifest"]


def quiet_tf() -> None:
    os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def out_dirs(out: Path) -> dict[str, Path]:
    """The standard ``--out`` layout: ``data/``, ``models/``, ``results/``, ``figures/`` (created)."""
    from ..errors import DataFileError

    dirs = {k: out / k for k in ("data", "models", "results", "figures")}
    try:
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataFileError(f"cannot create the output directory {out}: {exc.strerror or exc}") from exc
    return dirs


def write_manifest(out: Path, entry: dict) -> None:
    """Append what produced the files in ``out`` (command, seed, versions) to ``manifest.json``."""
    from .._util import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    items = json.loads(path.read_text()) if path.exists() else []
    items.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "gbi_zfit": __version__, **entry})
    atomic_write_text(path, json.dumps(items, indent=2))
