"""Bad input at every public entry point.

Each case feeds one kind of bad input (NaN/inf, missing/extra/misordered columns, wrong dtypes and shapes,
empty or corrupt files, an empty signal region, θ outside the trained range, bad μ bounds, tampered model
bundles) and checks that a typed :mod:`gbi_zfit.errors` exception is raised whose message names the
problem; the CLI must exit with status 2 and one line on stderr, without a traceback. Writers must never
leave a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat

import numpy as np
import pandas as pd
import pytest
import uproot

from gbi_zfit import _util, parallel
from gbi_zfit.cli import main
from gbi_zfit.data import io
from gbi_zfit.data.convert import feature_space, to_zfit_data
from gbi_zfit.data.events import COLUMNS, Events, get_feature_set
from gbi_zfit.data.mjj import fit_sidebands
from gbi_zfit.data.regions import SignalRegion
from gbi_zfit.errors import (
    ConfigError,
    DataFileError,
    GBIError,
    InputError,
    ModelFileError,
    ParameterRangeError,
    RegionError,
)
from gbi_zfit.inference import coverage, fisher, profile, toys
from gbi_zfit.inference.fit import FitResult, SignalFitter
from gbi_zfit.models.oracle import OracleRatio
from gbi_zfit.models.persistence import SIDECAR_NAME, load_bundle, save_bundle
from gbi_zfit.models.preprocessing import FeatureTransform

PAWS = ("mj1", "mj2", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2")
RANODE = ("mj2", "delta_mj", "tau21_j1", "tau21_j2")


# ------------------------------------------------------------------------------------------------------
# shared, module-scoped inputs (small: this module must stay fast)
@pytest.fixture(scope="module")
def events(sim) -> Events:
    return sim.make_dataset(s_over_sqrt_b=3, mx=300, my=150, n_background=4000, seed=7)


@pytest.fixture(scope="module")
def sr_x(sim, events) -> np.ndarray:
    return sim.signal_region.signal_region(events).features()


@pytest.fixture(scope="module")
def oracle(sim) -> OracleRatio:
    return OracleRatio(sim)


@pytest.fixture(scope="module")
def fitter(classifier, sr_x) -> SignalFitter:
    """A fitter on a small (untrained) classifier ensemble: cheap to compile, Λ up to ~e³.

    μ may be negative (down to −0.9) as long as every event keeps a positive density.
    """
    from gbi_zfit.models.classifier import ClassifierEnsemble

    clf, _ = classifier
    ratio = ClassifierEnsemble(
        clf.member_weights, clf.transform, theta_bounds=clf.theta_bounds, log_kappa=3.0
    )
    return SignalFitter(ratio, sr_x, mu_bounds=(-0.9, 1.0))


@pytest.fixture(scope="module")
def best() -> FitResult:
    """A fit result as profile/fisher entry points receive it (no fit needed to test their input checks)."""
    return FitResult(values={"mu": 0.05, "mx": 300.0, "my": 150.0}, nll=-10.0, valid=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory, events) -> dict:
    """One good file per format, written once."""
    d = tmp_path_factory.mktemp("files")
    out = {}
    for suffix in (".root", ".h5", ".npz"):
        path = d / f"good{suffix}"
        io.write_events(events, path)
        out[suffix] = path
    return out


def raises(exc_type, *words):
    """``pytest.raises`` that also checks the message names the problem (all ``words``, case-insensitive)."""

    class _Check:
        def __enter__(self):
            self._cm = pytest.raises(exc_type)
            self.info = self._cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            suppressed = self._cm.__exit__(*exc)
            if not suppressed:
                return False
            err = self.info.value
            assert isinstance(err, GBIError), f"{type(err).__name__} is not a gbi_zfit error"
            msg = str(err).lower()
            missing = [w for w in words if w.lower() not in msg]
            assert not missing, f"message {str(err)!r} does not mention {missing}"
            return suppressed

    return _Check()


def columns(events: Events, **changes) -> dict:
    return {**events.columns, **changes}


# ------------------------------------------------------------------------------------------------------
# Events and feature sets
@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: c.update(mjj=np.where(np.arange(len(c["mjj"])) == 3, np.nan, c["mjj"])), ["mjj", "nan"]),
        (lambda c: c.update(mj1=np.where(np.arange(len(c["mj1"])) == 5, np.inf, c["mj1"])), ["mj1", "inf"]),
        (lambda c: c.pop("tau32_j2"), ["missing", "tau32_j2"]),
        (lambda c: c.update(extra=np.ones(len(c["mjj"]))), ["unexpected", "extra"]),
        (lambda c: c.update(mjj=np.array(["a"] * len(c["mjj"]))), ["mjj", "dtype"]),
        (lambda c: c.update(mjj=c["mjj"] + 1j), ["mjj", "dtype"]),
        (lambda c: c.update(mjj=c["mjj"][:, None]), ["1-d", "shape"]),
        (lambda c: c.update(mj2=c["mj2"][:-1]), ["one length"]),
        (lambda c: c.update(mjj=c["mjj"] / 1000), ["tev"]),
        (lambda c: c.update(mj1=c["mj2"], mj2=c["mj1"]), ["ordered"]),
        (lambda c: c.update(mj2=-c["mj2"]), ["negative"]),
        (
            lambda c: c.update(tau21_j2=np.where(np.arange(len(c["mjj"])) == 3, -1.0, c["tau21_j2"])),
            ["tau21_j2", "1 value(s) outside [0, 1]", "row 3"],
        ),
        (lambda c: c.update(tau32_j1=c["tau32_j1"] * 10), ["tau32_j1", "outside [0, 1]", "branch"]),
    ],
    ids=[
        "nan",
        "inf",
        "missing",
        "extra",
        "strings",
        "complex",
        "2d",
        "length",
        "tev",
        "swapped",
        "negative",
        "tau-sentinel",
        "tau-scaled",
    ],
)
def test_events_reject_bad_columns(events, change, words):
    cols = columns(events)
    change(cols)
    with raises(InputError, *words):
        Events(cols)


def test_events_other_bad_input(events):
    with raises(InputError, "mapping"):
        Events(np.ones((10, 7)))
    with raises(InputError, "label"):
        Events(events.columns, np.full(len(events), 2))
    with raises(InputError, "label", "shape"):
        Events(events.columns, np.zeros(3))
    with raises(InputError, "mask"):
        events.select(np.ones(3, bool))
    with raises(InputError, "out of range"):
        events.select(np.array([0, len(events)]))
    with raises(InputError, "Events"):
        Events.concatenate([events, {"mjj": 1}])
    with raises(InputError, "shape"):
        Events.from_unordered(*(events[c] for c in COLUMNS[:1]), *(events[c][:5] for c in COLUMNS[1:]))
    with raises(InputError, "column", "foo"):
        events["foo"]
    with raises(InputError, "feature set", "xx"):
        events.features("xx")
    # boolean labels are a natural spelling of 0/1: accepted
    assert Events(events.columns, events.label.astype(bool)).label.dtype == np.int8


def test_feature_arrays_for_zfit(events):
    x = events.features("paws")
    with raises(InputError, "shape"):
        to_zfit_data(x[:, ::-1][:, :5])
    with raises(InputError, "nan"):
        to_zfit_data(np.vstack([x, np.full((1, 6), np.nan)]))
    with raises(InputError, "numeric"):
        to_zfit_data(np.array([["a"] * 6]))
    with raises(InputError, "empty"):
        to_zfit_data(x[:0])
    with raises(InputError, "tau32_j2", "outside"):
        to_zfit_data(x + np.array([0, 0, 0, 0, 0, 2]))
    with raises(InputError, "feature set"):
        get_feature_set("nope")


# ------------------------------------------------------------------------------------------------------
# regions and the sideband fit
def test_regions(events):
    with raises(RegionError, "numbers"):
        SignalRegion("low", 3700)
    with raises(RegionError, "low < high"):
        SignalRegion(3700, 3300)
    with raises(RegionError, "low < high"):
        SignalRegion(float("nan"), 3300)
    with raises(RegionError, "no events", "signal region"):
        SignalRegion(7500, 8000).signal_region(events)
    with raises(RegionError, "no events", "sidebands"):
        SignalRegion(0, 9000).sidebands(events)
    with raises(InputError, "Events"):
        SignalRegion().signal_region(events.mjj)


@pytest.mark.parametrize(
    ("mjj", "kwargs", "error", "words"),
    [
        (np.full(100, np.nan), {}, InputError, ["non-finite"]),
        (np.array(["x"] * 100), {}, InputError, ["numbers"]),
        (np.ones((10, 2)) * 3000, {}, InputError, ["1-d"]),
        (np.array([]), {}, RegionError, ["0 event"]),
        (np.full(50, 3.4), {}, InputError, ["tev"]),
        (np.linspace(2700, 6000, 100), {"signal_region": (3700, 3300)}, RegionError, ["low < high"]),
        (np.linspace(2700, 6000, 100), {"signal_region": (0, 1e5)}, RegionError, ["no sidebands"]),
        (np.linspace(2700, 6000, 100), {"n_params": 5}, ConfigError, ["n_params"]),
        (np.linspace(2700, 6000, 100), {"mjj_range": (7000, 2000)}, ConfigError, ["mjj_range"]),
    ],
    ids=["nan", "strings", "2d", "empty", "tev", "reversed-sr", "sr-covers-all", "n_params", "range"],
)
def test_fit_sidebands_bad_input(mjj, kwargs, error, words):
    if kwargs.get("signal_region") == (0, 1e5):
        words = ["must lie inside"]
    with raises(error, *words):
        fit_sidebands(mjj, **kwargs)


# ------------------------------------------------------------------------------------------------------
# data files
def _flip_bytes(data: bytes, start: float = 0.4, n: int = 64) -> bytes:
    b = bytearray(data)
    i = int(len(b) * start)
    for k in range(i, min(i + n, len(b))):
        b[k] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("suffix", [".root", ".h5", ".npz"])
def test_empty_garbage_and_truncated_files(files, tmp_path, suffix):
    data = files[suffix].read_bytes()
    for name, content in (
        ("empty", b""),
        ("garbage", bytes(range(256)) * 4),
        ("truncated", data[: len(data) // 2]),
    ):
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        with raises(DataFileError, path.name):
            io.read_events(path)
    # flipped bytes in the payload: zip (CRC) and compressed ROOT baskets fail their checks; pandas HDF5
    # tables have no checksum, so there the only promise is "typed error or valid events", never a crash
    path = tmp_path / f"flipped{suffix}"
    path.write_bytes(_flip_bytes(data))
    if suffix == ".h5":
        with contextlib.suppress(GBIError):
            io.read_events(path)
    else:
        with raises(DataFileError, path.name):
            io.read_events(path)


def test_root_tree_and_branch_problems(events, files, tmp_path):
    path = tmp_path / "nominal.root"
    with uproot.recreate(path) as f:
        f.mktree("nominal", {c: np.float64 for c in COLUMNS})
        f["nominal"].extend(dict(events.columns))
    with raises(DataFileError, "no tree 'events'", "nominal"):
        io.read_root(path)
    assert len(io.read_root(path, tree="nominal")) == len(events)
    for bad in (None, 5, ""):
        with raises(InputError, "tree="):
            io.read_root(files[".root"], tree=bad)
    with raises(InputError, "branches=", "mapping"):
        io.read_root(files[".root"], branches=["mjj"])
    with raises(InputError, "unknown column", "jet_m"):
        io.read_root(files[".root"], branches={"jet_m": "mj1"})
    with raises(InputError, "lacks", "Mjj"):
        io.read_root(files[".root"], branches={"mjj": "Mjj"})
    # a histogram (not a tree) under the requested name
    hpath = tmp_path / "hist.root"
    with uproot.recreate(hpath) as f:
        f["events"] = np.histogram(events.mjj)
    with raises(DataFileError, "no tree"):
        io.read_root(hpath)
    # wrong dtypes: strings cannot be written by uproot; a jagged branch is not one number per event
    jagged = tmp_path / "jagged.root"
    import awkward as ak

    with uproot.recreate(jagged) as f:
        data = {c: events[c] for c in COLUMNS if c != "mj1"}
        data["mj1"] = ak.Array([[v, v] for v in events["mj1"][:10]] + [[v] for v in events["mj1"][10:]])
        f["events"] = data
    with pytest.raises(InputError):
        io.read_root(jagged)
    # extra branches are normal in ntuples and ignored; integer branches are numbers too
    extra = tmp_path / "extra.root"
    with uproot.recreate(extra) as f:
        data = {c: events[c] for c in COLUMNS} | {
            "weight": np.ones(len(events)),
            "run": np.arange(len(events)),
        }
        f.mktree("events", {k: v.dtype for k, v in data.items()})
        f["events"].extend(data)
    np.testing.assert_array_equal(io.read_root(extra)["mjj"], events["mjj"])


def test_empty_tree_and_empty_selection(events, tmp_path):
    path = tmp_path / "empty_tree.root"
    with uproot.recreate(path) as f:
        f.mktree("events", {c: np.float64 for c in COLUMNS})
    with raises(InputError, "no events"):
        io.read_root(path)
    with raises(InputError, "no events"):
        io.read_lhco_hdf5(_lhco(events, tmp_path), start=10**7)
    with raises(InputError, "start"):
        io.read_lhco_hdf5(_lhco(events, tmp_path), start=-1)


def _lhco(events, tmp_path):
    path = tmp_path / "lhco.h5"
    if not path.exists():
        io.write_lhco_hdf5(events.select(np.arange(500)), path)
    return path


def test_lhco_columns(events, tmp_path):
    path = _lhco(events, tmp_path)
    frame = pd.read_hdf(path, key="df")
    # misordered columns: read by name, same events
    shuffled = tmp_path / "shuffled.h5"
    frame[list(reversed(frame.columns))].to_hdf(shuffled, key="df", mode="w", format="table")
    np.testing.assert_array_equal(io.read_lhco_hdf5(shuffled)["mj1"], io.read_lhco_hdf5(path)["mj1"])
    # missing columns
    missing = tmp_path / "missing.h5"
    frame.drop(columns=["pzj2", "tau3j1"]).to_hdf(missing, key="df", mode="w", format="table")
    with raises(InputError, "pzj2", "tau3j1"):
        io.read_lhco_hdf5(missing)
    # wrong dtype
    strings = tmp_path / "strings.h5"
    frame.assign(mj1=frame["mj1"].astype(str)).to_hdf(strings, key="df", mode="w", format="table")
    with raises(InputError, "mj1", "numeric"):
        io.read_lhco_hdf5(strings)
    # NaN rows
    nan = tmp_path / "nan.h5"
    frame.assign(pxj1=np.where(np.arange(len(frame)) == 7, np.nan, frame["pxj1"])).to_hdf(
        nan, key="df", mode="w", format="table"
    )
    with raises(InputError, "non-finite", "7"):
        io.read_lhco_hdf5(nan)
    with raises(DataFileError, "no key", "zzz"):
        io.read_lhco_hdf5(path, key="zzz")


def test_npz_tampering(events, tmp_path):
    tag = {"format": np.array("gbi_zfit.events"), "format_version": np.array(1)}
    cases = {
        "no_tag": ({**events.columns}, DataFileError, ["not a gbi_zfit events file"]),
        "missing": ({**columns(events), **tag, "mjj": None}, DataFileError, ["lacks", "mjj"]),
        "strings": (
            {**columns(events, mjj=np.array(["a"] * len(events))), **tag},
            InputError,
            ["mjj", "numeric"],
        ),
        "lengths": ({**columns(events, mj2=events["mj2"][:5]), **tag}, InputError, ["one length"]),
        "newer": ({**columns(events), **tag, "format_version": np.array(99)}, DataFileError, ["newer"]),
        "nan": ({**columns(events, tau21_j1=events["tau21_j1"] * np.nan), **tag}, InputError, ["non-finite"]),
    }
    for name, (arrays, error, words) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        with raises(error, *words):
            io.load_npz(path)
    with raises(InputError, "suffix", ".csv"):
        io.read_events(tmp_path / "events.csv")
    with raises(DataFileError, "does not exist"):
        io.read_events(tmp_path / "nope.npz")


# ------------------------------------------------------------------------------------------------------
# atomic writes: nothing half-written, ever
def _break(monkeypatch, suffix):
    """Make the writer of ``suffix`` fail after it has written part of the file."""

    def fail_root(self, data, **kwargs):
        raise OSError(28, "No space left on device")

    def fail_hdf(self, path, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\x89HDF\r\n\x1a\n partial")
        raise OSError(28, "No space left on device")

    def fail_npz(file, **arrays):
        file.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    if suffix == ".root":
        monkeypatch.setattr(uproot.writing.writable.WritableTree, "extend", fail_root)
    elif suffix == ".h5":
        monkeypatch.setattr(pd.DataFrame, "to_hdf", fail_hdf)
    else:
        monkeypatch.setattr(np, "savez", fail_npz)


@pytest.mark.parametrize("suffix", [".root", ".h5", ".npz"])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_target_untouched(events, tmp_path, monkeypatch, suffix, existing):
    small = events.select(np.arange(200))
    target = tmp_path / f"out{suffix}"
    if existing:
        io.write_events(small, target)
    before = target.read_bytes() if existing else None
    _break(monkeypatch, suffix)
    with raises(DataFileError, "no space left", "nothing was written"):
        io.write_events(small, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([target.name] if existing else [])
    if existing:
        assert target.read_bytes() == before


def test_atomic_helpers_are_unified_and_safe(tmp_path, monkeypatch, best):
    # data/io.py writes through the one implementation in gbi_zfit._util
    assert io.atomic_path is _util.atomic_path
    # result JSON: a failure while writing keeps the previous file
    target = tmp_path / "res" / "fit.json"
    best.to_json(target)  # parents are created for result files
    before = target.read_text()

    def broken_replace(src, dst):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(_util.os, "replace", broken_replace)
    with raises(DataFileError, "i/o error"):
        FitResult(values={"mu": 0.5, "mx": 1.0, "my": 1.0}).to_json(target)
    monkeypatch.undo()
    assert target.read_text() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["fit.json"]

    # an interrupt mid-write leaves nothing either
    def interrupted_write():
        with _util.atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    assert not (tmp_path / "x.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    # the file gets normal permissions (umask), not the 0600 of a mkstemp file
    umask = os.umask(0o022)
    try:
        _util.atomic_write_text(tmp_path / "perm.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "perm.txt").stat().st_mode) == 0o644
    with raises(DataFileError, "is a directory"):
        _util.atomic_write_text(tmp_path, "x")
    with raises(DataFileError, "does not exist"):
        io.save_npz(Events({c: np.zeros(0) for c in COLUMNS}), tmp_path / "no" / "dir" / "e.npz")


def test_result_json_readers(tmp_path, best):
    path = tmp_path / "fit.json"
    best.to_json(path)
    assert FitResult.from_json(path).values == best.values
    text = path.read_text()
    (tmp_path / "trunc.json").write_text(text[: len(text) // 2])
    with raises(DataFileError, "not valid json"):
        FitResult.from_json(tmp_path / "trunc.json")
    with raises(DataFileError, "cannot read", "missing.json"):
        FitResult.from_json(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with raises(DataFileError, "fitresult"):
        FitResult.from_json(tmp_path / "other.json")
    with raises(DataFileError, "coverageresult"):
        coverage.CoverageResult.from_json(tmp_path / "other.json")
    with raises(DataFileError, "list"):
        FitResult.from_json("[1, 2]")


# ------------------------------------------------------------------------------------------------------
# ratio models and zfit PDFs
def test_ratio_model_inputs(oracle, sr_x):
    with raises(ParameterRangeError, "mx", "outside"):
        oracle.log_ratio_numpy(sr_x[:3], 800.0, 100.0)
    with raises(ParameterRangeError, "my"):
        oracle.check_theta(300.0, float("nan"))
    with raises(ParameterRangeError, "number"):
        oracle.check_theta("heavy", 100.0)
    with raises(InputError, "nan"):
        oracle.log_ratio_numpy(np.full((2, 6), np.nan), 300.0, 150.0)
    with raises(InputError, "shape"):
        oracle.log_ratio_numpy(sr_x[:3, :4], 300.0, 150.0)
    with raises(InputError, "feature set"):
        OracleRatio(feature_set="xx")


def test_ratio_pdf_construction(oracle):
    import zfit

    from gbi_zfit.pdf import RatioPDF

    mu = zfit.Parameter("mu_hardening", 0.01, 0, 1)
    obs = feature_space("paws")
    with raises(InputError, "obs", "same order"):
        RatioPDF(feature_space("ranode"), oracle, mu, 300.0, 150.0)
    with raises(InputError, "RatioModel"):
        RatioPDF(obs, "oracle", mu, 300.0, 150.0)
    with raises(InputError, "reference", "finite"):
        RatioPDF(obs, oracle, mu, 300.0, 150.0, reference=np.full((3, 6), np.nan))
    with raises(InputError, "reference"):
        RatioPDF(obs, oracle, mu, 300.0, 150.0, reference=np.ones((3, 5)))
    with raises(InputError, "reference"):
        RatioPDF(obs, oracle, mu, 300.0, 150.0).sample(5)


def test_ratio_pdf_refuses_nan_events(oracle, sr_x):
    import zfit

    from gbi_zfit.pdf import RatioPDF

    pdf = RatioPDF(feature_space("paws"), oracle, zfit.Parameter("mu_nan", 0.01, 0, 1), 300.0, 150.0)
    x = sr_x[:5].copy()
    good = pdf.pdf(x).numpy()
    assert np.isfinite(good).all()
    x[2, 3] = np.nan
    x[4, 0] = np.inf
    for method in (pdf.pdf, pdf.log_pdf):
        with raises(InputError, "NaN/inf in 2 event(s)"):
            method(x)


@pytest.fixture(scope="module")
def classifier(sim):
    from gbi_zfit.models.classifier import ClassifierEnsemble, build_classifier_network

    x = sim.sample_background_sr(2000, seed=2).features()
    transform = FeatureTransform.fit(x, names=PAWS)
    weights = [build_classifier_network(8, (8, 8), seed=k).get_weights() for k in range(2)]
    return ClassifierEnsemble(weights, transform, theta_bounds=((50, 600), (50, 600)), log_kappa=0.0), x


def test_classifier_inputs(classifier):
    from gbi_zfit.models.classifier import ClassifierEnsemble

    clf, x = classifier
    for mx, my in ((700.0, 100.0), (300.0, 20.0)):  # θ outside the *trained* range (50…600 GeV)
        with raises(ParameterRangeError, "outside", "[50.0, 600.0]"):
            clf.predict(x[:5], mx, my)
        with raises(ParameterRangeError, "outside"):
            clf.log_ratio_numpy(x[:5], mx, my)
    with raises(InputError, "nan"):
        clf.log_ratio_numpy(np.full((2, 6), np.nan), 300.0, 100.0)
    with raises(InputError, "shape"):
        clf.log_ratio_numpy(x[:2, :4], 300.0, 100.0)
    with raises(InputError, "tau32_j2", "[0, 1]"):
        clf.predict(x[:2] + np.array([0, 0, 0, 0, 0, 5]), 300.0, 100.0)
    with raises(InputError, "shape"):
        clf.predict([[1.0, 2.0], [3.0]], 300.0, 100.0)
    with raises(InputError, "theta_bounds"):
        ClassifierEnsemble(
            clf.member_weights, clf.transform, theta_bounds=((600, 50), (50, 600)), log_kappa=0
        )
    with raises(InputError, "log_kappa"):
        ClassifierEnsemble(clf.member_weights, clf.transform, theta_bounds=clf.theta_bounds, log_kappa=np.inf)
    with raises(InputError, "architectures"):
        ClassifierEnsemble(
            [clf.member_weights[0], clf.member_weights[0][:-2]],
            clf.transform,
            theta_bounds=clf.theta_bounds,
            log_kappa=0,
        )


@pytest.fixture(scope="module")
def flow(sim):
    from gbi_zfit.models.flows import BackgroundFlowEnsemble, ConditionalFlow, FlowConfig, FlowPreprocessing

    ev = sim.sample_background(2000, seed=4)
    cfg = FlowConfig.quick(flow="rqs", n_layers=2, hidden_units=(8,))
    pre = FlowPreprocessing.fit(ev.features("ranode"), ev.mjj, RANODE)
    members = [ConditionalFlow(cfg, 4, seed=0)]
    return BackgroundFlowEnsemble(members, pre, cfg, mjj_range=(2650.0, 7000.0), seed=3), ev


def test_flow_and_flow_pdf_inputs(flow):
    from gbi_zfit.pdf import FlowPDF

    ens, ev = flow
    x = ev.features("ranode")[:10]
    with raises(InputError, "nan"):
        ens.log_prob(np.full((2, 4), np.nan), 3500.0)
    with raises(InputError, "shape"):
        ens.log_prob(np.ones((2, 6)), 3500.0)
    with raises(ParameterRangeError, "outside", "trained"):
        ens.log_prob(x, 9000.0)
    with raises(InputError, "non-negative integer"):
        ens.sample(-1, 3500.0)

    def flat(m):
        return np.ones_like(m)

    obs = feature_space("ranode")
    with raises(InputError, "obs", "features"):
        FlowPDF(feature_space("paws"), ens, flat, signal_region=(3300, 3700))
    with raises(InputError, "n_quad"):
        FlowPDF(obs, ens, flat, signal_region=(3300, 3700), n_quad=1)
    with raises(RegionError, "not inside", "trained"):
        FlowPDF(obs, ens, flat, signal_region=(2000, 3000))
    with raises(InputError, "positive and finite"):
        FlowPDF(obs, ens, lambda m: np.where(m > 3500, np.nan, 1.0), signal_region=(3300, 3700))
    pdf = FlowPDF(obs, ens, flat, signal_region=(3300, 3700), n_quad=4)
    with raises(InputError, "nan"):
        pdf.log_density(np.vstack([x, np.full((1, 4), np.inf)]))
    with raises(InputError, "shape"):
        pdf.log_density(x[:, :3])


# ------------------------------------------------------------------------------------------------------
# model bundles: truncated, tampered, incomplete, incompatible
def _edit(path, fn):
    sc = json.loads((path / SIDECAR_NAME).read_text())
    fn(sc)
    (path / SIDECAR_NAME).write_text(json.dumps(sc))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, classifier, flow, sim):
    """One saved bundle per model class (classifier with .keras members, CFM, background flow)."""
    from gbi_zfit.models.cfm import CFMConfig, CFMGenerator, build_velocity_network

    d = tmp_path_factory.mktemp("bundles")
    clf, _x = classifier
    clf.save(d / "classifier")
    mjj = sim.sample_background(500, seed=1).mjj
    cond = FeatureTransform.fit(mjj[:, None], names=("mjj",))
    net = build_velocity_network(6, 1, width=8, n_blocks=1)
    CFMGenerator(net, clf.transform, cond, config=CFMConfig(width=8, n_blocks=1)).save(d / "cfm")
    flow[0].save(d / "flow")
    return d


def _copy(saved, name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(saved / name, dst)
    return dst


def _loader(name):
    from gbi_zfit.models.cfm import CFMGenerator
    from gbi_zfit.models.classifier import ClassifierEnsemble
    from gbi_zfit.models.flows import BackgroundFlowEnsemble

    return {
        "classifier": ClassifierEnsemble.load,
        "cfm": CFMGenerator.load,
        "flow": BackgroundFlowEnsemble.load,
    }[name]


def _first_member(path):
    sc = json.loads((path / SIDECAR_NAME).read_text())
    return path / next(iter(sc["members"].values()))["file"]


@pytest.mark.parametrize("name", ["classifier", "cfm", "flow"])
def test_bundle_file_damage(saved, tmp_path, name):
    load = _loader(name)
    load(saved / name)  # the intact bundle loads
    # one flipped bit in a weight file
    p = _copy(saved, name, tmp_path / "flip")
    member = _first_member(p)
    data = bytearray(member.read_bytes())
    data[len(data) // 2] ^= 0x01
    member.write_bytes(bytes(data))
    with raises(ModelFileError, "checksum mismatch", member.name):
        load(p)
    # truncated weight file
    p = _copy(saved, name, tmp_path / "trunc")
    member = _first_member(p)
    member.write_bytes(member.read_bytes()[:100])
    with raises(ModelFileError, "truncated", member.name):
        load(p)
    # deleted member
    p = _copy(saved, name, tmp_path / "deleted")
    member = _first_member(p)
    member.unlink()
    with raises(ModelFileError, "missing", member.name):
        load(p)
    # deleted / truncated sidecar
    p = _copy(saved, name, tmp_path / "nosidecar")
    (p / SIDECAR_NAME).unlink()
    with raises(ModelFileError, SIDECAR_NAME, "missing"):
        load(p)
    p = _copy(saved, name, tmp_path / "halfsidecar")
    text = (p / SIDECAR_NAME).read_text()
    (p / SIDECAR_NAME).write_text(text[: len(text) // 2])
    with raises(ModelFileError, "corrupt"):
        load(p)
    with raises(ModelFileError, "does not exist"):
        load(tmp_path / "nothing_here")


@pytest.mark.parametrize(
    ("name", "edit", "words"),
    [
        (
            "classifier",
            lambda sc: [m.update(keras="2.15.0") for m in sc["members"].values()],
            ["keras 2.15.0", "major version"],
        ),
        ("classifier", lambda sc: sc["versions"].update(gbi_zfit="99.0.0"), ["gbi_zfit 99.0.0", "upgrade"]),
        ("classifier", lambda sc: sc.update(format_version=2), ["format version 2", "upgrade"]),
        ("classifier", lambda sc: sc.update(kind_version=99), ["schema version 99"]),
        ("classifier", lambda sc: sc.update(kind="cfm"), ["expected 'classifier'"]),
        ("classifier", lambda sc: sc.update(features=list(reversed(PAWS))), ["feature mismatch"]),
        ("classifier", lambda sc: sc.update(features="mj1"), ["features"]),
        ("classifier", lambda sc: sc.update(versions="3.0"), ["versions"]),
        ("classifier", lambda sc: sc.update(metadata=[1, 2]), ["metadata"]),
        ("classifier", lambda sc: sc["metadata"].pop("theta_bounds"), ["theta_bounds"]),
        (
            "classifier",
            lambda sc: sc["metadata"].update(theta_bounds=[[600, 50], [50, 600]]),
            ["theta_bounds"],
        ),
        ("classifier", lambda sc: sc["metadata"].update(log_kappa_fixed="x"), ["invalid classifier bundle"]),
        ("classifier", lambda sc: sc["preprocessing"].update(std=[0] * 6), ["std > 0"]),
        ("classifier", lambda sc: sc["preprocessing"].update(names=list(reversed(PAWS))), ["transform"]),
        (
            "classifier",
            lambda sc: next(iter(sc["members"].values())).update(file="../x.keras"),
            ["invalid entry"],
        ),
        ("cfm", lambda sc: sc["metadata"].update(config="garbage"), ["invalid cfm bundle"]),
        ("cfm", lambda sc: sc["metadata"].update(history="garbage"), ["invalid cfm bundle"]),
        ("cfm", lambda sc: sc["preprocessing"].pop("condition"), ["condition"]),
        ("flow", lambda sc: sc["metadata"].update(mjj_range=[7000, 2650]), ["mjj_range"]),
        ("flow", lambda sc: sc["metadata"].update(signal_region=[3700, 3300]), ["signal region"]),
        ("flow", lambda sc: sc["metadata"].update(history=[1]), ["metadata"]),
        ("flow", lambda sc: sc["metadata"].update(feature_set="xx"), ["feature set"]),
        ("flow", lambda sc: sc["metadata"]["config"].update(hidden_units=[16]), ["shape"]),
    ],
)
def test_bundle_sidecar_tampering(saved, tmp_path, name, edit, words):
    p = _copy(saved, name, tmp_path)
    _edit(p, edit)
    with raises(ModelFileError, *words):
        _loader(name)(p)


def test_bundle_feature_expectations(saved):
    from gbi_zfit.models.flows import BackgroundFlowEnsemble

    with raises(ModelFileError, "feature mismatch"):
        _loader("classifier")(saved / "classifier", feature_set="ranode")
    with raises(ModelFileError, "feature mismatch"):
        BackgroundFlowEnsemble.load(saved / "flow", expected_features=PAWS[:4])
    with raises(ModelFileError, "expected 'cfm'"):
        _loader("cfm")(saved / "classifier")


def test_save_bundle_rejects_bad_members(tmp_path):
    with raises(InputError, "member name"):
        save_bundle(tmp_path / "b", kind="x", members={"../evil": [np.ones(2)]})
    with raises(InputError, "object arrays"):
        save_bundle(tmp_path / "b", kind="x", members={"m": {"a": np.array([None, 1])}})
    with raises(InputError, "json"):
        save_bundle(tmp_path / "b", kind="x", members={"m": [np.ones(2)]}, metadata={"f": object()})
    assert not (tmp_path / "b").exists()
    save_bundle(tmp_path / "ok", kind="x", members={"m": [np.ones(2)]})
    with raises(ModelFileError, "expected 'y'"):
        load_bundle(tmp_path / "ok", kind="y")


def test_cfm_sampling_inputs(saved):
    gen = _loader("cfm")(saved / "cfm")
    for bad in (np.array([np.nan, 3500.0]), np.array([-1.0]), np.array(["a"]), np.array([]), np.ones((2, 2))):
        with pytest.raises(InputError, match="mjj"):
            gen.sample(bad, seed=1)


# ------------------------------------------------------------------------------------------------------
# the fit and its statistics
def test_signal_fitter_construction(oracle, sr_x):
    cases = [
        ({"ratio_model": "oracle"}, InputError, ["RatioModel"]),
        ({"data": sr_x[:0]}, InputError, ["empty"]),
        ({"data": np.vstack([sr_x, [[np.nan] * 6]])}, InputError, ["nan"]),
        ({"data": sr_x[:, :4]}, InputError, ["shape"]),
        ({"data": np.array([["a"] * 6])}, InputError, ["numeric"]),
        ({"backend": "gpu"}, InputError, ["backend"]),
        ({"mu_bounds": (-2.0, 1.0)}, ParameterRangeError, ["-1 < low"]),
        ({"mu_bounds": (0.5, 0.1)}, ParameterRangeError, ["low < high"]),
        ({"mu_bounds": (0.0, 1.5)}, ParameterRangeError, ["≤ 1"]),
        ({"mu_bounds": "ab"}, ParameterRangeError, ["mu_bounds"]),
        ({"mu_bounds": (0.0, 0.5, 1.0)}, ParameterRangeError, ["pair"]),
        ({"tol": -1.0}, InputError, ["tol"]),
        ({"tol": float("nan")}, InputError, ["tol"]),
        ({"penalty_threshold": float("nan")}, InputError, ["penalty_threshold"]),
        ({"background_yield": (100.0,)}, InputError, ["background_yield"]),
        ({"background_yield": (-1.0, 2.0)}, InputError, ["background_yield"]),
        ({"background_yield": (100.0, 5.0), "backend": "zfit"}, InputError, ["fast"]),
    ]
    for kwargs, error, words in cases:
        kw = {"ratio_model": oracle, "data": sr_x[:50], **kwargs}
        with raises(error, *words):
            SignalFitter(kw.pop("ratio_model"), kw.pop("data"), **kw)


def test_signal_fitter_values_and_fit_arguments(fitter):
    with raises(ParameterRangeError, "mx = 800", "limits"):
        fitter.set_values({"mx": 800.0})
    with raises(ParameterRangeError, "mu"):
        fitter.set_values({"mu": float("nan")})
    with raises(ParameterRangeError, "number"):
        fitter.set_values({"mu": "a lot"})
    with raises(InputError, "unknown parameter", "foo"):
        fitter.set_values({"foo": 1.0})
    with raises(InputError, "dict"):
        fitter.set_values([("mu", 0.1)])
    with raises(InputError, "unknown parameter", "foo"):
        fitter.fit(fix=("foo",))
    with raises(InputError, "nothing to fit"):
        fitter.fit(fix=["mu", "mx", "my"])
    with raises(InputError, "unknown parameter", "sigma"):
        fitter.fit(minos="sigma")  # a single name is one parameter, not its letters
    with raises(ParameterRangeError, "mu = -0.95", "limits"):
        fitter.fit(start={"mu": -0.95})
    with raises(ParameterRangeError, "mx = 20"):
        fitter.fit(start={"mx": 20.0})


def test_negative_mu_start_with_undefined_density(fitter):
    """μ < 0 is allowed only while μ Λ + 1 − μ > 0 for every event: otherwise a typed error, not a NaN fit."""
    values = {"mu": -0.5, "mx": 300.0, "my": 150.0}
    assert not np.isfinite(fitter.nll(values))
    with raises(ParameterRangeError, "not finite", "μ = -0.5"):
        fitter.fit(start=values)
    fitter.set_values({"mu": 0.01})
    assert np.isfinite(fitter.nll())


def test_profile_entry_points(fitter, best):
    with raises(InputError, "unknown parameter", "foo"):
        profile.profile_1d(fitter, "foo", best=best)
    with raises(InputError, "n_points"):
        profile.profile_1d(fitter, "mu", n_points=1, best=best)
    with raises(InputError, "span"):
        profile.profile_1d(fitter, "mu", span=-1.0, best=best)
    with raises(ParameterRangeError, "within its limits"):
        profile.profile_1d(fitter, "mu", values=[-0.95, 0.1], best=best)
    with raises(InputError, "finite"):
        profile.profile_1d(fitter, "mu", values=[np.nan], best=best)
    with raises(InputError, "numbers"):
        profile.profile_1d(fitter, "mu", values=["a"], best=best)
    with raises(InputError, "FitResult"):
        profile.profile_1d(fitter, "mu", best={"mu": 0.1})
    with raises(ParameterRangeError, "mx grid", "[50.0, 600.0]"):
        profile.profile_2d(fitter, [800.0, 900.0], [100.0, 200.0], best=best)
    with raises(ParameterRangeError, "mx grid"):
        profile.profile_2d(fitter, [np.nan, 300.0], [100.0, 200.0], best=best)
    with raises(InputError, "numbers"):
        profile.profile_2d(fitter, ["a", "b"], [100.0, 200.0], best=best)
    with raises(InputError, "canonical"):
        profile.profile_2d(fitter, [100.0, 110.0], [200.0, 210.0], best=best)
    with raises(InputError, "confidence level"):
        profile.chi2_threshold(1.5, 1)
    with raises(InputError, "ndof"):
        profile.chi2_threshold(0.68, 0)


def test_toys_fisher_coverage_entry_points(fitter, best, sr_x, tmp_path):
    with raises(InputError, "integer >= 1"):
        toys.poisson_bootstrap_weights(0)
    with raises(InputError, "integer"):
        toys.poisson_bootstrap_weights("many")
    with raises(InputError, ">= 0"):
        toys.bootstrap_fits(fitter, -1)
    with raises(ParameterRangeError, "mx", "outside"):
        toys.model_event_weights(fitter.engine, 0.01, 900.0, 100.0)
    with raises(ParameterRangeError, "mu"):
        toys.model_event_weights(fitter.engine, -5.0, 300.0, 100.0)
    with raises(InputError, "model_weights"):
        toys.model_toy_counts(np.array([-1.0, 1.0]), 10)
    with raises(InputError, "n = "):
        toys.asimov_weights(np.ones(3), np.ones(3))
    with raises(InputError, "truth lacks"):
        toys.measure_toy(fitter, {"mu": 0.01})
    with raises(InputError, "normalisation"):
        toys.fit_asimov(fitter, best.values, normalisation="xx")
    for kwargs, error, words in (
        ({"kind": "xx"}, InputError, ["kind"]),
        ({"mx": 900.0}, ParameterRangeError, ["mx", "range"]),
        ({"my": 10.0}, ParameterRangeError, ["my", "range"]),
        ({"n_background_sr": -1}, InputError, ["n_background_sr"]),
        ({"mu_lower": -3.0}, InputError, ["mu_lower"]),
        ({"s_over_sqrt_b": float("nan")}, InputError, ["s_over_sqrt_b"]),
        ({"feature_set": "xx"}, InputError, ["feature set"]),
    ):
        with raises(error, *words):
            toys.ToyConfig(**kwargs)
    with raises(InputError, "unknown toyconfig field"):
        toys.ToyConfig.from_dict({"foo": 1})
    with raises(InputError, "n_toys"):
        toys.run_toys(toys.ToyConfig(), 0, seed=1)
    with raises(InputError, "seed"):
        toys.run_toys(toys.ToyConfig(), 2, seed="a")
    with raises(InputError, "method"):
        fisher.observed_fisher(fitter, best, method="x")
    with raises(InputError, "hesse"):
        fisher.observed_fisher(fitter, best)  # no covariance in this result
    with raises(InputError, "missing"):
        fisher.nll_hessian(fitter.engine, {"mu": 0.1})
    with raises(InputError, "n_expected"):
        fisher.expected_fisher(fitter, sr_x, best.values, n_expected=-5)
    with raises(InputError, "shape"):
        fisher.expected_fisher(fitter, sr_x[:, :2], best.values)
    with raises(InputError, "nan"):
        fisher.expected_fisher(fitter, np.full((4, 6), np.nan), best.values)
    with raises(ParameterRangeError, "outside"):
        fisher.expected_fisher(fitter, sr_x, {**best.values, "mx": 900.0})
    with raises(InputError, "μ λ + 1 − μ ≤ 0"):
        fisher.expected_fisher(fitter, sr_x, {**best.values, "mu": -0.9})
    with raises(InputError, "FitResult"):
        fisher.discovery_q0(fitter, "best")
    with raises(ParameterRangeError, "outside"):
        fisher.discovery_q0(fitter, best, theta=(900.0, 100.0))
    (tmp_path / "garbage.jsonl").write_text("not json\n")
    with raises(DataFileError, "not a gbi_zfit result store"):
        coverage.summarize_store(tmp_path / "garbage.jsonl")
    with raises(DataFileError, "does not exist"):
        coverage.summarize_store(tmp_path / "missing.jsonl")
    assert not (tmp_path / "missing.jsonl").exists()


# ------------------------------------------------------------------------------------------------------
# parallel execution helpers
def test_parallel_entry_points(tmp_path):
    with raises(InputError, ">= 0"):
        parallel.spawn_seeds(1, -1)
    with raises(InputError, "integer"):
        parallel.spawn_seeds(1, "3")
    with raises(InputError, "seed"):
        parallel.spawn_seeds("abc", 2)
    with raises(InputError, "seed"):
        parallel.spawn_seeds(-1, 2)
    with raises(InputError, "json"):
        parallel.config_hash({"a": object()})
    with raises(InputError, "json"):
        parallel.ResultStore(tmp_path / "r.jsonl", config={"a": object()})
    with raises(DataFileError, "directory"):
        parallel.ResultStore(tmp_path, config={"a": 1})
    (tmp_path / "bad.jsonl").write_text('{"not": "a store"}\n')
    with raises(DataFileError, "not a gbi_zfit result store"):
        parallel.ResultStore(tmp_path / "bad.jsonl", config={"a": 1})
    store = parallel.ResultStore(tmp_path / "ok.jsonl", config={"a": 1})
    with raises(ConfigError, "different configuration"):
        parallel.ResultStore(tmp_path / "ok.jsonl", config={"a": 2})
    with raises(InputError, "json"):
        store.append(0, object())
    with raises(InputError, "n_workers"):
        parallel.DaskExecutor(n_workers=0)


# ------------------------------------------------------------------------------------------------------
# the command line: exit status 2 and one line on stderr, no traceback
@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, events, sim) -> dict:
    d = tmp_path_factory.mktemp("cli")
    (d / "empty.npz").write_bytes(b"")
    (d / "empty.root").write_bytes(b"")
    (d / "garbage.h5").write_bytes(b"\x00" * 300)
    with uproot.recreate(d / "nominal.root") as f:
        f.mktree("nominal", {c: np.float64 for c in COLUMNS})
        f["nominal"].extend(dict(events.columns))
    io.save_npz(events.select(~sim.signal_region.contains(events.mjj)), d / "no_sr.npz")
    io.save_npz(events, d / "good.npz")
    nan = Events(
        columns(events, mjj=np.where(np.arange(len(events)) == 2, np.nan, events.mjj)), validate=False
    )
    io.save_npz(nan, d / "nan.npz")
    return {p.name: p for p in d.iterdir()} | {"dir": d}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["fit", "{dir}/missing.npz", "--oracle"], ["missing.npz", "does not exist"]),
        (["fit", "{empty.npz}", "--oracle"], ["empty.npz"]),
        (["fit", "{empty.root}", "--oracle"], ["empty.root", "root"]),
        (["fit", "{garbage.h5}", "--oracle"], ["garbage.h5"]),
        (["fit", "{nominal.root}", "--oracle"], ["no tree 'events'", "nominal"]),
        (["fit", "{no_sr.npz}", "--oracle"], ["signal region", "no events"]),
        (["fit", "{nan.npz}", "--oracle"], ["mjj", "non-finite"]),
        (["fit", "{dir}/data.csv", "--oracle"], ["suffix", ".csv"]),
        (["scan", "{empty.npz}", "--oracle"], ["empty.npz"]),
        (["scan", "{no_sr.npz}", "--oracle"], ["signal region"]),
        (["generate", "--out", "{dir}/x.csv", "--mu", "0.01", "--n-background", "100"], ["suffix"]),
        (["generate", "--out", "{dir}/no/such/x.npz", "--mu", "0.01", "--n-background", "100"], ["exist"]),
        (["generate", "--out", "{dir}/x.npz", "--mu", "2", "--n-background", "100"], ["mu = 2.0"]),
        (["generate", "--out", "{dir}/x.npz", "--mu", "nan", "--n-background", "100"], ["mu = nan"]),
        (["generate", "--out", "{dir}/x.npz", "--mu", "0.01", "--mx", "-5", "--n-background", "100"], ["mx"]),
        (["generate", "--out", "{dir}/x.npz", "--mu", "0.01", "--n-background", "-5"], ["-5"]),
        (["generate", "--out", "{dir}", "--mu", "0.01", "--n-background", "100"], ["suffix"]),
    ],
)
def test_cli_bad_input_is_one_line(cli_files, capsys, args, words):
    argv = []
    for a in args:
        for key, path in cli_files.items():
            a = a.replace("{" + key + "}", str(path))
        argv.append(a)
    assert main(argv) == 2
    captured = capsys.readouterr()
    err_lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err_lines) == 1, captured.err
    assert err_lines[0].startswith(f"gbi {argv[0]}: error: ")
    assert "Traceback" not in captured.err
    for w in words:
        assert w.lower() in err_lines[0].lower(), (w, err_lines[0])
    assert not (cli_files["dir"] / "x.npz").exists()  # nothing half-written by failed generate runs


def test_cli_debug_raises_the_typed_error(cli_files):
    with pytest.raises(RegionError):
        main(["--debug", "fit", str(cli_files["no_sr.npz"]), "--oracle"])
    with pytest.raises(DataFileError):
        main(["--debug", "fit", str(cli_files["nominal.root"]), "--oracle"])
