"""Property-based tests (hypothesis): I/O round trips and the invertible feature preprocessing.

* npz and ROOT: write → read returns exactly the same events (all columns bit for bit, the label);
  LHCO HDF5 (jets stored as 4-vectors): the same events to rounding;
* :class:`~gbi_zfit.models.preprocessing.FeatureTransform`: inverse(forward(x)) ≈ x, and the log-Jacobian
  equals the log of a finite-difference derivative (the transform is element-wise, so the Jacobian is
  diagonal), for numpy and TensorFlow input.

Examples are few (``max_examples`` ≤ 25) and small, so the module runs in seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gbi_zfit.data import io
from gbi_zfit.data.events import COLUMNS, Events
from gbi_zfit.models.preprocessing import FeatureTransform

# tmp_path is function-scoped: each example writes its own uniquely named file, so sharing it is safe
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = iter(range(10**9))


def _floats(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def events_strategy(draw, *, lhco: bool = False) -> Events:
    """Valid events (GeV, jets ordered by mass), 1–40 of them, with or without a label.

    For the LHCO layout the two jets must fit into mjj (m1 + m2 < mjj) and τ21 > 0 (τ32 is stored as
    τ3/τ2 with τ2 = τ21, so it is lost where τ21 = 0).
    """
    n = draw(st.integers(1, 40))
    mjj = draw(hnp.arrays(np.float64, n, elements=_floats(500.0, 9000.0)))
    frac = draw(hnp.arrays(np.float64, (2, n), elements=_floats(0.0, 0.45 if lhco else 2.0)))
    m = np.sort(frac * (mjj if lhco else 100.0), axis=0)[::-1]  # j1 heavier
    m[0] = np.maximum(m[0], 1.5)  # a median jet mass below 1 GeV would look like TeV
    lo = 1e-3 if lhco else 0.0
    taus = draw(hnp.arrays(np.float64, (4, n), elements=_floats(lo, 1.0)))
    label = draw(st.none() | hnp.arrays(np.int8, n, elements=st.integers(0, 1)))
    cols = dict(zip(COLUMNS, [mjj, m[0], m[1], *taus], strict=True))
    return Events(cols, label)


def _assert_same(a: Events, b: Events, rtol: float = 0.0) -> None:
    assert len(a) == len(b)
    for c in COLUMNS:
        if rtol:
            np.testing.assert_allclose(b[c], a[c], rtol=rtol, atol=1e-9, err_msg=c)
        else:
            np.testing.assert_array_equal(b[c], a[c], err_msg=c)
    if a.label is None:
        assert b.label is None
    else:
        np.testing.assert_array_equal(b.label, a.label)


@SETTINGS
@given(events=events_strategy(), compress=st.booleans())
def test_npz_round_trip(tmp_path, events, compress):
    path = tmp_path / f"e{next(_counter)}.npz"
    io.save_npz(events, path, compress=compress)
    _assert_same(events, io.load_npz(path))


@SETTINGS
@given(events=events_strategy(), tree=st.sampled_from(["events", "nominal"]))
def test_root_round_trip(tmp_path, events, tree):
    path = tmp_path / f"e{next(_counter)}.root"
    io.write_root(events, path, tree=tree)
    back = io.read_root(path, tree=tree, order_jets=False)
    _assert_same(events, back)


@settings(SETTINGS, max_examples=10)
@given(events=events_strategy(lhco=True), seed=st.integers(0, 2**16))
def test_lhco_hdf5_round_trip(tmp_path, events, seed):
    pytest.importorskip("tables")
    path = tmp_path / f"e{next(_counter)}.h5"
    io.write_lhco_hdf5(events, path, seed=seed)
    back = io.read_lhco_hdf5(path)
    # masses and τ ratios are stored directly; mjj is recomputed from boosted 4-vectors
    _assert_same(events, back, rtol=1e-6)


# ------------------------------------------------------------------------------------------------------
# FeatureTransform: forward/inverse and the log-Jacobian
_DOMAINS = {"log": (1e-2, 1e4), "logit": (0.0, 1.0), "identity": (-50.0, 50.0)}


@st.composite
def transform_and_data(draw, *, interior: bool = False):
    kinds = draw(st.lists(st.sampled_from(sorted(_DOMAINS)), min_size=1, max_size=5))
    n = draw(st.integers(3, 30))
    cols = []
    for kind in kinds:
        lo, hi = _DOMAINS[kind]
        if interior and kind == "logit":  # finite differences need room on both sides
            lo, hi = 1e-3, 1.0 - 1e-3
        cols.append(draw(hnp.arrays(np.float64, n, elements=_floats(lo, hi))))
    x = np.stack(cols, axis=1)
    names = tuple(f"f{i}" for i in range(len(kinds)))
    mean = tuple(draw(_floats(-3.0, 3.0)) for _ in kinds)
    std = tuple(draw(_floats(0.1, 5.0)) for _ in kinds)
    eps = draw(st.sampled_from([0.0, 1e-6, 1e-3])) if not interior else 1e-6
    if not interior and eps == 0.0:  # logit(0) = −inf without the squeeze: keep τ away from 0 and 1
        x = np.where(np.isin(kinds, ["logit"])[None, :], np.clip(x, 1e-6, 1 - 1e-6), x)
    return FeatureTransform(names, tuple(kinds), mean, std, eps), x


@SETTINGS
@given(data=transform_and_data())
def test_forward_inverse_is_identity(data):
    tr, x = data
    y = tr.forward(x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(tr.inverse(y), x, rtol=1e-9, atol=1e-9)
    # and the saved form restores the same map
    np.testing.assert_array_equal(FeatureTransform.from_dict(tr.to_dict()).forward(x), y)


@SETTINGS
@given(data=transform_and_data(interior=True))
def test_log_jacobian_matches_finite_differences(data):
    tr, x = data
    # central differences per column (the Jacobian is diagonal); steps balance truncation and rounding
    kinds = np.array(tr.kinds)[None, :]
    h = np.where(kinds == "logit", 1e-7, np.where(kinds == "log", 1e-6 * x, 1e-6 * np.maximum(np.abs(x), 1)))
    deriv = (tr.forward(x + h) - tr.forward(x - h)) / (2 * h)
    expected = np.log(np.abs(deriv)).sum(axis=1)
    ldj = tr.log_det_jacobian(x)
    np.testing.assert_allclose(ldj, expected, rtol=1e-5, atol=1e-5)
    # the inverse's log-Jacobian is the negative at the image point
    np.testing.assert_allclose(tr.inverse_log_det_jacobian(tr.forward(x)), -ldj, rtol=1e-9, atol=1e-8)


@settings(SETTINGS, max_examples=10)
@given(data=transform_and_data(interior=True))
def test_tensorflow_path_equals_numpy(data):
    import tensorflow as tf

    tr, x = data
    xt = tf.constant(x)
    np.testing.assert_allclose(tr.forward(xt).numpy(), tr.forward(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        tr.log_det_jacobian(xt).numpy(), tr.log_det_jacobian(x), rtol=1e-12, atol=1e-12
    )
    y = tr.forward(x)
    np.testing.assert_allclose(tr.inverse(tf.constant(y)).numpy(), tr.inverse(y), rtol=1e-12, atol=1e-12)
