"""Event container and feature sets.

An :class:`Events` object holds one column per observable, all of the same length, in GeV for masses.
The column names are fixed (:data:`COLUMNS`); readers for ROOT / LHCO files map their own names onto
these. Jets are ordered by mass: ``j1`` is the heavier jet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

__all__ = ["COLUMNS", "PAWS_FEATURES", "RANODE_FEATURES", "Events", "FeatureSet", "get_feature_set"]

#: The columns every :class:`Events` has, in this order.
COLUMNS: tuple[str, ...] = ("mjj", "mj1", "mj2", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2")

#: Masses above this many GeV for the dijet system are expected; values below suggest TeV units.
_MIN_PLAUSIBLE_MJJ_GEV = 100.0
#: Same for the heavier jet's mass (its median is ~100 GeV for QCD dijets in the LHCO SR).
_MIN_PLAUSIBLE_MJ_GEV = 1.0


def _as_label(label) -> np.ndarray:
    lab = np.asarray(label)
    if lab.dtype == bool:
        lab = lab.astype(np.int8)  # True = signal
    if lab.size and (not np.issubdtype(lab.dtype, np.number) or not np.isin(lab, (0, 1)).all()):
        bad = lab[~np.isin(lab, (0, 1))][:5] if np.issubdtype(lab.dtype, np.number) else lab[:5]
        raise InputError(f"labels must be 0 (background) or 1 (signal); found e.g. {bad.tolist()}")
    return lab.astype(np.int8)


def _as_column(values, name: str) -> np.ndarray:
    """A float64 copy of one column; non-numeric or complex values are an :class:`InputError`."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":  # also object arrays: None / mixed types become NaN-checked floats
        if arr.dtype.kind == "O":
            try:
                return np.array(arr, dtype=np.float64)
            except (TypeError, ValueError):
                pass
        raise InputError(
            f"column {name!r} must hold real numbers (GeV for masses), got dtype {arr.dtype}; "
            "convert it (e.g. strings from a CSV) before building Events"
        )
    return np.array(arr, dtype=np.float64)


@dataclass(frozen=True)
class FeatureSet:
    """A named map from the event columns to the features a model sees.

    Parameters
    ----------
    name : str
        Identifier, e.g. ``"paws"``.
    names : tuple of str
        Names of the features, in the order of the columns of :meth:`extract`.
    build : callable
        ``build(columns) -> ndarray (n, d)`` from a mapping of :data:`COLUMNS` to arrays.
    """

    name: str
    names: tuple[str, ...]
    build: Callable[[Mapping[str, np.ndarray]], np.ndarray] = field(repr=False, compare=False)

    @property
    def dim(self) -> int:
        return len(self.names)

    def extract(self, events: Events) -> np.ndarray:
        """Feature matrix of shape ``(len(events), dim)`` in float64."""
        return np.ascontiguousarray(self.build(events.columns), dtype=np.float64)


