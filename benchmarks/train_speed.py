"""Training throughput (samples/s) of the classifier and the CFM, and CFM sampling speed, per device.

Measures the Keras training step (``train_on_batch``, the loop the package uses) for the ``quick`` and
``paper`` architectures on the CPU and, where TensorFlow sees a GPU, on the GPU; the GPU column reads
"n/a" otherwise. Wall time and process CPU time are both reported: on a shared machine the wall time
includes waiting for the cores.

    python benchmarks/train_speed.py [--samples 60000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from gbi_zfit.models.cfm import CFMConfig, CFMGenerator, build_velocity_network
from gbi_zfit.models.classifier import ClassifierConfig, build_classifier_network
from gbi_zfit.models.device import backend_name, device_plan
from gbi_zfit.models.preprocessing import FeatureTransform


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _time_epochs(model, inputs, target, batch_size, epochs):
    n = len(target)
    model.train_on_batch(_take(inputs, slice(0, batch_size)), target[:batch_size])  # compile
    t0, c0 = time.perf_counter(), _cpu()
    for _ in range(epochs):
        for i in range(0, n, batch_size):
            s = slice(i, i + batch_size)
            model.train_on_batch(_take(inputs, s), target[s])
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return n * epochs / wall, n * epochs / cpu, wall / epochs


def _take(inputs, s):
    return {k: v[s] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[s]


def classifier_speed(hidden, batch_size, n, epochs, rng):
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = (rng.random((n, 1)) < 0.5).astype(np.float32)
    model = build_classifier_network(8, hidden)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))
    return _time_epochs(model, x, y, batch_size, epochs)


def cfm_speed(cfg: CFMConfig, n, epochs, rng):
    inputs = {
        "x_t": rng.normal(size=(n, 6)).astype(np.float32),
        "t": rng.random((n, 1)).astype(np.float32),
        "condition": rng.normal(size=(n, 1)).astype(np.float32),
    }
    target = rng.normal(size=(n, 6)).astype(np.float32)
    model = build_velocity_network(6, 1, width=cfg.width, n_blocks=cfg.n_blocks)
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return _time_epochs(model, inputs, target, cfg.batch_size, epochs), model


def cfm_sampling_speed(model, cfg: CFMConfig, n, rng):
    ident = FeatureTransform(
        ("mj1", "mj2", "tau21_j1", "tau21_j2", "tau32_j1", "tau32_j2"),
        ("log",) * 2 + ("logit",) * 4,
        (4.0,) * 2 + (0.0,) * 4,
        (1.0,) * 6,
    )
    cond = FeatureTransform(("mjj",), ("log",), (8.1,), (0.2,))
    gen = CFMGenerator(model, ident, cond, config=cfg)
    gen.sample(np.full(1000, 3500.0), seed=0)  # compile
    t0, c0 = time.perf_counter(), _cpu()
    gen.sample(rng.uniform(3300, 3700, n), seed=1)
    return n / (time.perf_counter() - t0), n / (_cpu() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=60_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--sample-events", type=int, default=20_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    plan = device_plan()
    gpus = tf.config.list_physical_devices("GPU")
    print(
        f"Keras backend {backend_name()}, TF {tf.__version__}, CPU threads {os.cpu_count()}, GPUs: "
        f"{[g.name for g in gpus] or 'none'} (strategy {plan.strategy})"
    )
    devices = [("CPU", "/CPU:0")] + ([("GPU", "/GPU:0")] if gpus else [])
    rows = []
    for preset in ("quick", "paper"):
        ccfg, fcfg = ClassifierConfig.preset(preset), CFMConfig.preset(preset)
        results = {}
        for dev_name, dev in devices:
            with tf.device(dev):
                c = classifier_speed(ccfg.hidden, ccfg.batch_size, args.samples, args.epochs, rng)
                f, model = cfm_speed(fcfg, args.samples, args.epochs, rng)
                s = cfm_sampling_speed(model, fcfg, args.sample_events, rng)
            results[dev_name] = (c, f, s)
        rows.append((preset, ccfg, fcfg, results))

    def col(results, key, idx):
        if key not in results:
            return "n/a (no GPU)"
        wall, cpu = results[key][idx][0], results[key][idx][1]
        return f"{wall:>9,.0f} ({cpu:,.0f}/CPU-s)"

    print(
        f"\n| model | architecture | batch | CPU samples/s (per CPU-second) | GPU samples/s | CPU s/epoch of {args.samples} |"
    )
    print("|---|---|---|---|---|---|")
    for preset, ccfg, fcfg, res in rows:
        print(
            f"| classifier {preset} | {'-'.join(map(str, ccfg.hidden))} | {ccfg.batch_size} | {col(res, 'CPU', 0)} | "
            f"{col(res, 'GPU', 0)} | {res['CPU'][0][2]:.2f} |"
        )
        print(
            f"| CFM {preset} | width {fcfg.width} × {fcfg.n_blocks} blocks | {fcfg.batch_size} | {col(res, 'CPU', 1)} | "
            f"{col(res, 'GPU', 1)} | {res['CPU'][1][2]:.2f} |"
        )
        print(
            f"| CFM {preset} sampling ({fcfg.ode_method}, {fcfg.ode_steps} steps) | events/s | – | "
            f"{col(res, 'CPU', 2)} | {col(res, 'GPU', 2)} | – |"
        )


if __name__ == "__main__":
    main()
