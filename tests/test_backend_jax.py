"""Backend independence and device selection.

The same model code trains under Keras' JAX backend (in a subprocess: the backend is fixed at import);
the saved bundles then load in this TensorFlow process, where the classifier runs in pure TensorFlow —
the numbers must agree. Device selection is tested as a pure function on CPU, and for real where GPUs
exist (marker ``gpu``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from gbi_zfit.models.device import DevicePlan, backend_name, device_plan, plan_devices, training_scope

_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    from gbi_zfit.data.benchmark import LHCOSim
    from gbi_zfit.models.cfm import CFMConfig, train_cfm
    from gbi_zfit.models.classifier import ClassifierConfig, build_classifier_network, train_classifier_ensemble

    out = sys.argv[1]
    sim = LHCOSim()
    background = sim.sample_background_sr(3000, seed=1).features("paws")
    cfg = ClassifierConfig.preset("test", n_members=1, epochs=1)
    ensemble = train_classifier_ensemble(background, cfg, seed=1)
    ensemble.save(out + "/classifier")
    # the member's own Keras forward pass under JAX, at θ = (300, 100)
    x = sim.sample_background_sr(300, seed=2).features("paws")
    net = build_classifier_network(8, cfg.hidden)
    net.set_weights(ensemble.member_weights[0])
    theta = (np.array([300.0, 100.0]) - ensemble._center) / ensemble._scale
    inputs = np.concatenate([ensemble.transform.forward(x), np.tile(theta, (len(x), 1))], axis=1)
    logits = np.asarray(net.predict(inputs.astype(np.float32), verbose=0))[:, 0]

    sideband = sim.signal_region.sidebands(sim.sample_background(6000, seed=3))
    cfm = train_cfm(sideband, CFMConfig.preset("test", epochs=1, max_events=2000), seed=4)
    cfm.save(out + "/cfm")
    y = np.random.default_rng(5).standard_normal((200, 6))
    cond = np.linspace(-1.0, 1.0, 200)[:, None]
    velocity = cfm.velocity(y, 0.3, cond)
    np.savez(out + "/reference.npz", x=x, logits=logits, y=y, cond=cond, velocity=velocity)
    print("backend", ensemble.metadata["device"]["backend"])
    """
)


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory):
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install jax) — the JAX-backend test needs it")
    out = tmp_path_factory.mktemp("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "ZFIT_DISABLE_TF_WARNINGS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"training under KERAS_BACKEND=jax failed:\n{proc.stdout}\n{proc.stderr[-5000:]}")
    assert "backend jax" in proc.stdout
    return out


def test_jax_trained_classifier_evaluates_in_tensorflow(jax_run):
    from gbi_zfit.models.classifier import ClassifierEnsemble

    ref = np.load(jax_run / "reference.npz")
    ensemble = ClassifierEnsemble.load(jax_run / "classifier")
    assert ensemble.metadata["device"]["backend"] == "jax"
    # pure-TensorFlow forward pass (float64) vs the member's Keras forward pass under JAX (float32)
    logits_tf = ensemble.member_logits(ref["x"], 300.0, 100.0)[0]
    np.testing.assert_allclose(logits_tf, ref["logits"], rtol=1e-5, atol=1e-5)
    # and the fit-time entry point runs inside a TF graph with a θ gradient
    mx = tf.Variable(300.0, dtype=tf.float64)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(tf.function(ensemble.log_ratio)(tf.constant(ref["x"]), mx, 100.0))
    assert np.isfinite(float(tape.gradient(total, mx)))


def test_jax_trained_cfm_loads_under_tensorflow(jax_run):
    from gbi_zfit.models.cfm import CFMGenerator

    ref = np.load(jax_run / "reference.npz")
    cfm = CFMGenerator.load(jax_run / "cfm")
    assert cfm.metadata["device"]["backend"] == "jax"
    np.testing.assert_allclose(
        cfm.velocity(ref["y"], 0.3, ref["cond"]), ref["velocity"], rtol=1e-5, atol=1e-5
    )


# ----------------------------------------------------------------------------------------------------
# devices


def test_plan_devices_decision_table():
    assert plan_devices("tensorflow", []) == DevicePlan("tensorflow", (), "default", "cpu")
    one = plan_devices("tensorflow", ["/physical_device:GPU:0"])
    assert (one.strategy, one.device, one.n_gpus) == ("default", "gpu", 1)
    two = plan_devices("tensorflow", ["/physical_device:GPU:0", "/physical_device:GPU:1"])
    assert (two.strategy, two.device, two.n_gpus) == ("mirrored", "multi-gpu", 2)
    jax = plan_devices("jax", ["/physical_device:GPU:0", "/physical_device:GPU:1"])
    assert jax.strategy == "none"  # no tf.distribute under JAX
    assert two.to_dict()["strategy"] == "mirrored"


def test_training_scope_on_this_machine():
    assert backend_name() == "tensorflow"
    plan = device_plan()
    assert plan.n_gpus == len(tf.config.list_physical_devices("GPU"))
    with training_scope(plan) as strategy:
        if plan.n_gpus > 1:
            assert isinstance(strategy, tf.distribute.MirroredStrategy)
        else:
            assert strategy is tf.distribute.get_strategy()
    with training_scope(plan_devices("jax", [])) as strategy:
        assert strategy is None


@pytest.mark.gpu
@pytest.mark.skipif(not tf.config.list_physical_devices("GPU"), reason="no GPU visible to TensorFlow")
def test_training_uses_gpus(sim):
    """On GPU machines: several GPUs → MirroredStrategy over all of them; a short training runs in it."""
    from gbi_zfit.models.classifier import ClassifierConfig, train_classifier_ensemble

    plan = device_plan()
    with training_scope(plan) as strategy:
        if plan.n_gpus > 1:
            assert isinstance(strategy, tf.distribute.MirroredStrategy)
            assert strategy.num_replicas_in_sync == plan.n_gpus
    background = sim.sample_background_sr(3000, seed=1).features("paws")
    model = train_classifier_ensemble(background, ClassifierConfig.preset("test", n_members=1, epochs=1))
    assert model.metadata["device"]["strategy"] == ("mirrored" if plan.n_gpus > 1 else "default")
