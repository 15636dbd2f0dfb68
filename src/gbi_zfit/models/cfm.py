"""Conditional flow matching (CFM): the sideband background generator p_B(x | mjj) of GBI-PAWS.

Model
    A residual MLP vector field v(y, t | c) (Keras 3, backend-agnostic: ``keras.layers`` and
    ``keras.ops`` only) on the preprocessed features y (log masses, logit τ ratios, standardised;
    :class:`~gbi_zfit.models.preprocessing.FeatureTransform`), conditioned on the sinusoidal embedding of
    the time t and on c = standardised log mjj. Training minimises the flow-matching loss of the linear
    (rectified) probability path from noise y₀ ~ N(0, 1) to data y₁:

        y_t = (1 − t) y₀ + t y₁,   L = E ‖v(y_t, t | c) − (y₁ − y₀)‖²,

    with fresh y₀ and t ~ U(0, 1) every epoch, early stopping on a fixed validation draw.

Sampling
    y(0) ~ N(0, 1), integrated to t = 1 with a fixed-step ODE solver (:func:`integrate_ode`: Euler,
    midpoint or RK4, ``steps`` configurable), then x = transform⁻¹(y). For the PAWS features the jets
    are re-ordered by mass (j1 the heavier) — the same folding the data have.

SR background
    :meth:`CFMGenerator.sample_sr_background` draws mjj from the sideband fit of p(mjj) in the SR
    (:class:`~gbi_zfit.data.mjj.MjjFitResult`) and x from the CFM; default 3× the expected SR count.

Quality
    :func:`generator_quality` compares a generated sample with a reference (e.g. the benchmark's true
    SR background): per-feature histograms with ratios, KS distances and a classifier two-sample test
    (AUC on a held-out half; 0.5 = indistinguishable, target ≤ TARGET_AUC = 0.51).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from ..data.events import Events, FeatureSet, get_feature_set
from ..errors import ConfigError, FitError, InputError
from ..parallel import spawn_seeds
from .device import device_plan, training_scope
from .preprocessing import FeatureTransform
from .training import TrainingHistory, fit_early_stopping, seed_ints

__all__ = [
    "ODE_METHODS",
    "CFMConfig",
    "CFMGenerator",
    "GeneratorQuality",
    "SRBackgroundSample",
    "TimeEmbedding",
    "build_velocity_network",
    "generator_quality",
    "integrate_ode",
    "train_cfm",
    "two_sample_auc",
]

log = logging.getLogger(__name__)

ODE_METHODS = ("euler", "midpoint", "rk4")
_KIND = "cfm"
_KIND_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# ODE solver


def integrate_ode(
    f: Callable[[np.ndarray, float], np.ndarray],
    y0: np.ndarray,
    *,
    steps: int,
    method: str = "midpoint",
    t0: float = 0.0,
    t1: float = 1.0,
) -> np.ndarray:
    """Integrate dy/dt = f(y, t) from ``t0`` to ``t1`` with ``steps`` fixed steps.

    Parameters
    ----------
    f : callable
        ``f(y, t) -> dy/dt`` with ``y`` an array and ``t`` a float.
    y0 : ndarray
        Initial state.
    steps : int
        Number of equal steps (function calls: 1 per step for Euler, 2 midpoint, 4 RK4).
    method : {"euler", "midpoint", "rk4"}
        Global error O(h), O(h²), O(h⁴).
    """
    if method not in ODE_METHODS:
        raise ConfigError(f"ODE method must be one of {ODE_METHODS}, got {method!r}")
    if int(steps) < 1:
        raise ConfigError(f"steps must be ≥ 1, got {steps}")
    h = (t1 - t0) / int(steps)
    y = np.asarray(y0)
    for i in range(int(steps)):
        t = t0 + i * h
        if method == "euler":
            y = y + h * f(y, t)
        elif method == "midpoint":
            k1 = f(y, t)
            y = y + h * f(y + 0.5 * h * k1, t + 0.5 * h)
        else:
            k1 = f(y, t)
            k2 = f(y + 0.5 * h * k1, t + 0.5 * h)
            k3 = f(y + 0.5 * h * k2, t + 0.5 * h)
            k4 = f(y + h * k3, t + h)
            y = y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
    return y


# ----------------------------------------------------------------------------------------------------
# network


@keras.saving.register_keras_serializable(package="gbi_zfit")
class TimeEmbedding(keras.layers.Layer):
    """Sinusoidal embedding of t ∈ [0, 1]: (sin πf t, cos πf t) for f = 1, 2, 4, …, 2^(n−1)."""

    def __init__(self, n_frequencies: int = 6, **kwargs):
        super().__init__(**kwargs)
        self.n_frequencies = int(n_frequencies)
        self._freqs = (math.pi * 2.0 ** np.arange(self.n_frequencies)).astype(np.float32)[None, :]

    def call(self, t):
        arg = t * ops.convert_to_tensor(self._freqs, dtype=t.dtype)
        return ops.concatenate([ops.sin(arg), ops.cos(arg)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * self.n_frequencies)

    def get_config(self):
        return {**super().get_config(), "n_frequencies": self.n_frequencies}


def build_velocity_network(
    dim: int, cond_dim: int = 1, *, width: int = 128, n_blocks: int = 3, n_frequencies: int = 6, seed: int = 0
):
    """Residual MLP vector field v(y_t, t | c): inputs ``x_t`` (dim), ``t`` (1), ``condition`` (cond_dim)."""
    counter = iter(range(int(seed), int(seed) + 10_000))

    def dense(units, name, zero=False):
        init = "zeros" if zero else keras.initializers.GlorotUniform(seed=next(counter))
        return keras.layers.Dense(units, kernel_initializer=init, name=name)

    x = keras.Input((dim,), name="x_t")
    t = keras.Input((1,), name="t")
    c = keras.Input((cond_dim,), name="condition")
    emb = keras.layers.Concatenate(name="embedding")(
        [TimeEmbedding(n_frequencies, name="time_embedding")(t), c]
    )
    h = dense(width, "input")(keras.layers.Concatenate(name="input_concat")([x, emb]))
    for i in range(int(n_blocks)):
        r = keras.layers.Activation("silu", name=f"block{i}_act0")(h)
        r = dense(width, f"block{i}_dense0")(keras.layers.Concatenate(name=f"block{i}_concat")([r, emb]))
        r = keras.layers.Activation("silu", name=f"block{i}_act1")(r)
        r = dense(width, f"block{i}_dense1")(r)
        h = keras.layers.Add(name=f"block{i}_add")([h, r])
    out = dense(dim, "velocity")(keras.layers.Activation("silu", name="output_act")(h))
    return keras.Model({"x_t": x, "t": t, "condition": c}, out, name="cfm_velocity")


# ----------------------------------------------------------------------------------------------------
# configuration


@dataclass
class CFMConfig:
    """Architecture, training and sampling settings of the CFM generator.

    Presets (:meth:`preset`): ``"paper"`` (width 256, 4 blocks, long training), ``"quick"`` (a usable
    model on 2 CPU cores in a few minutes) and ``"test"`` (seconds).

    Attributes
    ----------
    width, n_blocks, n_frequencies : int
        Hidden width, residual blocks, time-embedding frequencies.
    epochs, patience, batch_size : int
        Maximum epochs, early-stopping patience, batch size.
    learning_rate : float
        Initial Adam learning rate (cosine-decayed over ``epochs`` if ``cosine_decay``).
    validation_fraction : float
        Held-out fraction of the sideband events for early stopping.
    max_events : int or None
        Train on at most this many sideband events (random subset).
    ode_method : {"euler", "midpoint", "rk4"}
        Sampling solver; ``ode_steps`` fixed steps.
    sample_batch : int
        Events per network call when sampling.
    """

    width: int = 256
    n_blocks: int = 4
    n_frequencies: int = 6
    epochs: int = 100
    patience: int = 10
    batch_size: int = 1024
    learning_rate: float = 1e-3
    cosine_decay: bool = True
    validation_fraction: float = 0.1
    max_events: int | None = None
    ode_method: str = "midpoint"
    ode_steps: int = 32
    sample_batch: int = 65536

    def __post_init__(self):
        if (
            min(self.width, self.n_frequencies, self.epochs, self.patience, self.batch_size, self.ode_steps)
            < 1
        ):
            raise ConfigError("width, n_frequencies, epochs, patience, batch_size and ode_steps must be ≥ 1")
        if self.n_blocks < 0:
            raise ConfigError(f"n_blocks must be ≥ 0, got {self.n_blocks}")
        if self.ode_method not in ODE_METHODS:
            raise ConfigError(f"ode_method must be one of {ODE_METHODS}, got {self.ode_method!r}")
        if not (0.0 < self.validation_fraction < 0.9):
            raise ConfigError(f"validation_fraction must be in (0, 0.9), got {self.validation_fraction}")

    @classmethod
    def preset(cls, name: str, **overrides) -> CFMConfig:
        """Named settings ``"paper"``, ``"standard"``, ``"quick"`` or ``"test"``; keyword arguments override.

        ``"standard"`` is the quick generator (its sample passes the two-sample test, AUC ≈ 0.52 at 1M
        background); the presets differ in the classifier (:meth:`gbi_zfit.models.classifier.ClassifierConfig.preset`).
        """
        quick = {
            "width": 96,
            "n_blocks": 2,
            "epochs": 12,
            "patience": 3,
            "batch_size": 1024,
            "max_events": 150_000,
            "ode_steps": 16,
        }
        presets = {
            "paper": {},
            "standard": quick,
            "quick": quick,
            "test": {
                "width": 32,
                "n_blocks": 1,
                "epochs": 4,
                "patience": 2,
                "batch_size": 256,
                "max_events": 4000,
                "ode_steps": 6,
            },
        }
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CFMConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class SRBackgroundSample(NamedTuple):
    """Generated SR background: ``mjj`` (n,) from the p(mjj) fit and ``features`` (n, d) from the CFM."""

    mjj: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]

    def to_events(self) -> Events:
        """As :class:`~gbi_zfit.data.events.Events` (PAWS features only: they hold every jet column)."""
        if tuple(self.feature_names) != get_feature_set("paws").names:
            raise InputError(
                "only PAWS-feature samples can be turned into Events (they need all jet columns)"
            )
        cols = dict(zip(self.feature_names, self.features.T, strict=True))
        return Events({"mjj": self.mjj, **cols}, np.zeros(len(self.mjj), dtype=np.int8))


def sample_sr_background_with(
    draw, mjj_fit, names, *, factor: float = 3.0, n: int | None = None, seed=None
) -> SRBackgroundSample:
    """SR background sample of any generator: mjj from the sideband p(mjj) fit in the SR, then
    ``draw(mjj, seed)`` → features; ``round(factor · n_sr)`` events unless ``n`` is given."""
    if n is None:
        if not (math.isfinite(factor) and factor > 0):
            raise InputError(f"factor must be > 0, got {factor}")
        n = int(round(factor * float(mjj_fit.n_sr)))
    s_mjj, s_x = spawn_seeds(seed, 2)
    mjj = mjj_fit.sample_sr(n, seed=s_mjj)
    return SRBackgroundSample(mjj, draw(mjj, s_x), tuple(names))


# ----------------------------------------------------------------------------------------------------
# the generator


def _order_jets(x: np.ndarray, fs: FeatureSet) -> np.ndarray:
    """Swap jets where mj1 < mj2 (PAWS features), so j1 is the heavier jet as in data."""
    if fs.name != "paws":
        return x
    swap = x[:, 0] < x[:, 1]
    if swap.any():
        x = x.copy()
        for a, b in ((0, 1), (2, 3), (4, 5)):
            x[swap, a], x[swap, b] = x[swap, b], x[swap, a].copy()
    return x


class CFMGenerator:
    """A trained conditional flow-matching generator of background features given mjj.

    Create with :func:`train_cfm` (or :meth:`load`).

    Parameters
    ----------
    network : keras.Model
        The vector field (:func:`build_velocity_network`).
    transform : FeatureTransform
        Feature preprocessing (saved with the model).
    condition_transform : FeatureTransform
        Preprocessing of mjj (log, standardised).
    config : CFMConfig
        Settings (sampling defaults come from here).
    feature_set : str or FeatureSet
        The generated features.
    history : TrainingHistory, optional
        Training record.
    metadata : dict, optional
        Anything else (seed, device, timings).
    """

    def __init__(
        self,
        network,
        transform: FeatureTransform,
        condition_transform: FeatureTransform,
        *,
        config: CFMConfig | None = None,
        feature_set: str | FeatureSet = "paws",
        history: TrainingHistory | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        self.network = network
        self.feature_set = get_feature_set(feature_set)
        if tuple(transform.names) != self.feature_set.names:
            raise InputError(f"transform features {transform.names} ≠ {self.feature_set.names}")
        self.transform = transform
        self.condition_transform = condition_transform
        self.config = config or CFMConfig()
        self.history = history
        self.metadata = dict(metadata or {})

    def velocity(self, y: np.ndarray, t: float, condition: np.ndarray) -> np.ndarray:
        """The learned vector field in the preprocessed space, (n, d)."""
        n = len(y)
        y = np.asarray(y, np.float32)
        cond = np.asarray(condition, np.float32).reshape(n, -1)
        out = np.empty((n, self.feature_set.dim), dtype=np.float64)
        step = max(1, int(self.config.sample_batch))
        for i in range(0, n, step):
            j = min(n, i + step)
            batch = {"x_t": y[i:j], "t": np.full((j - i, 1), t, np.float32), "condition": cond[i:j]}
            out[i:j] = np.asarray(self.network.predict_on_batch(batch), dtype=np.float64)
        return out

    def sample(
        self,
        mjj: np.ndarray,
        *,
        seed: int | np.random.SeedSequence | None = None,
        steps: int | None = None,
        method: str | None = None,
    ) -> np.ndarray:
        """Draw features x ~ p_B(x | mjj), one event per entry of ``mjj`` (GeV); returns (n, d).

        Parameters
        ----------
        mjj : ndarray (n,)
            Conditioning dijet masses.
        seed : int or SeedSequence
            Noise seed.
        steps, method : optional
            ODE steps and solver (default from the config).
        """
        try:
            m = np.asarray(mjj, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"mjj must be numbers in GeV, got {type(mjj).__name__}") from None
        if m.ndim > 1 or m.size == 0:
            raise InputError(
                f"mjj must be a scalar or a non-empty 1-d array (one per event), got shape {m.shape}"
            )
        m = m.reshape(-1)
        if not np.all(np.isfinite(m) & (m > 0)):
            raise InputError("mjj must be finite and > 0 GeV")
        cond = self.condition_transform.forward(m[:, None])
        rng = np.random.default_rng(seed)
        y0 = rng.standard_normal((len(m), self.feature_set.dim))
        y1 = integrate_ode(
            lambda y, t: self.velocity(y, t, cond),
            y0,
            steps=steps or self.config.ode_steps,
            method=method or self.config.ode_method,
        )
        y1 = np.nan_to_num(y1, nan=0.0, posinf=50.0, neginf=-50.0)
        x = self.transform.inverse(np.clip(y1, -50.0, 50.0))
        return _order_jets(x, self.feature_set)

    def sample_sr_background(
        self,
        mjj_fit,
        *,
        factor: float = 3.0,
        n: int | None = None,
        seed: int | np.random.SeedSequence | None = None,
        steps: int | None = None,
        method: str | None = None,
    ) -> SRBackgroundSample:
        """SR background sample: mjj from the sideband p(mjj) fit in the SR, features from the CFM.

        Parameters
        ----------
        mjj_fit : MjjFitResult
            The sideband fit (:func:`~gbi_zfit.data.mjj.fit_sidebands`); its ``n_sr`` is the expected SR
            background count.
        factor : float
            Sample ``round(factor · n_sr)`` events (default 3, as in the paper) unless ``n`` is given.
        """
        return sample_sr_background_with(
            lambda mjj, s: self.sample(mjj, seed=s, steps=steps, method=method),
            mjj_fit,
            self.feature_set.names,
            factor=factor,
            n=n,
            seed=seed,
        )

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save as a model bundle: the network as ``velocity.keras``, transforms and config in the sidecar."""
        from .persistence import save_bundle

        return save_bundle(
            path,
            kind=_KIND,
            kind_version=_KIND_VERSION,
            members={"velocity": self.network},
            features=self.feature_set.names,
            preprocessing={
                "features": self.transform.to_dict(),
                "condition": self.condition_transform.to_dict(),
            },
            metadata={
                "config": self.config.to_dict(),
                "feature_set": self.feature_set.name,
                "history": None if self.history is None else self.history.to_dict(),
                **self.metadata,
            },
        )

    @classmethod
    def load(cls, path: str | Path, *, feature_set: str | FeatureSet = "paws") -> CFMGenerator:
        """Load a bundle written by :meth:`save` (on any Keras backend).

        Raises
        ------
        ModelFileError
            Missing/corrupt/tampered files, another kind of model, or other features.
        """
        from .persistence import parse_bundle

        fs = get_feature_set(feature_set)
        with parse_bundle(
            path, kind=_KIND, kind_version=_KIND_VERSION, expected_features=fs.names, what="CFM bundle"
        ) as (members, sidecar):
            meta = dict(sidecar["metadata"])
            pre = sidecar["preprocessing"]
            history = meta.pop("history", None)
            config = CFMConfig.from_dict(meta.pop("config"))
            meta.pop("feature_set", None)
            return cls(
                members["velocity"],
                FeatureTransform.from_dict(pre["features"]),
                FeatureTransform.from_dict(pre["condition"]),
                config=config,
                feature_set=fs,
                history=None if history is None else TrainingHistory.from_dict(history),
                metadata=meta,
            )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"CFMGenerator({self.feature_set.name}, width {c.width} × {c.n_blocks} blocks, "
            f"{c.ode_method} {c.ode_steps} steps)"
        )