def _paws(c: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.stack([c["mj1"], c["mj2"], c["tau21_j1"], c["tau21_j2"], c["tau32_j1"], c["tau32_j2"]], axis=1)


def _ranode(c: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.stack([c["mj2"], c["mj1"] - c["mj2"], c["tau21_j1"], c["tau21_j2"]], axis=1)


#: PAWS feature set (6-d): both jet masses and both substructure ratios per jet.
PAWS_FEATURES = FeatureSet("paws", ("mj1", "mj2", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"), _paws)
#: R-ANODE feature set (4-d): lighter mass, mass difference and τ21 of both jets.
RANODE_FEATURES = FeatureSet("ranode", ("mj2", "delta_mj", "tau21_j1", "tau21_j2"), _ranode)

_FEATURE_SETS = {fs.name: fs for fs in (PAWS_FEATURES, RANODE_FEATURES)}


def get_feature_set(name: str | FeatureSet) -> FeatureSet:
    """Look up a feature set by name (``"paws"`` or ``"ranode"``)."""
    if isinstance(name, FeatureSet):
        return name
    try:
        return _FEATURE_SETS[name]
    except KeyError:
        raise InputError(f"unknown feature set {name!r}; choose one of {sorted(_FEATURE_SETS)}") from None


class Events:
    """A table of events with the fixed columns :data:`COLUMNS` and an optional truth label.

    Parameters
    ----------
    columns : mapping of str to array
        One 1-d array per name in :data:`COLUMNS` (extra names are rejected).
    label : array of int, optional
        1 for signal, 0 for background; ``None`` for real data.
    validate : bool
        Check names, shapes, finiteness, mass ordering and units (default ``True``).

    Raises
    ------
    InputError
        On missing or extra columns, unequal lengths, NaN/inf, unordered jets, TeV-looking masses or
        τ ratios outside [0, 1].
    """

    def __init__(
        self,
        columns: Mapping[str, np.ndarray],
        label: np.ndarray | None = None,
        *,
        validate: bool = True,
    ):
        if not isinstance(columns, Mapping) and not hasattr(columns, "keys"):  # pandas.DataFrame is fine
            raise InputError(
                f"columns must be a mapping {{name: 1-d array}} with the names {list(COLUMNS)}; got "
                f"{type(columns).__name__}"
            )
        # copies: an Events must not change when the caller's arrays do
        self.columns = {k: _as_column(columns[k], k) for k in COLUMNS if k in columns}
        self.label = None if label is None else _as_label(label)
        if validate:
            self._validate(columns)

    def _validate(self, given: Mapping[str, np.ndarray]) -> None:
        missing = [k for k in COLUMNS if k not in given]
        extra = [k for k in given if k not in COLUMNS]
        if missing or extra:
            raise InputError(
                f"event columns do not match: missing {missing}, unexpected {extra}; "
                f"expected exactly {list(COLUMNS)} (map your branch names with the reader's `branches=`)"
            )
        lengths = {k: v.shape for k, v in self.columns.items()}
        n = self.columns["mjj"].shape[0] if self.columns["mjj"].ndim == 1 else -1
        if any(v.ndim != 1 or len(v) != n for v in self.columns.values()):
            raise InputError(f"all columns must be 1-d arrays of one length; got shapes {lengths}")
        if self.label is not None and self.label.shape != (n,):
            raise InputError(f"label has shape {self.label.shape}, expected ({n},)")
        for k, v in self.columns.items():
            bad = ~np.isfinite(v)
            if bad.any():
                rows = np.flatnonzero(bad)
                raise InputError(
                    f"column {k!r} has {bad.sum()} non-finite value(s) (NaN/inf), first at row(s) "
                    f"{rows[:5].tolist()}; drop or repair those events before use"
                )
        if n and np.median(self.columns["mjj"]) < _MIN_PLAUSIBLE_MJJ_GEV:
            raise InputError(
                f"median mjj is {np.median(self.columns['mjj']):.4g}, which looks like TeV; "
                "gbi_zfit expects masses in GeV (multiply by 1000)"
            )
        if n and np.median(self.columns["mj1"]) < _MIN_PLAUSIBLE_MJ_GEV:
            raise InputError(
                f"median mj1 is {np.median(self.columns['mj1']):.4g}, which looks like TeV; "
                "gbi_zfit expects jet masses in GeV (multiply by 1000)"
            )
        for k in ("mjj", "mj1", "mj2"):
            if n and (self.columns[k] < 0).any():
                raise InputError(f"column {k!r} has negative masses; masses must be ≥ 0 GeV")
        for k in ("tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"):
            # N-subjettiness ratios lie in [0, 1]; anything else is a sentinel (e.g. -1) or a wrong branch
            bad = (self.columns[k] < 0) | (self.columns[k] > 1)
            if n and bad.any():
                rows = np.flatnonzero(bad)
                raise InputError(
                    f"column {k!r} has {bad.sum()} value(s) outside [0, 1] (e.g. {self.columns[k][rows[0]]:g} "
                    f"at row {rows[0]}); N-subjettiness ratios lie in [0, 1]: drop events with sentinel "
                    "values, or check the branch mapping"
                )
        if n and (self.columns["mj1"] < self.columns["mj2"]).any():
            raise InputError(
                "jets are not ordered by mass (mj1 < mj2 in some events); use Events.from_unordered "
                "or order them so that j1 is the heavier jet"
            )

    @classmethod
    def from_unordered(
        cls,
        mjj: np.ndarray,
        m_a: np.ndarray,
        m_b: np.ndarray,
        tau21_a: np.ndarray,
        tau21_b: np.ndarray,
        tau32_a: np.ndarray,
        tau32_b: np.ndarray,
        label: np.ndarray | None = None,
    ) -> Events:
        """Build events from two jets in any order, ordering them by mass (j1 heavier)."""
        given = {"mjj": mjj, "m_a": m_a, "m_b": m_b, "tau21_a": tau21_a, "tau21_b": tau21_b}
        given |= {"tau32_a": tau32_a, "tau32_b": tau32_b}
        given = {k: _as_column(v, k) for k, v in given.items()}
        shapes = {k: v.shape for k, v in given.items()}
        if len(set(shapes.values())) != 1 or given["mjj"].ndim != 1:
            raise InputError(f"all columns must be 1-d arrays of one length; got shapes {shapes}")
        mjj, m_a, m_b = given["mjj"], given["m_a"], given["m_b"]
        tau21_a, tau21_b = given["tau21_a"], given["tau21_b"]
        tau32_a, tau32_b = given["tau32_a"], given["tau32_b"]
        swap = m_b > m_a

        def pick(a, b, heavy):
            return np.where(swap, b, a) if heavy else np.where(swap, a, b)

        cols = {
            "mjj": mjj,
            "mj1": pick(m_a, m_b, True),
            "mj2": pick(m_a, m_b, False),
            "tau21_j1": pick(tau21_a, tau21_b, True),
            "tau21_j2": pick(tau21_a, tau21_b, False),
            "tau32_j1": pick(tau32_a, tau32_b, True),
            "tau32_j2": pick(tau32_a, tau32_b, False),
        }
        return cls(cols, label)

    # -- container protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.columns["mjj"])

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.columns[name]
        except KeyError:
            raise InputError(f"no column {name!r}; columns are {list(COLUMNS)}") from None

    def __repr__(self) -> str:
        n_sig = "?" if self.label is None else int(self.label.sum())
        return f"Events(n={len(self)}, signal={n_sig})"

    @property
    def mjj(self) -> np.ndarray:
        return self.columns["mjj"]

    def select(self, mask: np.ndarray) -> Events:
        """Events where ``mask`` is true (boolean mask, integer indices or a slice)."""
        if isinstance(mask, slice):
            cols = {k: v[mask] for k, v in self.columns.items()}
            return Events(cols, None if self.label is None else self.label[mask], validate=False)
        mask = np.asarray(mask)
        if mask.dtype == bool and mask.shape != (len(self),):
            raise InputError(f"boolean mask has shape {mask.shape}, expected ({len(self)},) (one per event)")
        if mask.dtype != bool and (mask.dtype.kind not in "iu" or mask.ndim > 1):
            raise InputError(f"select needs a boolean mask or 1-d integer indices, got dtype {mask.dtype}")
        if mask.dtype != bool and mask.size and not (-len(self) <= mask.min() and mask.max() < len(self)):
            raise InputError(f"indices out of range for {len(self)} events")
        cols = {k: v[mask] for k, v in self.columns.items()}
        return Events(cols, None if self.label is None else self.label[mask], validate=False)

    @staticmethod
    def concatenate(parts: list[Events]) -> Events:
        """Join event tables; labels are kept only if every part has them."""
        if not parts:
            raise InputError("cannot concatenate an empty list of Events")
        bad = [type(p).__name__ for p in parts if not isinstance(p, Events)]
        if bad:
            raise InputError(f"can only concatenate Events, got {bad}")
        cols = {k: np.concatenate([p.columns[k] for p in parts]) for k in COLUMNS}
        labels = None
        if all(p.label is not None for p in parts):
            labels = np.concatenate([p.label for p in parts])
        return Events(cols, labels, validate=False)

    def shuffle(self, rng: np.random.Generator) -> Events:
        """The same events in a random order."""
        return self.select(rng.permutation(len(self)))

    def features(self, feature_set: str | FeatureSet = "paws") -> np.ndarray:
        """Feature matrix ``(n, d)`` of the chosen feature set."""
        return get_feature_set(feature_set).extract(self)

    def to_dict(self) -> dict[str, np.ndarray]:
        """Columns (and ``label`` if known) as a plain dict of arrays."""
        out = dict(self.columns)
        if self.label is not None:
            out["label"] = self.label
        return out
