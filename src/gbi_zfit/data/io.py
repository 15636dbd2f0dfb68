"""Reading and writing events: ROOT ntuples, the LHCO R&D HDF5 features file, npz, and histograms.

Every reader returns an :class:`~gbi_zfit.data.events.Events` (masses in GeV, jets ordered by mass) and
validates at this boundary, so the rest of the package can trust its input. Every writer is atomic: it
writes a temporary file in the target directory and renames it onto the target only when complete, so an
interrupted or failed write never leaves a half-written file (and never touches an existing one).

Errors are typed (:mod:`gbi_zfit.errors`): a file that cannot be opened or parsed, or lacks the requested
tree/key, raises :class:`~gbi_zfit.errors.DataFileError`; a file that opens but holds unusable values
(missing branches/columns, no events, NaN/inf, TeV units) raises :class:`~gbi_zfit.errors.InputError`.

Examples
--------
>>> from gbi_zfit.data.benchmark import LHCOSim
>>> from gbi_zfit.data.io import read_events, write_events
>>> events = LHCOSim().make_dataset(s_over_sqrt_b=1, n_background=20_000, seed=1)
>>> write_events(events, "data.root")                      # doctest: +SKIP
>>> same = read_events("data.root")                        # doctest: +SKIP
>>> mine = read_events("ntuple.root", tree="nominal",      # doctest: +SKIP
...                    branches={"mjj": "Mjj", "mj1": "jet1_m", "mj2": "jet2_m"})
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hist
import numpy as np
import uproot

from .._util import atomic_path
from ..errors import DataFileError, GBIError, InputError
from .events import COLUMNS, Events

__all__ = [
    "LHCO_COLUMNS",
    "NPZ_FORMAT_VERSION",
    "histogram",
    "load_npz",
    "load_npz_weights",
    "read_events",
    "read_lhco_hdf5",
    "read_root",
    "save_npz",
    "write_events",
    "write_lhco_hdf5",
    "write_root",
]

PathLike = str | os.PathLike

#: Columns of the LHCO R&D ``events_anomalydetection_v2.features.h5`` table, in file order.
LHCO_COLUMNS: tuple[str, ...] = (
    *("pxj1", "pyj1", "pzj1", "mj1", "tau1j1", "tau2j1", "tau3j1"),
    *("pxj2", "pyj2", "pzj2", "mj2", "tau1j2", "tau2j2", "tau3j2"),
    "label",
)

#: Version of the npz layout written by :func:`save_npz`; bump when the layout changes.
NPZ_FORMAT_VERSION = 1
_NPZ_FORMAT_NAME = "gbi_zfit.events"

_LHCO_HINT = "pip install 'gbi_zfit[lhco]' (pandas and tables)"
# |y| of the common longitudinal boost write_lhco_hdf5 applies, so files have pz != 0 like real dijets.
_LHCO_MAX_RAPIDITY = 1.0

_MASS_LABELS = {
    "mjj": r"$m_{jj}$",
    "mj1": r"$m_{J_1}$",
    "mj2": r"$m_{J_2}$",
    "delta_mj": r"$m_{J_1} - m_{J_2}$",
}
_SHAPE_LABELS = {
    "tau21_j1": r"$\tau_{21}^{J_1}$",
    "tau21_j2": r"$\tau_{21}^{J_2}$",
    "tau32_j1": r"$\tau_{32}^{J_1}$",
    "tau32_j2": r"$\tau_{32}^{J_2}$",
}
#: Axis labels of every feature :func:`histogram` knows (masses in GeV, τ ratios dimensionless).
_FEATURE_LABELS = {**{k: f"{v} [GeV]" for k, v in _MASS_LABELS.items()}, **_SHAPE_LABELS}


# ----------------------------------------------------------------------------------------------------
# shared helpers
def _existing_file(path: PathLike) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise DataFileError(f"data file {p} does not exist; check the path (working directory: {Path.cwd()})")
    if not p.is_file():
        raise DataFileError(f"{p} is not a regular file; give the path of a data file")
    return p


def _check_events(events: Any) -> Events:
    if not isinstance(events, Events):
        raise InputError(
            f"expected a gbi_zfit Events object, got {type(events).__name__}; build one with Events(columns)"
        )
    return events


def _short(exc: BaseException) -> str:
    # HDF5 messages carry a C back trace whose last line is the gist; uproot appends the file path, which
    # our own message already names.
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("for file path", "in file", "End of HDF5"))]
    gist = " ".join(lines) if len(lines) <= 3 else lines[-1]
    return f"{type(exc).__name__}: {gist}"


def _atomic_target(path: PathLike) -> contextlib.AbstractContextManager[Path]:
    """:func:`gbi_zfit._util.atomic_path` without creating directories: a missing directory is an error."""
    return atomic_path(path, make_parents=False)


def _numeric_1d(values: Any, name: str, source: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise InputError(
            f"{name!r} in {source} is not a flat numeric column (dtype {arr.dtype}, shape {arr.shape}); "
            "gbi_zfit needs exactly one number per event"
        )
    return arr


def _as_label(values: Any, name: str, source: str) -> np.ndarray:
    arr = _numeric_1d(values, name, source)
    if not np.isin(arr, (0, 1)).all():  # also rejects NaN, which would otherwise cast to garbage int8
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5].tolist()
        raise InputError(
            f"label column {name!r} in {source} must hold 0 (background) or 1 (signal); found {bad}; "
            "fix the labels or read without them"
        )
    return arr.astype(np.int8)


def _build_events(
    cols: Mapping[str, np.ndarray], label: np.ndarray | None, *, order_jets: bool, source: str
) -> Events:
    try:
        if order_jets:
            return Events.from_unordered(
                cols["mjj"],
                cols["mj1"],
                cols["mj2"],
                cols["tau21_j1"],
                cols["tau21_j2"],
                cols["tau32_j1"],
                cols["tau32_j2"],
                label,
            )
        return Events(cols, label)
    except InputError as exc:  # same error type, but say which file the bad values came from
        raise type(exc)(f"{source}: {exc}") from exc


def _require_events(n: int, source: str) -> None:
    if n == 0:
        raise InputError(f"{source} holds no events; check that the file was filled (or the selected range)")


# ----------------------------------------------------------------------------------------------------
# ROOT (uproot)
def _branch_names(branches: Mapping[str, str] | None) -> dict[str, str]:
    """Our column name → branch name in the file (identity for columns not in ``branches``)."""
    if branches is not None and not isinstance(branches, Mapping):
        raise InputError(
            f"branches= must be a mapping {{column: branch name}}, e.g. {{'mjj': 'Mjj'}}; got "
            f"{type(branches).__name__}"
        )
    branches = dict(branches or {})
    unknown = sorted(set(branches) - set(COLUMNS))
    if unknown:
        raise InputError(
            f"branches= has unknown column name(s) {unknown}; its keys must be among {list(COLUMNS)} "
            "(the label branch is set with label_branch=)"
        )
    if any(not isinstance(v, str) or not v for v in branches.values()):
        raise InputError(f"branches= must map column names to non-empty branch-name strings, got {branches}")
    return {c: branches.get(c, c) for c in COLUMNS}


_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple")


def _is_tree(obj: Any) -> bool:
    return isinstance(obj, (uproot.TTree, uproot.behaviors.RNTuple.RNTuple))


def _check_tree_name(tree: Any) -> str:
    if not isinstance(tree, str) or not tree:
        raise InputError(f"tree= must be the non-empty name of a tree (a string), got {tree!r}")
    return tree


def _open_tree(file: Any, tree: str, path: Path) -> Any:
    try:
        obj = file[tree]
    except KeyError:
        obj = None
    if not _is_tree(obj):
        trees = sorted(k for k, c in file.classnames(cycle=False).items() if c in _TREE_CLASSES)
        raise DataFileError(
            f"{path} has no tree {tree!r}; trees in the file: {trees or 'none'}; pass tree=<one of them> "
            "(on the gbi command line: --tree NAME)"
        )
    return obj


def write_root(
    events: Events,
    path: PathLike,
    *,
    tree: str = "events",
    branches: Mapping[str, str] | None = None,
    label_branch: str = "label",
) -> None:
    """Write events as a flat ROOT TTree (one float64 branch per column, int8 label if known).

    Parameters
    ----------
    events : Events
        The events to write.
    path : str or path-like
        Output file; replaced atomically if it exists.
    tree : str
        Name of the TTree.
    branches : mapping of str to str, optional
        Branch name in the file for some or all of :data:`~gbi_zfit.data.events.COLUMNS`
        (e.g. ``{"mjj": "Mjj"}``); unmapped columns keep their own names.
    label_branch : str
        Branch name of the truth label, written only if ``events.label`` is known.

    Raises
    ------
    InputError
        If ``branches`` names unknown columns or maps two columns onto one branch.
    DataFileError
        If the file cannot be written (nothing is left behind in that case).
    """
    events = _check_events(events)
    tree = _check_tree_name(tree)
    names = _branch_names(branches)
    data = {names[c]: events.columns[c] for c in COLUMNS}
    if events.label is not None:
        data[label_branch] = events.label.astype(np.int8)
    if len(data) != len(COLUMNS) + (events.label is not None):
        raise InputError(f"two columns map to one branch name: {names}, label {label_branch!r}")
    with _atomic_target(path) as tmp, uproot.recreate(tmp) as file:
        # mktree + extend writes a TTree; plain assignment of a dict would write an RNTuple in uproot ≥ 5.6.
        file.mktree(tree, {k: v.dtype for k, v in data.items()})
        file[tree].extend(data)


def read_root(
    path: PathLike,
    *,
    tree: str = "events",
    branches: Mapping[str, str] | None = None,
    label_branch: str | None = "label",
    order_jets: bool = True,
) -> Events:
    """Read events from a flat ROOT ntuple (TTree or RNTuple) with uproot.

    Parameters
    ----------
    path : str or path-like
        The ROOT file.
    tree : str
        Name (or ``dir/name`` path) of the tree.
    branches : mapping of str to str, optional
        Branch name in the file for some or all of :data:`~gbi_zfit.data.events.COLUMNS`, e.g.
        ``{"mjj": "Mjj", "mj1": "jet1_m", "mj2": "jet2_m", "tau21_j1": "jet1_tau21", ...}``;
        unmapped columns are looked up under their own names. Masses must be in GeV.
    label_branch : str or None
        Branch with the truth label (0/1), read if the tree has it; ``None`` never reads a label.
    order_jets : bool
        Order the two jets by mass (j1 the heavier), as ntuples are often pT-ordered. With ``False``
        unordered jets raise :class:`~gbi_zfit.errors.InputError`.

    Returns
    -------
    Events

    Raises
    ------
    DataFileError
        If the file is missing, not a ROOT file, corrupt, or has no tree ``tree`` (the message lists the
        trees it has).
    InputError
        If branches are missing (the message lists the available ones), are not flat numeric, the tree is
        empty, or the values fail :class:`~gbi_zfit.data.events.Events` validation (NaN/inf, TeV units,
        negative masses, unordered jets with ``order_jets=False``).
    """
    path = _existing_file(path)
    tree = _check_tree_name(tree)
    names = _branch_names(branches)
    source = f"tree {tree!r} of {path}"
    try:
        with uproot.open(path) as file:
            obj = _open_tree(file, tree, path)
            available = list(obj.keys())
            missing = [
                f"{b!r}" + ("" if b == c else f" (for {c})") for c, b in names.items() if b not in available
            ]
            if missing:
                raise InputError(
                    f"{source} lacks branch(es) {', '.join(missing)}; available branches: {available}; "
                    "map your names with branches={column: branch} "
                    "(on the gbi command line: --branches column=branch …)"
                )
            _require_events(obj.num_entries, source)
            cols = {c: _numeric_1d(obj[b].array(library="np"), b, source) for c, b in names.items()}
            label = None
            if label_branch is not None and label_branch in available:
                label = _as_label(obj[label_branch].array(library="np"), label_branch, source)
    except GBIError:
        raise
    except Exception as exc:  # uproot raises many types (ValueError, DeserializationError, zlib errors …)
        raise DataFileError(
            f"cannot read {path} as a ROOT file ({_short(exc)}); the file is not ROOT or is corrupt/truncated"
        ) from exc
    return _build_events(cols, label, order_jets=order_jets, source=source)


# ----------------------------------------------------------------------------------------------------
# LHCO R&D HDF5 (pandas table)
def _import_pandas() -> Any:
    # pandas/tables are an optional extra; a plain ImportError (with the install hint) is what users and
    # tools expect for a missing dependency, so we do not disguise it as a data-file problem.
    try:
        import pandas as pd
        import tables  # noqa: F401  (pandas needs it for HDF5; fail here with the hint, not deep inside)
    except ImportError as exc:
        raise ImportError(f"reading/writing LHCO HDF5 files needs pandas and tables: {_LHCO_HINT}") from exc
    return pd


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, and 0 where ``den == 0`` (the LHCO convention for jets with τ_N = 0)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _lhco_events(table: Mapping[str, np.ndarray], source: str) -> Events:
    """Events from LHCO feature columns: mjj from the two massive 4-vectors, τ ratios, mass ordering."""
    p1 = np.stack([table["pxj1"], table["pyj1"], table["pzj1"]])
    p2 = np.stack([table["pxj2"], table["pyj2"], table["pzj2"]])
    m1, m2 = table["mj1"], table["mj2"]
    e1 = np.sqrt((p1 * p1).sum(axis=0) + m1 * m1)
    e2 = np.sqrt((p2 * p2).sum(axis=0) + m2 * m2)
    # (p1 + p2)² written as m1² + m2² + 2 (E1 E2 − p⃗1·p⃗2): avoids subtracting two large squares; tiny
    # negative values from rounding are clipped (NaN passes through and is caught by validation).
    mjj2 = m1 * m1 + m2 * m2 + 2.0 * (e1 * e2 - (p1 * p2).sum(axis=0))
    cols = {
        "mjj": np.sqrt(np.maximum(mjj2, 0.0)),
        "mj1": m1,
        "mj2": m2,
        "tau21_j1": _safe_ratio(table["tau2j1"], table["tau1j1"]),
        "tau21_j2": _safe_ratio(table["tau2j2"], table["tau1j2"]),
        "tau32_j1": _safe_ratio(table["tau3j1"], table["tau2j1"]),
        "tau32_j2": _safe_ratio(table["tau3j2"], table["tau2j2"]),
    }
    label = _as_label(table["label"], "label", source) if "label" in table else None
    return _build_events(cols, label, order_jets=True, source=source)


def read_lhco_hdf5(
    path: PathLike, *, key: str | None = None, n_events: int | None = None, start: int = 0
) -> Events:
    """Read the LHCO R&D features file (``events_anomalydetection_v2.features.h5`` layout).

    The file is a pandas table with columns :data:`LHCO_COLUMNS` (``label`` optional, e.g. for the black
    boxes). mjj is the invariant mass of the sum of the two massive jet 4-vectors
    (E = √(p² + m²)); τ21 = τ2/τ1 and τ32 = τ3/τ2, **set to 0 where the denominator is 0** (as the LHCO
    community does for jets with a single constituent); jets are then ordered by mass.

    Parameters
    ----------
    path : str or path-like
        The HDF5 file.
    key : str, optional
        The pandas key; by default the file's only key (``"df"`` in the LHCO files).
    n_events : int, optional
        Read at most this many events (default: all).
    start : int
        Index of the first event to read.

    Returns
    -------
    Events

    Raises
    ------
    ImportError
        If pandas or tables are missing (``pip install 'gbi_zfit[lhco]'``).
    DataFileError
        If the file is missing, not HDF5/pandas, corrupt, or the key is absent or ambiguous (the message
        lists the keys).
    InputError
        On missing columns (named in the message), no events in the selected range, bad arguments, or
        values failing :class:`~gbi_zfit.data.events.Events` validation.
    """
    pd = _import_pandas()
    path = _existing_file(path)
    if not (isinstance(start, (int, np.integer)) and start >= 0):
        raise InputError(f"start must be an integer ≥ 0, got {start!r}")
    if n_events is not None and not (isinstance(n_events, (int, np.integer)) and n_events >= 0):
        raise InputError(f"n_events must be an integer ≥ 0 or None, got {n_events!r}")
    stop = None if n_events is None else start + n_events
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = store.keys()
            if key is None:
                if len(keys) != 1:
                    raise DataFileError(f"{path} holds {len(keys)} pandas keys {keys}; choose one with key=")
                key = keys[0]
            elif "/" + key.lstrip("/") not in keys:
                raise DataFileError(f"{path} has no key {key!r}; keys in the file: {keys}; pass key=")
            frame = store.select(key, start=start, stop=stop)
    except GBIError:
        raise
    except Exception as exc:  # tables.HDF5ExtError, pandas TypeError/ValueError on foreign HDF5 layouts …
        raise DataFileError(
            f"cannot read {path} as a pandas HDF5 table ({_short(exc)}); expected the LHCO R&D features "
            "layout (pandas.DataFrame.to_hdf)"
        ) from exc
    source = f"key {key!r} of {path}"
    if not isinstance(frame, pd.DataFrame):
        raise DataFileError(f"{source} holds a {type(frame).__name__}, not a DataFrame of LHCO features")
    required = [c for c in LHCO_COLUMNS if c != "label"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        shown = [str(c) for c in frame.columns[:20]] + (["…"] if len(frame.columns) > 20 else [])
        raise InputError(
            f"{source} lacks LHCO column(s) {missing}; it has {shown}; expected {list(LHCO_COLUMNS)} "
            "(the features file, not the raw constituents file)"
        )
    _require_events(len(frame), source + (f" from event {start}" if start else ""))
    table = {c: _numeric_1d(frame[c].to_numpy(), c, source) for c in LHCO_COLUMNS if c in frame.columns}
    table = {c: (v if c == "label" else v.astype(np.float64)) for c, v in table.items()}
    return _lhco_events(table, source)


def write_lhco_hdf5(events: Events, path: PathLike, *, seed: int | None = 0) -> None:
    """Write events in the LHCO R&D features layout (for tests, and to share data in that format).

    Each event becomes two massive jets back to back in the transverse plane, with momentum
    p = √((mjj² − (m1+m2)²)(mjj² − (m1−m2)²)) / (2 mjj) so that their invariant mass is mjj, then both
    are boosted along z by one random rapidity |y| ≤ 1; the azimuth and which jet is stored first are
    random too (the reader must not rely on an order). τ1 = 1, τ2 = τ21, τ3 = τ32·τ21, so that
    :func:`read_lhco_hdf5` returns the same τ ratios (except τ32 where τ21 = 0, which cannot be encoded
    and reads back as 0). All columns are float64; ``label`` is written only if it is known.

    Parameters
    ----------
    events : Events
        The events to write.
    path : str or path-like
        Output ``.h5`` file (key ``"df"``, pandas ``format="table"``); replaced atomically.
    seed : int, optional
        Seed of the random azimuth, boost and jet order.

    Raises
    ------
    ImportError
        If pandas or tables are missing.
    InputError
        If some event has mj1 + mj2 > mjj, which no pair of 4-vectors can represent.
    DataFileError
        If the file cannot be written (nothing is left behind in that case).
    """
    pd = _import_pandas()
    events = _check_events(events)
    mjj, m1, m2 = events["mjj"], events["mj1"], events["mj2"]
    q = (mjj**2 - (m1 + m2) ** 2) * (mjj**2 - (m1 - m2) ** 2)
    bad = (mjj < m1 + m2) | (q < 0)
    if bad.any():
        raise InputError(
            f"{int(bad.sum())} event(s) have mj1 + mj2 > mjj (first at row(s) "
            f"{np.flatnonzero(bad)[:5].tolist()}); such events cannot be written as two 4-vectors"
        )
    p = np.divide(np.sqrt(q), 2.0 * mjj, out=np.zeros_like(mjj), where=mjj > 0)
    n = len(events)
    rng = np.random.default_rng(seed)
    phi = rng.uniform(0.0, 2.0 * np.pi, n)
    y = rng.uniform(-_LHCO_MAX_RAPIDITY, _LHCO_MAX_RAPIDITY, n)
    # swap only strictly ordered pairs: for equal masses the reader could not undo the swap of τ values
    swap = (rng.random(n) < 0.5) & (m1 > m2)
    px, py = p * np.cos(phi), p * np.sin(phi)

    def jet(sign: float, m: np.ndarray, tau21: np.ndarray, tau32: np.ndarray) -> dict[str, np.ndarray]:
        # a jet with pz = 0 and energy E, boosted by rapidity y, gets pz = E sinh(y); its mass is unchanged
        pz = np.sqrt(p * p + m * m) * np.sinh(y)
        return {
            "px": sign * px,
            "py": sign * py,
            "pz": pz,
            "m": m,
            "tau1": np.ones(n),
            "tau2": tau21,
            "tau3": tau32 * tau21,
        }

    heavy = jet(1.0, m1, events["tau21_j1"], events["tau32_j1"])
    light = jet(-1.0, m2, events["tau21_j2"], events["tau32_j2"])
    data: dict[str, np.ndarray] = {}
    for name in heavy:
        data[f"{name}j1"] = np.where(swap, light[name], heavy[name])
        data[f"{name}j2"] = np.where(swap, heavy[name], light[name])
    if events.label is not None:
        data["label"] = events.label.astype(np.float64)
    frame = pd.DataFrame({c: data[c] for c in LHCO_COLUMNS if c in data})
    with _atomic_target(path) as tmp:
        frame.to_hdf(tmp, key="df", mode="w", format="table")


# ----------------------------------------------------------------------------------------------------
# npz
def save_npz(
    events: Events, path: PathLike, *, compress: bool = False, weights: np.ndarray | None = None
) -> None:
    """Write events to a numpy ``.npz`` archive (exact round trip; a format name and version included).

    Parameters
    ----------
    events : Events
        The events to write.
    path : str or path-like
        Output file (written exactly there; numpy's automatic ``.npz`` suffix is not applied).
    compress : bool
        Use zip compression (smaller, slower).
    weights : array (n,), optional
        Per-event weights (finite, ≥ 0), e.g. importance weights; read back with :func:`load_npz_weights`.
    """
    events = _check_events(events)
    arrays = dict(events.to_dict())
    if weights is not None:
        w = np.asarray(weights, np.float64)
        if w.shape != (len(events),) or not np.all(np.isfinite(w) & (w >= 0)):
            raise InputError(
                f"weights must be finite, ≥ 0 and of shape ({len(events)},); got shape {w.shape}"
            )
        arrays["weight"] = w
    arrays["format"] = np.array(_NPZ_FORMAT_NAME)
    arrays["format_version"] = np.array(NPZ_FORMAT_VERSION)
    save = np.savez_compressed if compress else np.savez
    with _atomic_target(path) as tmp, open(tmp, "wb") as fh:
        save(fh, **arrays)


def load_npz(path: PathLike) -> Events:
    """Read events written by :func:`save_npz`.

    Raises
    ------
    DataFileError
        If the file is missing, not an npz archive, corrupt, not written by :func:`save_npz`, or written by
        a newer format version.
    InputError
        If its values fail :class:`~gbi_zfit.data.events.Events` validation.
    """
    path = _existing_file(path)
    try:
        with contextlib.ExitStack() as stack:
            # our own file handle: numpy leaks the one it opens when the zip directory is corrupt
            fh = stack.enter_context(open(path, "rb"))
            archive = np.load(fh, allow_pickle=False)  # never unpickle: a data file must not run code
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataFileError(f"{path} is a single .npy array, not an events archive from save_npz")
            stack.enter_context(archive)
            if "format" not in archive.files or str(archive["format"]) != _NPZ_FORMAT_NAME:
                raise DataFileError(
                    f"{path} is an npz archive but not a gbi_zfit events file (no format tag)"
                )
            version = int(archive["format_version"])
            if version > NPZ_FORMAT_VERSION:
                raise DataFileError(
                    f"{path} has format version {version}, newer than this gbi_zfit reads "
                    f"({NPZ_FORMAT_VERSION}); upgrade gbi_zfit"
                )
            missing = [c for c in COLUMNS if c not in archive.files]
            if missing:
                raise DataFileError(f"{path} lacks column(s) {missing}; the file is incomplete")
            cols = {c: _numeric_1d(archive[c], c, str(path)) for c in COLUMNS}
            label = _as_label(archive["label"], "label", str(path)) if "label" in archive.files else None
    except GBIError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError (pickled/unknown data), EOFError …
        raise DataFileError(f"cannot read {path} as an npz archive ({_short(exc)}); is it corrupt?") from exc
    return _build_events(cols, label, order_jets=False, source=str(path))


def load_npz_weights(path: PathLike) -> np.ndarray | None:
    """The per-event weights stored by :func:`save_npz` (``weights=``), or ``None`` if it has none.

    Raises
    ------
    DataFileError
        If the file cannot be read or its weights are not finite and ≥ 0.
    """
    path = _existing_file(path)
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as archive:
            if "weight" not in archive.files:
                return None
            w = _numeric_1d(archive["weight"], "weight", str(path))
    except GBIError:
        raise
    except Exception as exc:
        raise DataFileError(f"cannot read the weights of {path} ({_short(exc)}); is it corrupt?") from exc
    if not np.all(np.isfinite(w) & (w >= 0)):
        raise DataFileError(f"{path}: weights must be finite and ≥ 0")
    return w


# ----------------------------------------------------------------------------------------------------
# dispatch on the file suffix
_FORMATS = {
    ".root": (read_root, write_root),
    ".h5": (read_lhco_hdf5, write_lhco_hdf5),
    ".hdf5": (read_lhco_hdf5, write_lhco_hdf5),
    ".npz": (load_npz, save_npz),
}


def _format_of(path: PathLike) -> tuple[Any, Any]:
    suffix = Path(os.fspath(path)).suffix.lower()
    try:
        return _FORMATS[suffix]
    except KeyError:
        raise InputError(
            f"unknown data file suffix {suffix!r} of {os.fspath(path)!r}; supported: {sorted(_FORMATS)} "
            "(or call read_root / read_lhco_hdf5 / load_npz directly)"
        ) from None


def read_events(path: PathLike, **kwargs: Any) -> Events:
    """Read events, choosing the reader by suffix: ``.root`` → :func:`read_root`, ``.h5``/``.hdf5`` →
    :func:`read_lhco_hdf5`, ``.npz`` → :func:`load_npz`; ``kwargs`` go to that reader."""
    return _format_of(path)[0](path, **kwargs)


def write_events(events: Events, path: PathLike, **kwargs: Any) -> None:
    """Write events, choosing the writer by suffix (see :func:`read_events`); ``kwargs`` go to it."""
    _format_of(path)[1](events, path, **kwargs)


# ----------------------------------------------------------------------------------------------------
# histograms
def histogram(
    events: Events,
    feature: str,
    *,
    bins: int = 50,
    range: tuple[float, float] | None = None,
    weight: np.ndarray | None = None,
) -> hist.Hist:
    """Histogram of one column or feature of the events as a :class:`hist.Hist` with a labelled axis.

    Parameters
    ----------
    events : Events
        The events.
    feature : str
        A column of :data:`~gbi_zfit.data.events.COLUMNS` or ``"delta_mj"`` (mj1 − mj2).
    bins : int
        Number of regular bins.
    range : (float, float), optional
        Axis edges ``[low, high)``; values outside go to the under/overflow bins (hist's convention: a
        value equal to ``high`` is overflow). By default the data's min and max, with the upper edge
        nudged up so that every event lands in a regular bin.
    weight : array, optional
        One weight per event; the histogram then stores sums of weights and of squared weights.

    Returns
    -------
    hist.Hist
        One ``Regular`` axis named ``feature``, labelled with units (GeV for masses).

    Raises
    ------
    InputError
        On an unknown feature, bad ``bins``/``range``/``weight``, or no events without ``range``.
    """
    events = _check_events(events)
    if feature not in _FEATURE_LABELS:
        raise InputError(f"unknown feature {feature!r}; choose one of {list(_FEATURE_LABELS)}")
    values = events["mj1"] - events["mj2"] if feature == "delta_mj" else events[feature]
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise InputError(f"bins must be a positive integer, got {bins!r}")
    if range is None:
        if len(values) == 0:
            raise InputError("cannot choose a histogram range for zero events; pass range=(low, high)")
        low, high = float(values.min()), float(values.max())
        span = high - low if high > low else max(abs(high), 1.0)
        low, high = (low, high + 1e-9 * span) if high > low else (low - 0.5 * span, high + 0.5 * span)
    else:
        try:
            low, high = (float(v) for v in range)
        except (TypeError, ValueError):
            raise InputError(f"range must be a pair (low, high) of numbers, got {range!r}") from None
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise InputError(f"range must be finite with low < high, got {range!r}")
    storage = hist.storage.Double()
    if weight is not None:
        weight = np.asarray(weight, dtype=np.float64)
        if weight.shape != values.shape or not np.isfinite(weight).all():
            raise InputError(
                f"weight must be a finite array of shape {values.shape} (one per event), got shape "
                f"{weight.shape}"
            )
        storage = hist.storage.Weight()
    axis = hist.axis.Regular(bins, low, high, name=feature, label=_FEATURE_LABELS[feature])
    h = hist.Hist(axis, storage=storage)
    h.fill(values, weight=weight)
    return h
