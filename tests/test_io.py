"""Tests of gbi_zfit.data.io: ROOT, LHCO HDF5 and npz round trips, typed errors, atomic writes, histograms."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import uproot

from gbi_zfit.data import io
from gbi_zfit.data.benchmark import LHCOSim
from gbi_zfit.data.events import COLUMNS, Events
from gbi_zfit.errors import DataFileError, GBIError, InputError


@pytest.fixture(scope="module")
def events() -> Events:
    """≈20k labelled events (background + injected signal), small enough for every format."""
    return LHCOSim().make_dataset(s_over_sqrt_b=1, mx=300, my=150, n_background=20_000, seed=1)


@pytest.fixture(scope="module")
def few(events) -> Events:
    """2,000 of them, for the slower pandas HDF5 writer; contains signal events."""
    order = np.argsort(-events.label, kind="stable")  # signal first, so the label is not all zeros
    return events.select(np.sort(order[:2000]))


def assert_same_events(a: Events, b: Events) -> None:
    assert len(a) == len(b)
    for c in COLUMNS:
        np.testing.assert_array_equal(a[c], b[c], err_msg=c)
    if a.label is None or b.label is None:
        assert a.label is None
        assert b.label is None
    else:
        np.testing.assert_array_equal(a.label, b.label)


def modified(events: Events, **changes) -> Events:
    """A copy of ``events`` with some columns replaced, built without validation (to write bad files)."""
    cols = {**events.columns, **changes}
    return Events(cols, events.label, validate=False)


def write_tree(path, tree: str, data: dict) -> None:
    """Write a user-style flat TTree with arbitrary branch names."""
    with uproot.recreate(path) as file:
        file.mktree(tree, {k: np.asarray(v).dtype for k, v in data.items()})
        file[tree].extend(data)


def listing(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------------------------------
# ROOT
def test_root_round_trip_exact(events, tmp_path):
    path = tmp_path / "events.root"
    io.write_root(events, path)
    back = io.read_root(path)
    assert_same_events(events, back)
    assert back.label.sum() > 0
    assert listing(tmp_path) == ["events.root"]  # no temporary file left behind


def test_root_round_trip_without_label(events, tmp_path):
    unlabelled = Events(events.columns)
    io.write_root(unlabelled, tmp_path / "data.root", tree="nominal")
    back = io.read_root(tmp_path / "data.root", tree="nominal")
    assert back.label is None
    assert_same_events(unlabelled, back)


def test_root_custom_branch_names(events, tmp_path):
    names = {
        "mjj": "Mjj",
        "mj1": "jet1_m",
        "mj2": "jet2_m",
        "tau21_j1": "jet1_tau21",
        "tau21_j2": "jet2_tau21",
        "tau32_j1": "jet1_tau32",
    }  # tau32_j2 keeps its own name
    path = tmp_path / "custom.root"
    io.write_root(events, path, tree="ntuple", branches=names, label_branch="is_signal")
    with uproot.open(path) as file:
        assert set(file["ntuple"].keys()) == {*names.values(), "tau32_j2", "is_signal"}
    back = io.read_root(path, tree="ntuple", branches=names, label_branch="is_signal")
    assert_same_events(events, back)
    # without the map the reader says which branches it misses and which exist
    with pytest.raises(InputError, match=r"lacks branch\(es\) 'mjj'.*available branches:.*'Mjj'"):
        io.read_root(path, tree="ntuple")


def test_root_branch_map_errors(events, tmp_path):
    with pytest.raises(InputError, match="unknown column"):
        io.write_root(events, tmp_path / "x.root", branches={"mass": "m"})
    with pytest.raises(InputError, match="two columns map to one branch"):
        io.write_root(events, tmp_path / "x.root", branches={"mj1": "m", "mj2": "m"})
    assert listing(tmp_path) == []


def test_root_user_file_with_unordered_jets(tmp_path):
    rng = np.random.default_rng(3)
    n = 500
    m_a, m_b = rng.uniform(20, 400, n), rng.uniform(20, 400, n)  # e.g. pT-ordered: no mass order
    t21_a, t21_b, t32_a, t32_b = rng.uniform(0.05, 1, (4, n))
    data = {
        "Mjj": rng.uniform(2700, 6000, n).astype(np.float32),  # user files are often float32
        "jetA_m": m_a,
        "jetB_m": m_b,
        "jetA_t21": t21_a,
        "jetB_t21": t21_b,
        "jetA_t32": t32_a,
        "jetB_t32": t32_b,
    }
    path = tmp_path / "user.root"
    write_tree(path, "tree", data)
    names = {"mjj": "Mjj", "mj1": "jetA_m", "mj2": "jetB_m", "tau21_j1": "jetA_t21"}
    names |= {"tau21_j2": "jetB_t21", "tau32_j1": "jetA_t32", "tau32_j2": "jetB_t32"}

    got = io.read_root(path, tree="tree", branches=names)
    a_heavier = m_a >= m_b
    assert 0 < a_heavier.sum() < n
    np.testing.assert_array_equal(got["mj1"], np.maximum(m_a, m_b))
    np.testing.assert_array_equal(got["mj2"], np.minimum(m_a, m_b))
    np.testing.assert_array_equal(got["tau21_j1"], np.where(a_heavier, t21_a, t21_b))
    np.testing.assert_array_equal(got["tau32_j2"], np.where(a_heavier, t32_b, t32_a))
    np.testing.assert_array_equal(got["mjj"], data["Mjj"].astype(np.float64))
    assert got.label is None  # the file has no label branch

    with pytest.raises(InputError, match="not ordered by mass"):
        io.read_root(path, tree="tree", branches=names, order_jets=False)


def test_root_wrong_tree_lists_trees(events, tmp_path):
    path = tmp_path / "events.root"
    io.write_root(events, path, tree="signal_region")
    with pytest.raises(DataFileError, match=r"no tree 'events'.*\['signal_region'\]"):
        io.read_root(path)


def test_root_missing_branch(events, tmp_path):
    path = tmp_path / "events.root"
    data = {c: events[c] for c in COLUMNS if c != "tau32_j2"}
    write_tree(path, "events", data)
    with pytest.raises(InputError, match=r"lacks branch\(es\) 'tau32_j2'; available branches") as info:
        io.read_root(path)
    assert "'tau32_j1'" in str(info.value)


def test_root_nan_rows(events, tmp_path):
    mj2 = events["mj2"].copy()
    mj2[[3, 10]] = np.nan
    io.write_root(modified(events, mj2=mj2), tmp_path / "nan.root")
    with pytest.raises(InputError, match=r"non-finite.*\[3, 10\]"):
        io.read_root(tmp_path / "nan.root")


def test_root_inf_values(events, tmp_path):
    mjj = events["mjj"].copy()
    mjj[0] = np.inf
    io.write_root(modified(events, mjj=mjj), tmp_path / "inf.root")
    with pytest.raises(InputError, match="non-finite"):
        io.read_root(tmp_path / "inf.root")


def test_root_tev_units(events, tmp_path):
    in_tev = {c: events[c] / 1000.0 for c in ("mjj", "mj1", "mj2")}
    io.write_root(modified(events, **in_tev), tmp_path / "tev.root")
    with pytest.raises(InputError, match="looks like TeV"):
        io.read_root(tmp_path / "tev.root")


def test_root_empty_tree(events, tmp_path):
    io.write_root(events.select(np.zeros(len(events), bool)), tmp_path / "empty.root")
    with pytest.raises(InputError, match="no events"):
        io.read_root(tmp_path / "empty.root")


def test_root_missing_file(tmp_path):
    with pytest.raises(DataFileError, match="does not exist"):
        io.read_root(tmp_path / "nowhere.root")
    with pytest.raises(DataFileError, match="not a regular file"):
        io.read_root(tmp_path)


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_root_corrupt_file(events, tmp_path, kind):
    path = tmp_path / "bad.root"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        io.write_root(events, path)
        path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataFileError, match=r"cannot read .* as a ROOT file"):
        io.read_root(path)


def test_root_jagged_branch_and_bad_label(events, tmp_path):
    import awkward as ak

    path = tmp_path / "jagged.root"
    with uproot.recreate(path) as file:
        file.mktree("events", {**{c: np.float64 for c in COLUMNS if c != "mjj"}, "mjj": "var * float64"})
        n = 3
        file["events"].extend(
            {**{c: events[c][:n] for c in COLUMNS if c != "mjj"}, "mjj": ak.Array([[1.0]] * n)}
        )
    with pytest.raises(InputError, match="not a flat numeric column"):
        io.read_root(path)

    path = tmp_path / "label.root"
    write_tree(path, "events", {**{c: events[c][:5] for c in COLUMNS}, "label": np.array([0, 1, 2, 0, 1])})
    with pytest.raises(InputError, match=r"must hold 0 \(background\) or 1 \(signal\); found \[2\]"):
        io.read_root(path)
    assert io.read_root(path, label_branch=None).label is None


# ------------------------------------------------------------------------------------------------------
# LHCO R&D HDF5
def test_lhco_round_trip(few, tmp_path):
    path = tmp_path / "lhco.h5"
    io.write_lhco_hdf5(few, path, seed=5)
    frame = pd.read_hdf(path, key="df")
    assert tuple(frame.columns) == io.LHCO_COLUMNS
    assert (frame["pzj1"] != 0).all()  # the writer boosts the dijet system along z
    assert (frame["mj1"] < frame["mj2"]).any()  # the writer stores the jets in random order
    assert (frame["mj1"] > frame["mj2"]).any()
    back = io.read_lhco_hdf5(path)
    np.testing.assert_allclose(back["mjj"], few["mjj"], rtol=1e-6)
    for c in COLUMNS[1:]:
        np.testing.assert_allclose(back[c], few[c], rtol=1e-9, atol=0, err_msg=c)
    np.testing.assert_array_equal(back.label, few.label)
    assert listing(tmp_path) == ["lhco.h5"]


def test_lhco_slicing_and_keys(few, tmp_path):
    path = tmp_path / "lhco.hdf5"
    io.write_lhco_hdf5(Events(few.columns), path)  # no label → no label column
    part = io.read_lhco_hdf5(path, key="df", start=100, n_events=50)
    assert part.label is None
    np.testing.assert_allclose(part["mj1"], few["mj1"][100:150], rtol=1e-12)
    with pytest.raises(DataFileError, match=r"no key 'events'.*\['/df'\]"):
        io.read_lhco_hdf5(path, key="events")
    with pytest.raises(InputError, match="no events"):
        io.read_lhco_hdf5(path, start=len(few))
    with pytest.raises(InputError, match="start must be"):
        io.read_lhco_hdf5(path, start=-1)
    pd.DataFrame({"x": [1.0]}).to_hdf(path, key="other", mode="a")
    with pytest.raises(DataFileError, match="holds 2 pandas keys"):
        io.read_lhco_hdf5(path)
    assert len(io.read_lhco_hdf5(path, key="/df")) == len(few)


def _hand_built_frame() -> pd.DataFrame:
    """Two events with known 4-vectors, one value per event in each column.

    Event 0: jets back to back with pz = 0 (so mjj = E1 + E2), already mass-ordered.
    Event 1: general kinematics, the lighter jet stored first; τ1 = 0 for the first jet and τ2 = 0 for
    the second one, to exercise the division guards.
    """
    columns = {
        "pxj1": [1000.0, 300.0], "pyj1": [0.0, 1200.0], "pzj1": [0.0, 500.0], "mj1": [100.0, 80.0],
        "tau1j1": [0.5, 0.0], "tau2j1": [0.25, 0.3], "tau3j1": [0.1, 0.2],
        "pxj2": [-1000.0, -100.0], "pyj2": [0.0, -1250.0], "pzj2": [0.0, -2000.0], "mj2": [50.0, 300.0],
        "tau1j2": [0.8, 0.6], "tau2j2": [0.4, 0.0], "tau3j2": [0.3, 0.0],
        "label": [1.0, 0.0],
    }  # fmt: skip
    return pd.DataFrame(columns)[list(io.LHCO_COLUMNS)]


def _mjj_by_hand(frame: pd.DataFrame) -> np.ndarray:
    out = []
    for _, r in frame.iterrows():
        p1 = np.array([r.pxj1, r.pyj1, r.pzj1])
        p2 = np.array([r.pxj2, r.pyj2, r.pzj2])
        e = np.sqrt(p1 @ p1 + r.mj1**2) + np.sqrt(p2 @ p2 + r.mj2**2)
        out.append(np.sqrt(e**2 - (p1 + p2) @ (p1 + p2)))
    return np.array(out)


@pytest.mark.parametrize("fmt", ["table", "fixed"])
def test_lhco_mjj_and_tau_guards_on_known_vectors(tmp_path, fmt):
    frame = _hand_built_frame()
    path = tmp_path / "tiny.h5"
    frame.to_hdf(path, key="df", format=fmt)
    ev = io.read_lhco_hdf5(path)
    expected = _mjj_by_hand(frame)
    np.testing.assert_allclose(expected[0], np.sqrt(1000**2 + 100**2) + np.sqrt(1000**2 + 50**2), rtol=1e-14)
    np.testing.assert_allclose(ev["mjj"], expected, rtol=1e-12)
    # event 0: jets already mass-ordered
    assert (ev["mj1"][0], ev["mj2"][0]) == (100.0, 50.0)
    np.testing.assert_allclose([ev["tau21_j1"][0], ev["tau32_j1"][0]], [0.5, 0.4], rtol=1e-15)
    np.testing.assert_allclose([ev["tau21_j2"][0], ev["tau32_j2"][0]], [0.5, 0.75], rtol=1e-15)
    # event 1: reordered (the 300 GeV jet becomes j1) and τ ratios follow their jets; 0 where τ_N = 0
    assert (ev["mj1"][1], ev["mj2"][1]) == (300.0, 80.0)
    assert (ev["tau21_j1"][1], ev["tau32_j1"][1]) == (0.0, 0.0)  # τ2/τ1 = 0/0.6, τ3/τ2 = 0/0 → 0
    assert ev["tau21_j2"][1] == 0.0  # τ2/τ1 with τ1 = 0 → 0
    np.testing.assert_allclose(ev["tau32_j2"][1], 0.2 / 0.3, rtol=1e-15)
    np.testing.assert_array_equal(ev.label, [1, 0])


def test_lhco_missing_columns_and_bad_files(tmp_path):
    frame = _hand_built_frame().drop(columns=["pzj2", "tau3j1"])
    path = tmp_path / "partial.h5"
    frame.to_hdf(path, key="df", format="table")
    with pytest.raises(InputError, match=r"lacks LHCO column\(s\) \['tau3j1', 'pzj2'\]"):
        io.read_lhco_hdf5(path)
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(DataFileError, match=r"cannot read .* as a pandas HDF5 table"):
        io.read_lhco_hdf5(tmp_path / "junk.h5")
    with pytest.raises(DataFileError, match="does not exist"):
        io.read_lhco_hdf5(tmp_path / "absent.h5")


def test_lhco_nan_values(tmp_path):
    frame = _hand_built_frame()
    frame.loc[1, "pyj2"] = np.nan
    frame.to_hdf(tmp_path / "nan.h5", key="df", format="table")
    with pytest.raises(InputError, match=r"'mjj' has 1 non-finite.*\[1\]"):
        io.read_lhco_hdf5(tmp_path / "nan.h5")


def test_lhco_writer_rejects_impossible_kinematics(few, tmp_path):
    mjj = few["mjj"].copy()
    mjj[7] = few["mj1"][7] + few["mj2"][7] - 1.0
    with pytest.raises(InputError, match=r"mj1 \+ mj2 > mjj.*\[7\]"):
        io.write_lhco_hdf5(modified(few, mjj=mjj), tmp_path / "x.h5")
    assert listing(tmp_path) == []


def test_lhco_without_pandas_raises_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` raise ImportError
    with pytest.raises(ImportError, match=r"gbi_zfit\[lhco\]"):
        io.read_lhco_hdf5(tmp_path / "any.h5")


# ------------------------------------------------------------------------------------------------------
# npz
def test_npz_round_trip(events, tmp_path):
    io.save_npz(events, tmp_path / "events.npz")
    assert_same_events(events, io.load_npz(tmp_path / "events.npz"))
    unlabelled = Events(events.columns)
    io.save_npz(unlabelled, tmp_path / "data.bin", compress=True)  # exact name, no ".npz" appended
    assert listing(tmp_path) == ["data.bin", "events.npz"]
    assert_same_events(unlabelled, io.load_npz(tmp_path / "data.bin"))


def test_npz_bad_files(events, tmp_path):
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(DataFileError, match=r"cannot read .* as an npz archive"):
        io.load_npz(tmp_path / "random.npz")
    np.savez(tmp_path / "foreign.npz", x=np.arange(3))
    with pytest.raises(DataFileError, match="not a gbi_zfit events file"):
        io.load_npz(tmp_path / "foreign.npz")
    np.save(tmp_path / "array.npy", np.arange(3))
    with pytest.raises(DataFileError, match=r"single \.npy array"):
        io.load_npz(tmp_path / "array.npy")
    arrays = {**events.to_dict(), "format": np.array("gbi_zfit.events"), "format_version": np.array(99)}
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(DataFileError, match="newer than this gbi_zfit reads"):
        io.load_npz(tmp_path / "future.npz")
    del arrays["mj2"]
    arrays["format_version"] = np.array(1)
    np.savez(tmp_path / "incomplete.npz", **arrays)
    with pytest.raises(DataFileError, match=r"lacks column\(s\) \['mj2'\]"):
        io.load_npz(tmp_path / "incomplete.npz")


# ------------------------------------------------------------------------------------------------------
# dispatch
@pytest.mark.parametrize("name", ["a.root", "b.npz", "c.h5", "d.HDF5", "e.ROOT"])
def test_read_write_events_dispatch(few, tmp_path, name):
    io.write_events(few, tmp_path / name)
    back = io.read_events(tmp_path / name)
    for c in COLUMNS:
        np.testing.assert_allclose(back[c], few[c], rtol=1e-9)
    np.testing.assert_array_equal(back.label, few.label)


def test_dispatch_forwards_keywords(few, tmp_path):
    io.write_events(few, tmp_path / "t.root", tree="nominal")
    assert len(io.read_events(tmp_path / "t.root", tree="nominal")) == len(few)


def test_unknown_suffix(few, tmp_path):
    with pytest.raises(InputError, match=r"unknown data file suffix '\.csv'"):
        io.write_events(few, tmp_path / "x.csv")
    with pytest.raises(InputError, match="unknown data file suffix ''"):
        io.read_events(tmp_path / "noext")


# ------------------------------------------------------------------------------------------------------
# atomic writes
def _fail_root(monkeypatch):
    def extend(self, data, **kwargs):  # the file and tree header already exist when this fails
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(uproot.writing.writable.WritableTree, "extend", extend)


def _fail_hdf5(monkeypatch):
    def to_hdf(self, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\x89HDF\r\n\x1a\n partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pd.DataFrame, "to_hdf", to_hdf)


def _fail_npz(monkeypatch):
    def savez(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(np, "savez", savez)


@pytest.mark.parametrize(
    ("name", "break_writer"), [("t.root", _fail_root), ("t.h5", _fail_hdf5), ("t.npz", _fail_npz)]
)
@pytest.mark.parametrize("existing", [True, False])
def test_atomic_write_leaves_nothing_on_failure(few, tmp_path, monkeypatch, name, break_writer, existing):
    target = tmp_path / name
    if existing:
        target.write_bytes(b"previous content")
    break_writer(monkeypatch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        io.write_events(few, target)
    assert listing(tmp_path) == ([name] if existing else [])
    if existing:
        assert target.read_bytes() == b"previous content"


def test_atomic_write_cleans_up_on_interrupt_and_wraps_os_errors(few, tmp_path, monkeypatch):
    target = tmp_path / "t.npz"
    io.save_npz(few, target)
    before = target.read_bytes()

    def interrupted(file, **arrays):
        file.write(b"PK partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_npz(few, target)

    def full_disk(file, **arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(DataFileError, match="No space left on device"):
        io.save_npz(few, target)
    assert listing(tmp_path) == ["t.npz"]
    assert target.read_bytes() == before


def test_atomic_write_replaces_existing_file(few, tmp_path):
    target = tmp_path / "t.root"
    target.write_bytes(b"old")
    io.write_root(few, target)
    assert_same_events(few, io.read_root(target))
    assert listing(tmp_path) == ["t.root"]


def test_write_into_missing_directory(few, tmp_path):
    with pytest.raises(DataFileError, match="does not exist; create it first"):
        io.save_npz(few, tmp_path / "no" / "such" / "dir.npz")
    with pytest.raises(InputError, match="expected a gbi_zfit Events"):
        io.save_npz({"mjj": [1.0]}, tmp_path / "x.npz")


# ------------------------------------------------------------------------------------------------------
# histograms
@pytest.mark.parametrize("feature", [*COLUMNS, "delta_mj"])
def test_histogram_counts_and_labels(events, feature):
    h = io.histogram(events, feature, bins=40)
    assert h.values().sum() == len(events)  # default range holds every event, the maximum included
    assert h.axes[0].name == feature
    label = h.axes[0].label
    assert label
    assert ("[GeV]" in label) == (feature.startswith("m") or feature == "delta_mj")


def test_histogram_explicit_range_and_weights(events):
    lo, hi = 3300.0, 3700.0
    h = io.histogram(events, "mjj", bins=8, range=(lo, hi))
    in_range = (events.mjj >= lo) & (events.mjj < hi)
    assert h.values().sum() == in_range.sum()
    assert h.values(flow=True).sum() == len(events)
    np.testing.assert_array_equal(h.axes[0].edges, np.linspace(lo, hi, 9))

    w = np.full(len(events), 0.5)
    hw = io.histogram(events, "delta_mj", bins=10, range=(0.0, 500.0), weight=w)
    delta = events["mj1"] - events["mj2"]
    np.testing.assert_allclose(hw.values().sum(), 0.5 * ((delta >= 0) & (delta < 500)).sum())
    np.testing.assert_allclose(hw.variances().sum(), 0.25 * ((delta >= 0) & (delta < 500)).sum())


def test_histogram_errors(events):
    with pytest.raises(InputError, match="unknown feature 'pt'"):
        io.histogram(events, "pt")
    with pytest.raises(InputError, match="bins must be"):
        io.histogram(events, "mjj", bins=0)
    with pytest.raises(InputError, match="low < high"):
        io.histogram(events, "mjj", range=(5.0, 1.0))
    with pytest.raises(InputError, match="weight must be"):
        io.histogram(events, "mjj", weight=np.ones(3))
    with pytest.raises(InputError, match="zero events"):
        io.histogram(events.select(np.zeros(len(events), bool)), "mjj")
    one = events.select(np.array([0]))
    assert io.histogram(one, "mj1", bins=3).values().sum() == 1  # degenerate range is widened


def test_all_errors_are_gbi_errors():
    assert issubclass(DataFileError, GBIError)
    assert issubclass(InputError, GBIError)
    assert set(io.__all__) <= set(dir(io))


def test_npz_weights_round_trip(events, tmp_path):
    path = tmp_path / "w.npz"
    w = np.linspace(0.0, 2.0, len(events))
    io.save_npz(events, path, weights=w)
    np.testing.assert_array_equal(io.load_npz_weights(path), w)
    assert len(io.load_npz(path)) == len(events)  # still an ordinary events file
    io.save_npz(events, path)
    assert io.load_npz_weights(path) is None
    with pytest.raises(InputError, match="weights"):
        io.save_npz(events, path, weights=w[:-1])
    with pytest.raises(InputError, match="weights"):
        io.save_npz(events, path, weights=-w)
    with open(path, "wb") as fh:  # a weights column with NaN written by other code
        np.savez(fh, weight=np.array([np.nan, 1.0]))
    with pytest.raises(DataFileError, match="finite"):
        io.load_npz_weights(path)
