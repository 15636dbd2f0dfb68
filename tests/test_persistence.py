"""Model bundles: round trips, integrity checks (checksums, members, kind, features, versions), atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from gbi_zfit.errors import InputError, ModelFileError
from gbi_zfit.models import persistence
from gbi_zfit.models.flows import BackgroundFlowEnsemble, ConditionalFlow, FlowConfig, FlowPreprocessing
from gbi_zfit.models.persistence import (
    FORMAT_VERSION,
    SIDECAR_NAME,
    load_bundle,
    read_sidecar,
    save_bundle,
    verify_bundle,
)

FEATURES = ["mj2", "delta_mj", "tau21_j1", "tau21_j2"]


def _arrays_bundle(path, **kw):
    rng = np.random.default_rng(0)
    members = {
        "m0": {"w": rng.normal(size=(3, 4)), "b": np.arange(4)},
        "m1": [rng.normal(size=5), rng.normal(size=(2, 2)).astype(np.float32)],
    }
    save_bundle(
        path,
        kind="toy",
        members=members,
        features=FEATURES,
        metadata={"seeds": [1, 2], "history": {"loss": [1.0, float("nan")]}, "theta_range": (25, 700)},
        preprocessing={"mean": np.zeros(2)},
        **kw,
    )
    return members


def _edit_sidecar(path, fn):
    sc = json.loads((path / SIDECAR_NAME).read_text())
    fn(sc)
    (path / SIDECAR_NAME).write_text(json.dumps(sc))


def test_array_bundle_roundtrip(tmp_path):
    d = tmp_path / "bundle"
    members = _arrays_bundle(d)
    loaded, sidecar = load_bundle(d, kind="toy", expected_features=FEATURES)
    assert list(loaded) == ["m0", "m1"]
    for k, v in members["m0"].items():
        np.testing.assert_array_equal(loaded["m0"][k], v)
    assert isinstance(loaded["m1"], list)
    for a, b in zip(loaded["m1"], members["m1"], strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert sidecar["format_version"] == FORMAT_VERSION
    assert sidecar["kind"] == "toy"
    assert sidecar["features"] == FEATURES
    assert sidecar["metadata"]["seeds"] == [1, 2]
    assert np.isnan(sidecar["metadata"]["history"]["loss"][1])
    assert sidecar["metadata"]["theta_range"] == [25, 700]
    assert sidecar["preprocessing"] == {"mean": [0.0, 0.0]}
    for dist in ("gbi_zfit", "numpy", "tensorflow", "tensorflow-probability", "keras"):
        assert dist in sidecar["versions"]
    assert all(len(e["sha256"]) == 64 for e in sidecar["members"].values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temporary leftovers


def test_keras_member_roundtrip(tmp_path):
    import keras

    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(1)]
    )
    d = save_bundle(tmp_path / "k", kind="classifier", members={"net": model}, features=["a", "b", "c"])
    assert (d / "net.keras").is_file()
    (loaded,), _ = load_bundle(d, kind="classifier").members.values(), None
    x = np.random.default_rng(1).normal(size=(7, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)
    # a Keras file from another major version is refused
    _edit_sidecar(d, lambda sc: sc["members"]["net"].update(keras="2.15.0"))
    with pytest.raises(ModelFileError, match="Keras"):
        load_bundle(d, kind="classifier")


def test_tampered_and_truncated_files_are_detected(tmp_path):
    d = tmp_path / "b"
    _arrays_bundle(d)
    path = d / "m0.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, one flipped byte
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="checksum mismatch for member 'm0'"):
        load_bundle(d, kind="toy")
    _arrays_bundle(d)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelFileError, match="truncated"):
        verify_bundle(d)


def test_missing_member_and_sidecar(tmp_path):
    d = tmp_path / "b"
    _arrays_bundle(d)
    (d / "m1.npz").unlink()
    with pytest.raises(ModelFileError, match="member 'm1' is missing"):
        load_bundle(d, kind="toy")
    (d / SIDECAR_NAME).unlink()
    with pytest.raises(ModelFileError, match="missing"):
        load_bundle(d, kind="toy")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_bundle(tmp_path / "nothing", kind="toy")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / SIDECAR_NAME).write_text("{not json")
    with pytest.raises(ModelFileError, match="corrupt"):
        read_sidecar(tmp_path / "garbage")


def test_kind_feature_and_version_mismatch(tmp_path):
    d = tmp_path / "b"
    _arrays_bundle(d)
    with pytest.raises(ModelFileError, match="holds a 'toy' model, expected 'cfm'"):
        load_bundle(d, kind="cfm")
    swapped = [FEATURES[1], FEATURES[0], *FEATURES[2:]]
    with pytest.raises(ModelFileError, match="feature mismatch") as info:
        load_bundle(d, kind="toy", expected_features=swapped)
    assert str(FEATURES) in str(info.value)
    assert str(swapped) in str(info.value)
    _edit_sidecar(d, lambda sc: sc.update(kind_version=3))
    with pytest.raises(ModelFileError, match="schema version 3 is newer"):
        load_bundle(d, kind="toy", kind_version=2)
    _edit_sidecar(d, lambda sc: sc.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="newer"):
        load_bundle(d, kind="toy")
    _edit_sidecar(d, lambda sc: sc.update(format="something_else"))
    with pytest.raises(ModelFileError, match="not a gbi_zfit model sidecar"):
        load_bundle(d, kind="toy")


def test_invalid_inputs_write_nothing(tmp_path):
    with pytest.raises(InputError, match="member name"):
        save_bundle(tmp_path / "a", kind="toy", members={"../evil": [np.ones(2)]})
    with pytest.raises(InputError, match="JSON"):
        save_bundle(tmp_path / "b", kind="toy", members={"m": [np.ones(2)]}, metadata={"f": object()})
    with pytest.raises(InputError, match="unsupported type"):
        save_bundle(tmp_path / "c", kind="toy", members={"m": 3.0})
    with pytest.raises(InputError, match="object arrays"):
        save_bundle(tmp_path / "d", kind="toy", members={"m": [np.array([{}, 1], dtype=object)]})
    assert list(tmp_path.iterdir()) == []


def test_no_partial_bundle_after_failure(tmp_path, monkeypatch):
    d = tmp_path / "b"
    original = _arrays_bundle(d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    real_write = persistence._write_member
    calls = []

    def failing(tmp, name, obj):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_write(tmp, name, obj)

    monkeypatch.setattr(persistence, "_write_member", failing)
    with pytest.raises(ModelFileError, match="disk full"):
        save_bundle(d, kind="toy", members={"x": [np.ones(1)], "y": [np.ones(1)]})
    # the previous bundle is intact and loads; no temporary directory is left behind
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    np.testing.assert_array_equal(load_bundle(d, kind="toy").members["m0"]["w"], original["m0"]["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    calls.clear()
    with pytest.raises(ModelFileError):
        save_bundle(tmp_path / "new", kind="toy", members={"x": [np.ones(1)], "y": [np.ones(1)]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_overwrite_rules(tmp_path):
    d = tmp_path / "b"
    _arrays_bundle(d)
    with pytest.raises(ModelFileError, match="already exists"):
        _arrays_bundle(d, overwrite=False)
    save_bundle(d, kind="toy2", members={"only": [np.zeros(1)]})  # replaces the old bundle completely
    assert sorted(p.name for p in d.iterdir()) == [SIDECAR_NAME, "only.npz"]
    other = tmp_path / "user_dir"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ModelFileError, match="not a model bundle"):
        save_bundle(other, kind="toy", members={"m": [np.ones(1)]})
    assert (other / "notes.txt").read_text() == "mine"


# --------------------------------------------------------------------------------------------------
# the background-flow ensemble as a bundle


@pytest.fixture(scope="module")
def small_ensemble(sim):
    """An untrained (random, non-trivial) 2-member RQS ensemble: persistence needs no training."""
    ev = sim.sample_background(3000, seed=1)
    cfg = FlowConfig.quick(flow="rqs", n_layers=2, hidden_units=(8,))
    pre = FlowPreprocessing.fit(ev.features("ranode"), ev.mjj, FEATURES)
    members = []
    for k in range(2):
        flow = ConditionalFlow(cfg, 4, seed=k)
        rng = np.random.default_rng(k)
        for net in flow.networks:
            for w in net.weights:
                value = tf.constant(rng.normal(0, 0.3, w.shape), w.dtype)
                w.assign(w.constraint(value) if w.constraint is not None else value)  # MADE masks
        members.append(flow)
    ens = BackgroundFlowEnsemble(members, pre, cfg, mjj_range=(2650.0, 7000.0), seed=5)
    return ens, ev


def test_flow_ensemble_roundtrip_identical(tmp_path, small_ensemble):
    ens, ev = small_ensemble
    d = ens.save(tmp_path / "flow")
    loaded = BackgroundFlowEnsemble.load(d, expected_features=FEATURES)
    x, mjj = ev.features("ranode")[:500], ev.mjj[:500]
    np.testing.assert_array_equal(loaded.log_prob(x, mjj).numpy(), ens.log_prob(x, mjj).numpy())
    assert loaded.config == ens.config
    assert loaded.mjj_range == ens.mjj_range
    assert loaded.seed == 5
    assert loaded.preprocessing == ens.preprocessing
    for a, b in zip(loaded.members, ens.members, strict=True):
        for pa, pb in zip(a.permutations, b.permutations, strict=True):
            np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(loaded.sample(20, 3500.0, seed=3), ens.sample(20, 3500.0, seed=3))


def test_flow_ensemble_load_errors(tmp_path, small_ensemble):
    ens, _ = small_ensemble
    d = ens.save(tmp_path / "flow")
    with pytest.raises(ModelFileError, match="feature mismatch"):
        BackgroundFlowEnsemble.load(d, expected_features=["mj1", "mj2", "tau21_j1", "tau21_j2"])
    # weights that do not fit the stored architecture (sidecar edited consistently: shape check)
    _edit_sidecar(d, lambda sc: sc["metadata"]["config"].update(hidden_units=[16]))
    with pytest.raises(ModelFileError, match="shape"):
        BackgroundFlowEnsemble.load(d)
    d2 = ens.save(tmp_path / "flow2")
    (d2 / "member_001.npz").unlink()
    with pytest.raises(ModelFileError, match="member_001"):
        BackgroundFlowEnsemble.load(d2)
    save_bundle(tmp_path / "cls", kind="classifier", members={"m": [np.ones(1)]})
    with pytest.raises(ModelFileError, match="expected 'background_flow'"):
        BackgroundFlowEnsemble.load(tmp_path / "cls")
    assert tf.is_tensor(ens.log_prob(np.ones((1, 4)) * 0.5, 3500.0))
