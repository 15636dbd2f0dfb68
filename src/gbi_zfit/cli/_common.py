"""Shared helpers of the ``gbi`` subcommands: output layout, manifest, quiet TensorFlow, reading data."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .. import __version__

__all__ = [
    "add_progress_option",
    "add_read_options",
    "member_store",
    "out_dirs",
    "progress_enabled",
    "quiet_tf",
    "read_data",
    "read_options",
    "write_manifest",
]


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--progress/--no-progress``; default ``None``: decided by :func:`progress_enabled`."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars if ``--progress``, none if ``--no-progress``, else when stderr is a terminal."""
    import sys

    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


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


@contextlib.contextmanager
def member_store(store: Path) -> Iterator[Path]:
    """Resumable training into ``store`` (a ``.jsonl`` of finished members), with a CLI-sized mismatch error."""
    from ..errors import ConfigError

    if store.is_file():
        print(f"resuming from {store} (finished members are not trained again)", flush=True)
    try:
        yield store
    except ConfigError as exc:
        if str(store) not in str(exc):
            raise
        raise ConfigError(
            f"{store} holds members trained on other data or with other settings; delete it to train "
            "afresh, or choose another --out"
        ) from exc


def write_manifest(out: Path, entry: dict) -> None:
    """Append what produced the files in ``out`` (command, seed, versions) to ``manifest.json``."""
    from .._util import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    path = out / "manifest.json"
    items = json.loads(path.read_text()) if path.exists() else []
    items.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "gbi_zfit": __version__, **entry})
    atomic_write_text(path, json.dumps(items, indent=2))


def add_read_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--tree`` and ``--branches`` (how to read a ROOT data file) to a subcommand that reads one."""
    g = parser.add_argument_group("ROOT data files")
    g.add_argument(
        "--tree", metavar="NAME", help="tree (or dir/name) to read from a .root data file (default events)"
    )
    g.add_argument(
        "--branches",
        nargs="+",
        metavar="COLUMN=BRANCH",
        help="branch names of a .root data file that differ from gbi_zfit's column names "
        "(mjj mj1 mj2 tau21_j1 tau21_j2 tau32_j1 tau32_j2, and label for the optional truth label), "
        "e.g. --branches mjj=Mjj mj1=jet1_m mj2=jet2_m (masses in GeV)",
    )


def read_options(args: argparse.Namespace, path: str | os.PathLike) -> dict:
    """Keyword arguments of :func:`gbi_zfit.data.io.read_events` from ``--tree`` / ``--branches``.

    Raises
    ------
    InputError
        If ``--branches`` items are not ``COLUMN=BRANCH``, or the options are given for a file that is not
        ``.root`` (they would otherwise be ignored).
    """
    from ..errors import InputError

    tree, items = getattr(args, "tree", None), getattr(args, "branches", None)
    if tree is None and not items:
        return {}
    if Path(os.fspath(path)).suffix.lower() != ".root":
        raise InputError(
            f"--tree and --branches apply to .root data files only; {os.fspath(path)} is not one"
        )
    kwargs: dict = {}
    if tree is not None:
        kwargs["tree"] = tree
    if items:
        branches = {}
        for item in items:
            column, sep, branch = item.partition("=")
            if not sep or not column or not branch:
                raise InputError(f"--branches takes COLUMN=BRANCH items, e.g. mjj=Mjj; got {item!r}")
            if column in branches:
                raise InputError(f"--branches maps column {column!r} twice")
            branches[column] = branch
        if "label" in branches:  # the truth label (optional) has its own argument in read_root
            kwargs["label_branch"] = branches.pop("label")
        if branches:
            kwargs["branches"] = branches
    return kwargs


def read_data(args: argparse.Namespace, path: str | os.PathLike):
    """The events of ``path``, read as ``--tree`` / ``--branches`` say (:func:`read_options`)."""
    from ..data.io import read_events

    return read_events(path, **read_options(args, path))