def _split_input(sideband, feature_set: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(sideband, Events):
        return sideband.features(feature_set), sideband.mjj
    try:
        x, mjj = sideband
    except (TypeError, ValueError):
        raise InputError("sideband must be Events or a pair (features (n, d), mjj (n,))") from None
    x = np.asarray(x, dtype=np.float64)
    mjj = np.asarray(mjj, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != feature_set.dim or len(mjj) != len(x):
        raise InputError(
            f"features must be (n, {feature_set.dim}) with n mjj values; got {x.shape}, {mjj.shape}"
        )
    return x, mjj


def train_cfm(
    sideband,
    config: CFMConfig | None = None,
    *,
    feature_set: str | FeatureSet = "paws",
    seed: int | np.random.SeedSequence | None = 0,
    progress: bool = False,
) -> CFMGenerator:
    """Train the CFM background generator p_B(x | mjj) on sideband events.

    Parameters
    ----------
    sideband : Events or (features, mjj)
        Sideband (background-dominated) events.
    config : CFMConfig
        Settings (default: the paper preset).
    feature_set : str or FeatureSet
        Features to model (default PAWS).
    seed : int or SeedSequence
        One seed for subsampling, the validation split, noise and initial weights.
    progress : bool
        Show a progress bar over epochs.
    """
    cfg = config or CFMConfig()
    fs = get_feature_set(feature_set)
    x, mjj = _split_input(sideband, fs)
    if len(x) < 20 or not (np.isfinite(x).all() and np.isfinite(mjj).all()):
        raise InputError(f"need ≥ 20 finite sideband events, got {len(x)}")
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    s_split, s_val, s_epochs, s_init, s_noise = spawn_seeds(ss, 5)
    rng = np.random.default_rng(s_split)
    perm = rng.permutation(len(x))
    if cfg.max_events is not None:
        perm = perm[: cfg.max_events]
    x, mjj = x[perm], mjj[perm]
    transform = FeatureTransform.fit(x, fs.names)
    cond_transform = FeatureTransform.fit(mjj[:, None], ("mjj",))
    y = transform.forward(x).astype(np.float32)
    c = cond_transform.forward(mjj[:, None]).astype(np.float32)
    n_val = max(1, int(round(cfg.validation_fraction * len(y))))
    y_va, c_va, y_tr, c_tr = y[:n_val], c[:n_val], y[n_val:], c[n_val:]

    def path_batch(y1, cond, gen):
        y0 = gen.standard_normal(y1.shape).astype(np.float32)
        t = gen.random((len(y1), 1)).astype(np.float32)
        return {"x_t": (1.0 - t) * y0 + t * y1, "t": t, "condition": cond}, (y1 - y0)

    val_inputs, val_target = path_batch(
        y_va, c_va, np.random.default_rng(s_val)
    )  # fixed: low-noise criterion
    val = (val_inputs["x_t"], val_inputs["t"], val_inputs["condition"], val_target)
    noise_rng = np.random.default_rng(s_noise)
    init_seed = seed_ints(s_init)[0] % (2**31 - 10_000)
    steps_per_epoch = -(-len(y_tr) // cfg.batch_size)
    with training_scope():
        network = build_velocity_network(
            fs.dim, 1, width=cfg.width, n_blocks=cfg.n_blocks, n_frequencies=cfg.n_frequencies, seed=init_seed
        )
        lr = cfg.learning_rate
        if cfg.cosine_decay:
            lr = keras.optimizers.schedules.CosineDecay(
                lr, decay_steps=cfg.epochs * steps_per_epoch, alpha=0.05
            )
        network.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        t0 = time.perf_counter()
        history = fit_early_stopping(
            lambda batch: network.train_on_batch(*path_batch(batch[0], batch[1], noise_rng)),
            lambda a: network.evaluate(
                {"x_t": a[0], "t": a[1], "condition": a[2]}, a[3], batch_size=8192, verbose=0
            ),
            (y_tr, c_tr),
            val,
            batch_size=cfg.batch_size,
            max_epochs=cfg.epochs,
            patience=cfg.patience,
            seed=np.random.default_rng(s_epochs),
            get_weights=network.get_weights,
            set_weights=network.set_weights,
            progress=progress,
            desc="CFM",
        )
    if not any(math.isfinite(v) for v in history.val_loss):
        raise FitError(f"CFM training diverged (validation loss {history.val_loss})")
    return CFMGenerator(
        network,
        transform,
        cond_transform,
        config=cfg,
        feature_set=fs,
        history=history,
        metadata={
            "train_time_s": time.perf_counter() - t0,
            "n_train": len(y_tr),
            "samples_per_second": len(y_tr) * history.n_epochs / max(sum(history.epoch_time), 1e-9),
            "n_val": n_val,
            "seed": {"entropy": str(ss.entropy), "spawn_key": list(ss.spawn_key)},
            "device": device_plan().to_dict(),
        },
    )


# ----------------------------------------------------------------------------------------------------
# quality check


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann–Whitney) statistic, ties averaged."""
    from scipy.stats import rankdata

    labels = np.asarray(labels).astype(bool)
    n1, n0 = labels.sum(), (~labels).sum()
    if n1 == 0 or n0 == 0:
        raise InputError("AUC needs both classes")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def two_sample_auc(
    a: np.ndarray,
    b: np.ndarray,
    *,
    names: Sequence[str],
    seed: int | np.random.SeedSequence | None = 0,
    hidden: Sequence[int] = (64, 64),
    epochs: int = 20,
    patience: int = 3,
    batch_size: int = 512,
    test_fraction: float = 0.5,
) -> tuple[float, float]:
    """Classifier two-sample test: (AUC, its standard error) of an MLP separating ``a`` from ``b``.

    Both samples are cut to the same size, preprocessed with a :class:`FeatureTransform` fitted on ``b``,
    split into train / validation / test parts; the AUC is measured on the test part only. 0.5 means the
    classifier cannot tell them apart. The error is the Hanley–McNeil approximation.
    """
    rng = np.random.default_rng(seed)
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    n = min(len(a), len(b))
    if n < 20:
        raise InputError(f"two-sample test needs ≥ 20 events per sample, got {n}")
    a = a[rng.permutation(len(a))[:n]]
    b = b[rng.permutation(len(b))[:n]]
    tr = FeatureTransform.fit(b, tuple(names))
    x = np.concatenate([tr.forward(np.clip(a, *_domain(tr))), tr.forward(b)]).astype(np.float32)
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)[:, None]
    perm = rng.permutation(2 * n)
    x, y = x[perm], y[perm]
    n_test = int(test_fraction * 2 * n)
    n_val = max(2, (2 * n - n_test) // 5)
    x_te, y_te = x[:n_test], y[:n_test]
    x_va, y_va = x[n_test : n_test + n_val], y[n_test : n_test + n_val]
    x_tr, y_tr = x[n_test + n_val :], y[n_test + n_val :]
    init = int(rng.integers(2**31 - 1000))
    inputs = keras.Input((x.shape[1],))
    h = inputs
    for i, w in enumerate(hidden):
        h = keras.layers.Dense(
            w, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(init + i)
        )(h)
    # every layer's initial weights from the seed: the same seed gives the same AUC
    out = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(init + len(hidden)))(h)
    model = keras.Model(inputs, out)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.BinaryCrossentropy(from_logits=True))

    fit_early_stopping(
        lambda batch: model.train_on_batch(batch[0], batch[1]),
        lambda arrays: model.evaluate(arrays[0], arrays[1], batch_size=8192, verbose=0),
        (x_tr, y_tr),
        (x_va, y_va),
        batch_size=batch_size,
        max_epochs=epochs,
        patience=patience,
        seed=rng,
        get_weights=model.get_weights,
        set_weights=model.set_weights,
        progress=False,
    )
    scores = np.asarray(model.predict(x_te, batch_size=8192, verbose=0)).reshape(-1)
    auc = _auc(scores, y_te.reshape(-1))
    n1 = n0 = max(1.0, len(y_te) / 2.0)
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    err = math.sqrt(
        max(auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2), 0.0) / (n1 * n0)
    )
    return auc, err


def _domain(tr: FeatureTransform) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([1e-12 if k == "log" else (0.0 if k == "logit" else -np.inf) for k in tr.kinds])
    hi = np.array([1.0 if k == "logit" else np.inf for k in tr.kinds])
    return lo, hi


#: Goal of the classifier two-sample test of a generated sample (held-out AUC). See the README's validation
#: section: a generator at AUC 0.507 on the true SR background still mismodels the heavy-jet corner by up
#: to 17 %, so the AUC is a necessary, not a sufficient check (the benchmark adds E_gen[Λ*] − 1 per θ).
TARGET_AUC = 0.51


@dataclass
class GeneratorQuality:
    """Comparison of a generated sample with a reference sample, feature by feature and jointly.

    Attributes
    ----------
    names : list of str
        Features.
    auc, auc_error : float
        Classifier two-sample test (held-out AUC, 0.5 = indistinguishable) and its standard error.
    target_auc : float
        The quality goal (default :data:`TARGET_AUC`); :attr:`passed` says whether ``auc`` ≤ target.
    ks : dict
        Kolmogorov–Smirnov distance per feature.
    histograms : dict
        Per feature: ``edges`` and normalised ``generated`` / ``reference`` densities and their
        statistical errors (for the ratio panels of :func:`gbi_zfit.plotting.generator.plot_generator_quality`).
    means : dict
        Per feature: (generated mean, reference mean).
    n_generated, n_reference : int
        Sample sizes.
    """

    names: list[str]
    auc: float
    auc_error: float
    target_auc: float = TARGET_AUC
    ks: dict[str, float] = field(default_factory=dict)
    histograms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    means: dict[str, tuple[float, float]] = field(default_factory=dict)
    n_generated: int = 0
    n_reference: int = 0

    @property
    def passed(self) -> bool:
        return self.auc <= self.target_auc

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorQuality:
        d = {k: v for k, v in d.items() if k != "passed"}
        return cls(**d)

    def __str__(self) -> str:
        head = (
            f"GeneratorQuality: C2ST AUC = {self.auc:.4f} ± {self.auc_error:.4f} "
            f"(target ≤ {self.target_auc}: {'passed' if self.passed else 'FAILED'}), "
            f"{self.n_generated} generated vs {self.n_reference} reference events"
        )
        lines = [head]
        for n in self.names:
            g, r = self.means.get(n, (math.nan, math.nan))
            lines.append(f"  {n:<10} KS {self.ks.get(n, math.nan):.4f}   mean {g:10.4g} vs {r:10.4g}")
        return "\n".join(lines)


def generator_quality(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    names: Sequence[str] = get_feature_set("paws").names,
    bins: int = 40,
    seed: int | np.random.SeedSequence | None = 0,
    target_auc: float = TARGET_AUC,
    c2st_kwargs: Mapping[str, Any] | None = None,
) -> GeneratorQuality:
    """Compare a generated sample with a reference (e.g. the true SR background of the benchmark).

    Parameters
    ----------
    generated, reference : ndarray (n, d)
        Feature samples.
    names : sequence of str
        Feature names (default PAWS).
    bins : int
        Histogram bins per feature (edges from the reference's 0.1 %–99.9 % quantiles).
    seed : int or SeedSequence
        Seed of the two-sample classifier.
    target_auc : float
        Quality goal of the two-sample test.
    c2st_kwargs : dict, optional
        Passed to :func:`two_sample_auc` (``hidden``, ``epochs``, ...).
    """
    from scipy.stats import ks_2samp

    g = np.asarray(generated, np.float64)
    r = np.asarray(reference, np.float64)
    d = len(names)
    if g.ndim != 2 or r.ndim != 2 or g.shape[1] != d or r.shape[1] != d:
        raise InputError(f"samples must be (n, {d}) arrays; got {g.shape} and {r.shape}")
    auc, err = two_sample_auc(g, r, names=names, seed=seed, **dict(c2st_kwargs or {}))
    q = GeneratorQuality(list(names), auc, err, target_auc, n_generated=len(g), n_reference=len(r))
    for j, name in enumerate(names):
        lo, hi = np.quantile(r[:, j], [0.001, 0.999])
        edges = np.linspace(lo, hi, bins + 1)
        hg, _ = np.histogram(g[:, j], edges)
        hr, _ = np.histogram(r[:, j], edges)
        width = np.diff(edges)
        q.histograms[name] = {
            "edges": edges.tolist(),
            "generated": (hg / len(g) / width).tolist(),
            "reference": (hr / len(r) / width).tolist(),
            "generated_error": (np.sqrt(hg) / len(g) / width).tolist(),
            "reference_error": (np.sqrt(hr) / len(r) / width).tolist(),
        }
        q.ks[name] = float(ks_2samp(g[:, j], r[:, j]).statistic)
        q.means[name] = (float(g[:, j].mean()), float(r[:, j].mean()))
    return q
