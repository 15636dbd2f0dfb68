"""The parameterized PAWS classifier g(x, θ) and its ensemble as a ratio model Λ_FS(x | θ).

Training (any Keras 3 backend)
    An MLP (paper: 256-128-64, ReLU) sees the preprocessed features x (log masses, logit τ ratios,
    standardised; :class:`~gbi_zfit.models.preprocessing.FeatureTransform`) and the scaled masses θ as
    extra inputs, and outputs a logit. Signal comes from the benchmark at a grid of θ (default
    mX, mY ∈ 50…600 GeV, step 50, the same number of events at every point); background is the SR
    background sample (from the CFM generator, or the true benchmark background for ablations) with θ
    drawn from the same grid, uniformly — so N_B(θ)/N_S(θ) = N_B/N_S for every θ. Loss: binary
    cross-entropy on the logit (the same optimum as a sigmoid output, numerically safer); early stopping
    on a stratified validation split. Members differ in their signal realisation, background split,
    θ assignment and initial weights (one :class:`numpy.random.SeedSequence` child each) and are trained
    through the :mod:`gbi_zfit.parallel` executor.

Evaluation (always TensorFlow, float64 output)
    :class:`ClassifierEnsemble` keeps the member weights as stacked arrays (K, n_in, n_out) and evaluates
    all members in one batched matmul per layer, in pure TensorFlow — whatever backend trained them — so
    zfit and the fit engine call it inside their graphs with θ as differentiable tensors. With
    z_k the member logits,

        log Λ_FS = log κ(θ) + log⟨g⟩ − log(1 − ⟨g⟩)
                 = log κ(θ) + LSE_k log σ(z_k) − LSE_k log σ(−z_k),

    which is stable for any logits. κ modes: ``"sampled"`` (the default: κ(θ) = 1 / E_B[⟨g⟩/(1 − ⟨g⟩)] on a
    held-out background reference, tabulated every 25 GeV and interpolated by a bicubic spline;
    :mod:`gbi_zfit.models.kappa`) and ``"fixed"`` (κ = N_B/N_S of the balanced training set, exact only for
    a perfectly trained classifier: a quick ensemble's E_B[Λ] then varies by a factor 2 across θ).

Fast path (DESIGN §5)
    :meth:`~ClassifierEnsemble.precompute` transforms the events once per data set (cast to
    ``fast_dtype`` and cut into chunks); :meth:`~ClassifierEnsemble.log_ratio_precomputed` runs the
    network chunk by chunk in ``fast_dtype`` (default float32) and combines the members in float64. Its θ
    gradient is exact and cheap: θ enters only the first layer, so one backward pass per chunk gives
    ∂ log Λ_i/∂θ for every event i; the per-event gradients are attached with ``tf.custom_gradient``.
    Memory is bounded by the chunk size (the exact path keeps all activations of all events for
    autodiff). With ``fast_dtype="float64"`` the fast path equals the exact path to rounding.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from .._util import array_digest, seed_key
from ..data.benchmark import LHCOSim
from ..data.events import FeatureSet, get_feature_set
from ..errors import ConfigError, FitError, InputError
from ..parallel import Executor, ResultStore, SerialExecutor, run_tasks, spawn_seeds
from .base import RatioModel
from .device import device_plan, training_scope
from .kappa import KappaSurface, build_kappa_surface, regular_nodes
from .preprocessing import FeatureTransform
from .training import fit_early_stopping, seed_ints

__all__ = [
    "KAPPA_MODES",
    "ClassifierConfig",
    "ClassifierEnsemble",
    "KappaSurface",
    "build_classifier_network",
    "train_classifier_ensemble",
]

log = logging.getLogger(__name__)

KAPPA_MODES = ("fixed", "sampled")
_KIND = "classifier"
_KIND_VERSION = 1
_PAPER_GRID = tuple(float(m) for m in range(50, 601, 50))
_F64 = tf.float64


# ----------------------------------------------------------------------------------------------------
# configuration


@dataclass
class ClassifierConfig:
    """Architecture, training grid and training settings of the classifier ensemble.

    Use :meth:`preset` for the named settings: ``"paper"`` (256-128-64, 10 members, full grid),
    ``"standard"`` (small models trained to convergence, ≈ 15 min on 2 CPU cores), ``"quick"`` (≲ 10 min)
    and ``"test"`` (seconds).

    Attributes
    ----------
    hidden : tuple of int
        Widths of the ReLU hidden layers.
    n_members : int
        Ensemble size.
    mx_grid, my_grid : tuple of float
        Training masses (GeV); every (mX, mY) pair of the two lists is a training point.
    n_signal_per_point : int
        Signal events per grid point (balanced).
    n_background : int or None
        Background events per member (``None``: all of the given sample).
    epochs, patience, batch_size : int
        Maximum epochs, early-stopping patience, batch size.
    learning_rate : float
        Adam learning rate.
    validation_fraction : float
        Stratified validation split for early stopping.
    kappa_mode : {"sampled", "fixed"}
        Default κ mode of the trained ensemble (both are always computed).
    kappa_step : float
        Node spacing (GeV) of the table of the sampled log κ(θ).
    kappa_reference_size : int
        Background events held out of training to compute the sampled κ (at most a third of the sample).
    fast_dtype : {"float32", "float64"}
        Precision of the fast fit path.
    """

    hidden: tuple[int, ...] = (256, 128, 64)
    n_members: int = 10
    mx_grid: tuple[float, ...] = _PAPER_GRID
    my_grid: tuple[float, ...] = _PAPER_GRID
    n_signal_per_point: int = 2500
    n_background: int | None = None
    epochs: int = 100
    patience: int = 10
    batch_size: int = 1024
    learning_rate: float = 1e-3
    validation_fraction: float = 0.2
    kappa_mode: str = "sampled"
    kappa_step: float = 25.0
    kappa_reference_size: int = 100_000
    fast_dtype: str = "float32"

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        self.mx_grid = tuple(float(m) for m in self.mx_grid)
        self.my_grid = tuple(float(m) for m in self.my_grid)
        if not self.hidden or min(self.hidden) < 1:
            raise ConfigError(f"hidden must list positive layer widths, got {self.hidden}")
        if self.n_members < 1 or self.n_signal_per_point < 2 or self.epochs < 1 or self.patience < 1:
            raise ConfigError("n_members, epochs, patience must be ≥ 1 and n_signal_per_point ≥ 2")
        if not (0.0 < self.validation_fraction < 0.9):
            raise ConfigError(f"validation_fraction must be in (0, 0.9), got {self.validation_fraction}")
        if self.kappa_mode not in KAPPA_MODES:
            raise ConfigError(f"kappa_mode must be one of {KAPPA_MODES}, got {self.kappa_mode!r}")
        if not (self.kappa_step > 0 and self.kappa_reference_size >= 2):
            raise ConfigError("kappa_step must be positive and kappa_reference_size ≥ 2")
        if self.fast_dtype not in ("float32", "float64"):
            raise ConfigError(f"fast_dtype must be 'float32' or 'float64', got {self.fast_dtype!r}")
        for name in ("mx_grid", "my_grid"):
            grid = getattr(self, name)
            if len(grid) < 1 or min(grid) < 25.0 or max(grid) > 700.0 or len(set(grid)) != len(grid):
                raise ConfigError(f"{name} must hold distinct masses in [25, 700] GeV, got {grid}")

    @classmethod
    def preset(cls, name: str, **overrides) -> ClassifierConfig:
        """Named settings: ``"paper"``, ``"standard"``, ``"quick"`` or ``"test"``; keyword arguments override.

        ``"quick"`` (≈ 8 min on 2 CPU cores at 1M background) stops its members at 12 epochs, still
        improving; ``"standard"`` (same networks, 2500 signal events per grid point, up to 40 epochs with
        patience 8: ≈ 10 min of training on 2 loaded cores) fits the 1M benchmark with Z_learned/Z_oracle
        ≈ 1.0 and median μ̂/μ 1.19–1.20 at S/√B = 1 (oracle 1.03–1.05). With 1200 signal events per point
        and patience 4 (the preset before) two of three members under-estimated Λ where the signal peaks,
        and μ̂/μ was 1.43–1.45 (``ratio_response`` measures this in a minute).
        """
        quick = {
            "hidden": (128, 64, 32),
            "n_members": 3,
            "n_signal_per_point": 600,
            "n_background": 90_000,
            "epochs": 12,
            "patience": 3,
            "batch_size": 512,
        }
        presets = {
            "paper": {},
            "standard": {
                **quick,
                "n_background": 160_000,
                "n_signal_per_point": 2500,
                "epochs": 40,
                "patience": 8,
            },
            "quick": quick,
            "test": {
                "hidden": (32, 16),
                "n_members": 2,
                "mx_grid": (100.0, 300.0, 500.0),
                "my_grid": (100.0, 300.0, 500.0),
                "n_signal_per_point": 300,
                "n_background": 3000,
                "epochs": 3,
                "patience": 2,
                "batch_size": 256,
                "kappa_step": 50.0,
                "kappa_reference_size": 2000,
            },
        }
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    @property
    def grid(self) -> np.ndarray:
        """All training points (mX, mY), shape (P, 2)."""
        return np.array([(a, b) for a in self.mx_grid for b in self.my_grid], dtype=np.float64)

    @property
    def theta_bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return (min(self.mx_grid), max(self.mx_grid)), (min(self.my_grid), max(self.my_grid))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("hidden", "mx_grid", "my_grid"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassifierConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _theta_scaling(bounds) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-width per axis, so the training range maps to [−1, 1] (half-width ≥ 25 GeV)."""
    lo = np.array([b[0] for b in bounds], dtype=np.float64)
    hi = np.array([b[1] for b in bounds], dtype=np.float64)
    return 0.5 * (lo + hi), np.maximum(0.5 * (hi - lo), 25.0)


# ----------------------------------------------------------------------------------------------------
# the Keras network (training side)


def build_classifier_network(n_inputs: int, hidden: Sequence[int], seed: int = 0):
    """The Keras 3 MLP: ``n_inputs`` → ReLU layers ``hidden`` → one logit (seeded Glorot init)."""
    import keras

    inputs = keras.Input((n_inputs,), name="inputs")
    h = inputs
    for i, width in enumerate(hidden):
        h = keras.layers.Dense(
            int(width),
            activation="relu",
            kernel_initializer=keras.initializers.GlorotUniform(seed=int(seed) + i),
            name=f"hidden_{i}",
        )(h)
    out = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(seed=int(seed) + len(hidden)), name="logit"
    )(h)
    return keras.Model(inputs, out, name="parameterized_classifier")


class _MemberTrainer:
    """Per-worker state: the background sample, the transform and the config (built once per worker)."""

    def __init__(self, background: np.ndarray, config: dict, transform: dict, sim: LHCOSim, feature_set: str):
        self.background = np.asarray(background, dtype=np.float64)
        self.config = ClassifierConfig.from_dict(config)
        self.transform = FeatureTransform.from_dict(transform)
        self.sim = sim
        self.feature_set = get_feature_set(feature_set)

    def inputs(self, x: np.ndarray, theta: np.ndarray) -> np.ndarray:
        center, scale = _theta_scaling(self.config.theta_bounds)
        return np.concatenate([self.transform.forward(x), (theta - center) / scale], axis=1).astype(
            np.float32
        )

    def member_data(self, seed: np.random.SeedSequence):
        """Training data of one member: (inputs, labels, val inputs, val labels, shuffling rng, N_B, N_S).

        Signal at every grid point (balanced), background with θ drawn uniformly from the grid; the
        validation split is stratified, so N_B/N_S is the same in both parts.
        """
        cfg = self.config
        s_sig, s_bkg = seed.spawn(2)
        grid = cfg.grid
        n_pt = cfg.n_signal_per_point
        n_val_pt = max(1, int(round(cfg.validation_fraction * n_pt)))
        sig_seeds = s_sig.spawn(len(grid))
        sig_tr, sig_va, th_tr, th_va = [], [], [], []
        for (mx, my), ss in zip(grid, sig_seeds, strict=True):
            x = self.sim.sample_signal(n_pt, mx, my, seed=ss, region="sr").features(self.feature_set)
            sig_va.append(x[:n_val_pt])
            sig_tr.append(x[n_val_pt:])
            th_va.append(np.tile([mx, my], (n_val_pt, 1)))
            th_tr.append(np.tile([mx, my], (n_pt - n_val_pt, 1)))
        rng = np.random.default_rng(s_bkg)
        n_b = (
            len(self.background) if cfg.n_background is None else min(cfg.n_background, len(self.background))
        )
        bkg = self.background[rng.permutation(len(self.background))[:n_b]]
        theta_b = grid[rng.integers(len(grid), size=n_b)]
        n_b_val = max(1, int(round(cfg.validation_fraction * n_b)))
        x_tr = np.concatenate([*sig_tr, bkg[n_b_val:]])
        t_tr = np.concatenate([*th_tr, theta_b[n_b_val:]])
        y_tr = np.concatenate([np.ones(sum(len(s) for s in sig_tr)), np.zeros(n_b - n_b_val)])
        x_va = np.concatenate([*sig_va, bkg[:n_b_val]])
        t_va = np.concatenate([*th_va, theta_b[:n_b_val]])
        y_va = np.concatenate([np.ones(n_val_pt * len(grid)), np.zeros(n_b_val)])
        return (
            self.inputs(x_tr, t_tr),
            y_tr.astype(np.float32)[:, None],
            self.inputs(x_va, t_va),
            y_va.astype(np.float32)[:, None],
            rng,
            n_b,
            n_pt * len(grid),
        )

    def train(self, index: int, seed: np.random.SeedSequence, progress: bool = False) -> dict:
        import keras

        cfg = self.config
        s_data, s_init = seed.spawn(2)
        x_tr, y_tr, x_va, y_va, rng, n_b, n_s = self.member_data(s_data)
        init_seed = seed_ints(s_init)[0] % (2**31 - 1000)
        with training_scope():
            model = build_classifier_network(x_tr.shape[1], cfg.hidden, init_seed)
            model.compile(
                optimizer=keras.optimizers.Adam(cfg.learning_rate),
                loss=keras.losses.BinaryCrossentropy(from_logits=True),
            )
            history = fit_early_stopping(
                lambda batch: model.train_on_batch(batch[0], batch[1]),
                lambda arrays: model.evaluate(arrays[0], arrays[1], batch_size=8192, verbose=0),
                (x_tr, y_tr),
                (x_va, y_va),
                batch_size=cfg.batch_size,
                max_epochs=cfg.epochs,
                patience=cfg.patience,
                seed=rng,
                get_weights=model.get_weights,
                set_weights=model.set_weights,
                progress=progress,
                desc=f"classifier member {index}",
            )
        if not any(math.isfinite(v) for v in history.val_loss):
            raise FitError(f"classifier member {index} diverged (validation loss {history.val_loss})")
        return {
            "weights": [np.asarray(w, np.float64) for w in model.get_weights()],
            "history": {**history.to_dict(), "n_train": len(y_tr), "n_val": len(y_va)},
            "n_background": n_b,
            "n_signal": n_s,
            "seed": {"entropy": str(seed.entropy), "spawn_key": list(seed.spawn_key)},
        }


def _train_member_task(state: _MemberTrainer, item) -> dict:
    index, seed = item
    return state.train(index, seed)


def train_classifier_ensemble(
    background: np.ndarray,
    config: ClassifierConfig | None = None,
    *,
    sim: LHCOSim | None = None,
    feature_set: str | FeatureSet = "paws",
    seed: int | np.random.SeedSequence | None = 0,
    executor: Executor | None = None,
    kappa_reference: np.ndarray | None = None,
    kappa_reference_log_weights: np.ndarray | None = None,
    progress: bool = False,
    store: str | os.PathLike | ResultStore | None = None,
) -> ClassifierEnsemble:
    """Train the classifier ensemble and return it as a ratio model.

    Parameters
    ----------
    background : ndarray (n, d)
        SR background features: the CFM sample (:meth:`~gbi_zfit.models.cfm.CFMGenerator.sample_sr_background`,
        the GBI-PAWS method) or, to separate generator from classifier errors, the true SR background of
        the benchmark.
    config : ClassifierConfig
        Settings (default: the paper's).
    sim : LHCOSim
        Signal simulator (default: the standard benchmark).
    seed : int or SeedSequence
        Member ``i`` uses child ``i`` of ``SeedSequence(seed)``, whatever the executor.
    executor : Executor
        Where members train (default in-process; a Dask executor trains them in parallel).
    kappa_reference : ndarray (m, d), optional
        Background sample for the sampled κ (default: ``kappa_reference_size`` events of ``background``,
        at most a third, held out of training).
    kappa_reference_log_weights : ndarray (m,), optional
        Importance weights of ``kappa_reference`` (e.g. from
        :meth:`~gbi_zfit.models.flowgen.FlowGenerator.sample_sr_reference`).
    progress : bool
        Show progress bars.
    store : path or ResultStore, optional
        A ``.jsonl`` result store: each member is saved there when it finishes and members already in it
        are not trained again, so an interrupted training resumes (same background, configuration and
        seed; a store written for others raises :class:`~gbi_zfit.errors.ConfigError`).
    """
    cfg = config or ClassifierConfig()
    fs = get_feature_set(feature_set)
    sim = sim or LHCOSim()
    bkg = np.asarray(background, dtype=np.float64)
    if bkg.ndim != 2 or bkg.shape[1] != fs.dim or len(bkg) < 10 or not np.isfinite(bkg).all():
        raise InputError(
            f"background must be a finite (n ≥ 10, {fs.dim}) array of {fs.names}; got {bkg.shape}"
        )
    transform = FeatureTransform.fit(bkg, fs.names)
    *seeds, kappa_seed = spawn_seeds(seed, cfg.n_members + 1)
    split_seed, check_seed = kappa_seed.spawn(2)
    train_bkg = bkg
    if kappa_reference is None:
        # hold the κ reference out of training: on events the members were fitted to, ⟨g⟩ is biased
        # towards background, and κ must be right to ~1 % (see gbi_zfit.models.kappa)
        n_ref = min(cfg.kappa_reference_size, len(bkg) // 3)
        perm = np.random.default_rng(split_seed).permutation(len(bkg))
        kappa_reference, train_bkg = bkg[perm[:n_ref]], bkg[perm[n_ref:]]
    factory = functools.partial(_MemberTrainer, train_bkg, cfg.to_dict(), transform.to_dict(), sim, fs.name)
    if store is not None and not isinstance(store, ResultStore):
        store = ResultStore(
            store,
            {
                "task": "classifier_ensemble",
                "config": {k: v for k, v in cfg.to_dict().items() if k != "n_members"},
                "feature_set": fs.name,
                "seed": seed_key(seed),
                "data": array_digest(train_bkg),
                "signal_model": repr(sim.signal),
            },
        )
    t0 = time.perf_counter()
    results = run_tasks(
        executor or SerialExecutor(),
        factory,
        _train_member_task,
        list(enumerate(seeds)),
        store=store,
        desc="classifier ensemble",
        progress=progress,
    )
    train_time = time.perf_counter() - t0
    ratios = [r["n_background"] / r["n_signal"] for r in results]
    ensemble = ClassifierEnsemble(
        [[np.asarray(w, np.float64) for w in r["weights"]] for r in results],
        transform,
        theta_bounds=cfg.theta_bounds,
        log_kappa=float(np.log(np.mean(ratios))),
        kappa_mode="fixed",
        feature_set=fs,
        fast_dtype=cfg.fast_dtype,
        metadata={
            "config": cfg.to_dict(),
            "histories": [r["history"] for r in results],
            "seeds": [r["seed"] for r in results],
            "kappa_fixed_per_member": ratios,
            "train_time_s": train_time,
            "device": device_plan().to_dict(),
        },
    )
    t0 = time.perf_counter()
    ensemble.calibrate_kappa(
        kappa_reference, step=cfg.kappa_step, seed=check_seed, log_weights=kappa_reference_log_weights
    )
    ensemble.metadata["kappa_time_s"] = time.perf_counter() - t0
    ensemble.kappa_mode = cfg.kappa_mode
    return ensemble


# ----------------------------------------------------------------------------------------------------
# the ensemble as a ratio model (evaluation side, pure TensorFlow)


def _log_odds(z: tf.Tensor) -> tf.Tensor:
    """log⟨σ(z)⟩ − log(1 − ⟨σ(z)⟩) over the member axis 0 of logits z (K, n); stable for any z."""
    return tf.reduce_logsumexp(-tf.math.softplus(-z), axis=0) - tf.reduce_logsumexp(
        -tf.math.softplus(z), axis=0
    )


def _as_f64(v) -> tf.Tensor:
    """A float64 scalar tensor; Python/numpy numbers are converted directly (``tf.cast`` of a Python float
    would round it to float32 first: 325.00001 → 325.0)."""
    if isinstance(v, (int, float, np.number, np.ndarray)):
        return tf.constant(np.asarray(v, dtype=np.float64))
    return tf.cast(v, _F64)


def _is_eager_number(v) -> bool:
    if isinstance(v, (int, float, np.number)):
        return True
    return isinstance(v, tf.Tensor) and tf.executing_eagerly() and hasattr(v, "numpy") and v.shape.rank == 0


class ClassifierEnsemble(RatioModel):
    """Λ_FS(x | θ) = κ(θ) ⟨g⟩ / (1 − ⟨g⟩) of an ensemble of parameterized classifiers.

    Normally created by :func:`train_classifier_ensemble` or :meth:`load`; implements
    :class:`~gbi_zfit.models.base.RatioModel`, so :class:`~gbi_zfit.pdf.RatioPDF`,
    :class:`~gbi_zfit.inference.SignalFitter`, profiles and toys use it like the oracle.

    Parameters
    ----------
    members : sequence of weight lists
        Per member ``[W_0, b_0, …, W_out, b_out]`` as returned by ``keras.Model.get_weights()`` of
        :func:`build_classifier_network`; W_0 has d + 2 rows (features, then scaled mX, mY).
    transform : FeatureTransform
        The feature preprocessing used in training.
    theta_bounds : ((float, float), (float, float))
        Training range of mX and mY (GeV); θ outside raises :class:`~gbi_zfit.errors.ParameterRangeError`
        at the API boundary (:meth:`check_theta`, numpy helpers, eager calls).
    log_kappa : float
        log κ of the ``"fixed"`` mode (log N_B/N_S of the training set).
    kappa_mode : {"fixed", "sampled"}
        Which κ to use; ``"sampled"`` needs :meth:`calibrate_kappa` (or a saved surface).
    kappa_surface : KappaSurface, optional
        The sampled log κ(θ) table (:mod:`gbi_zfit.models.kappa`).
    feature_set : str or FeatureSet
        Features the model expects.
    fast_dtype : {"float32", "float64"}
        Precision of the network in the fast path; members are always combined in float64.
    chunk_size : int, optional
        Events per chunk in the fast path (default: ~64 MB of activations per chunk).
    metadata : dict, optional
        Training configuration, histories, seeds (kept in the saved bundle).
    """

    def __init__(
        self,
        members: Sequence[Sequence[np.ndarray]],
        transform: FeatureTransform,
        *,
        theta_bounds,
        log_kappa: float,
        kappa_mode: str = "fixed",
        kappa_surface: KappaSurface | None = None,
        feature_set: str | FeatureSet = "paws",
        fast_dtype: str = "float32",
        chunk_size: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        self.feature_set = get_feature_set(feature_set)
        if tuple(transform.names) != tuple(self.feature_set.names):
            raise InputError(
                f"transform features {transform.names} ≠ model features {self.feature_set.names}"
            )
        self.transform = transform
        (a, b), (c, d) = theta_bounds
        self.theta_bounds = ((float(a), float(b)), (float(c), float(d)))
        if not all(math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi for lo, hi in self.theta_bounds):
            raise InputError(
                f"theta_bounds must be finite ((low, high), (low, high)) with 0 < low < high; got {theta_bounds}"
            )
        self._center, self._scale = _theta_scaling(self.theta_bounds)
        self.log_kappa_fixed = float(log_kappa)
        if not math.isfinite(self.log_kappa_fixed):
            raise InputError(f"log_kappa must be finite, got {log_kappa}")
        self.kappa_surface = kappa_surface
        self.kappa_mode = kappa_mode
        if fast_dtype not in ("float32", "float64"):
            raise InputError(f"fast_dtype must be 'float32' or 'float64', got {fast_dtype!r}")
        self.fast_dtype = fast_dtype
        self.metadata = dict(metadata or {})
        self._set_members(members)
        if chunk_size is None:
            per_event = self.n_members * sum(self.hidden) * (4 if fast_dtype == "float32" else 8) * 3
            chunk_size = int(np.clip((64 << 20) // per_event, 256, 65536))
        self.chunk_size = int(chunk_size)

    # -- construction -------------------------------------------------------------------------------
    def _set_members(self, members) -> None:
        members = [[np.asarray(w, dtype=np.float64) for w in m] for m in members]
        if not members:
            raise InputError("an ensemble needs at least one member")
        shapes = [tuple(w.shape for w in m) for m in members]
        if len(set(shapes)) != 1:
            raise InputError(f"ensemble members have different architectures: {set(shapes)}")
        ws = members[0]
        d = self.feature_set.dim
        if len(ws) < 4 or len(ws) % 2 or ws[0].shape[0] != d + 2 or ws[-1].shape[-1] != 1:
            raise InputError(
                f"member weights must be [W_0, b_0, …, W_out, b_out] with W_0 of shape ({d + 2}, h) and a "
                f"single output; got shapes {shapes[0]}"
            )
        self._members_np = members
        self.hidden = tuple(int(w.shape[1]) for w in ws[0:-2:2])
        stacked = [np.stack([m[i] for m in members]) for i in range(len(ws))]  # (K, in, out) / (K, out)
        self._layers = {}
        for name, dt in (("float64", tf.float64), ("float32", tf.float32)):
            w0 = stacked[0]
            layers = {
                "wx": tf.constant(w0[:, :d, :], dt),  # (K, d, H1)
                "wt": tf.constant(w0[:, d:, :], dt),  # (K, 2, H1)
                "b0": tf.constant(stacked[1][:, None, :], dt),  # (K, 1, H1)
                "rest": [
                    (tf.constant(stacked[i], dt), tf.constant(stacked[i + 1][:, None, :], dt))
                    for i in range(2, len(stacked), 2)
                ],
            }
            self._layers[name] = layers

    @property
    def n_members(self) -> int:
        return len(self._members_np)

    @property
    def member_weights(self) -> list[list[np.ndarray]]:
        """Copies of the member weights (``keras.Model.set_weights`` order)."""
        return [[w.copy() for w in m] for m in self._members_np]

    @property
    def kappa_mode(self) -> str:
        return self._kappa_mode

    @kappa_mode.setter
    def kappa_mode(self, mode: str) -> None:
        if mode not in KAPPA_MODES:
            raise InputError(f"kappa_mode must be one of {KAPPA_MODES}, got {mode!r}")
        if mode == "sampled" and self.kappa_surface is None:
            raise InputError("kappa_mode='sampled' needs a κ surface: call calibrate_kappa(reference) first")
        self._kappa_mode = mode

    def with_kappa(self, mode: str) -> ClassifierEnsemble:
        """A copy sharing the weights, with another κ mode."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.kappa_mode = mode
        return new

    # -- θ handling ---------------------------------------------------------------------------------
    def _scaled_theta(self, mx, my) -> tuple[tf.Tensor, tf.Tensor]:
        theta = tf.stack([_as_f64(mx), _as_f64(my)])
        return theta, (theta - self._center) / self._scale

    def _check_eager(self, mx, my) -> None:
        if _is_eager_number(mx) and _is_eager_number(my):
            self.check_theta(float(mx), float(my))

    def _log_kappa(self, theta: tf.Tensor) -> tf.Tensor:
        """log κ at θ = (mX, mY) in GeV (a float64 tensor of shape (2,))."""
        if self._kappa_mode == "fixed":
            return tf.constant(self.log_kappa_fixed, _F64)
        return self.kappa_surface.tf_log_kappa(theta[0], theta[1])

    def log_kappa(self, mx: float, my: float) -> float:
        """log κ(θ) of the current mode."""
        self.check_theta(mx, my)
        if self._kappa_mode == "fixed":
            return self.log_kappa_fixed
        return float(self.kappa_surface(mx, my))

    # -- the network in TensorFlow ----------------------------------------------------------------
    def _pre_activations(self, xs: tf.Tensor, ts: tf.Tensor, dtype: str) -> list[tf.Tensor]:
        """Pre-activations of every layer, (K, n, width), from features xs (n, d) and scaled θ (2,).

        θ enters only the first layer: a_0 = W_x x + W_θ θ + b_0; then a_l = W_l relu(a_(l−1)) + b_l. The
        last entry holds the member logits (K, n, 1).
        """
        L = self._layers[dtype]
        dt = L["wx"].dtype
        theta_part = tf.einsum("i,kih->kh", tf.cast(ts, dt), L["wt"])[:, None, :]
        a = tf.matmul(tf.cast(xs, dt)[None], L["wx"]) + theta_part + L["b0"]
        pre = [a]
        for w, b in L["rest"]:
            a = tf.matmul(tf.nn.relu(a), w) + b
            pre.append(a)
        return pre

    def _logits(self, xs: tf.Tensor, ts: tf.Tensor, dtype: str) -> tf.Tensor:
        """Member logits (K, n) in float64."""
        return tf.cast(self._pre_activations(xs, ts, dtype)[-1][..., 0], _F64)

    # -- exact path (float64, plain autodiff) -------------------------------------------------------
    # No Python control flow depends on tensors below: autograph is not needed (and tracing is faster).
    @tf.autograph.experimental.do_not_convert
    def log_ratio(self, x: tf.Tensor, mx: tf.Tensor, my: tf.Tensor) -> tf.Tensor:
        """log Λ_FS(x | θ) in float64, differentiable (any order) in ``mx`` and ``my``."""
        self._check_eager(mx, my)
        xs = self.transform.forward(tf.convert_to_tensor(x, _F64))
        theta, ts = self._scaled_theta(mx, my)
        return _log_odds(self._logits(xs, ts, "float64")) + self._log_kappa(theta)

    # -- fast path ----------------------------------------------------------------------------------
    def precompute(self, x: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """Transformed events (float64), padded and cut into chunks: ``(chunks (m, c, d), n)``."""
        xs = self.transform.forward(tf.convert_to_tensor(x, _F64))
        n = int(xs.shape[0]) if xs.shape[0] is not None else None
        if n is None:
            raise InputError("precompute needs events with a known number of rows")
        c = max(1, min(self.chunk_size, n))
        m = -(-n // c)
        xs = tf.pad(xs, [[0, m * c - n], [0, 0]])
        return tf.reshape(xs, [m, c, self.feature_set.dim]), tf.constant(n, tf.int32)

    def _chunk_value_and_grad(self, xc: tf.Tensor, ts: tf.Tensor):
        """log-odds (c,) and its gradient w.r.t. the scaled θ (c, 2), by one forward + backward pass."""
        L = self._layers[self.fast_dtype]
        dt = L["wx"].dtype
        pre = self._pre_activations(xc, ts, self.fast_dtype)
        z = tf.cast(pre[-1][..., 0], _F64)  # (K, c)
        log_g, log_1mg = -tf.math.softplus(-z), -tf.math.softplus(z)
        value = tf.reduce_logsumexp(log_g, axis=0) - tf.reduce_logsumexp(log_1mg, axis=0)
        # ∂ value / ∂ z_k = softmax_k(log g)·σ(−z_k) + softmax_k(log(1−g))·σ(z_k)
        dz = tf.nn.softmax(log_g, axis=0) * tf.math.sigmoid(-z)
        dz += tf.nn.softmax(log_1mg, axis=0) * tf.math.sigmoid(z)
        delta = tf.cast(dz, dt)[..., None]  # (K, c, 1): gradient w.r.t. the output pre-activation
        for (w, _), a_prev in zip(reversed(L["rest"]), reversed(pre[:-1]), strict=True):
            delta = tf.matmul(delta, w, transpose_b=True) * tf.cast(a_prev > 0, dt)
        grad = tf.reduce_sum(tf.matmul(delta, L["wt"], transpose_b=True), axis=0)  # (c, 2)
        return value, tf.cast(grad, _F64)

    def _fast_log_odds(self, chunks: tf.Tensor, n: tf.Tensor, ts: tf.Tensor) -> tf.Tensor:
        @tf.custom_gradient
        def log_odds(ts):
            vals, grads = tf.map_fn(
                lambda xc: self._chunk_value_and_grad(xc, ts),
                chunks,
                fn_output_signature=(tf.TensorSpec([None], _F64), tf.TensorSpec([None, 2], _F64)),
                parallel_iterations=1,
            )
            vals = tf.reshape(vals, [-1])[:n]
            grads = tf.reshape(grads, [-1, 2])[:n]

            def grad_fn(upstream):
                return tf.linalg.matvec(grads, tf.cast(upstream, _F64), transpose_a=True)

            return vals, grad_fn

        return log_odds(ts)

    @tf.autograph.experimental.do_not_convert
    def log_ratio_precomputed(self, aux, mx, my) -> tf.Tensor:
        """log Λ_FS from :meth:`precompute` (network in ``fast_dtype``, exact θ-gradient, float64 out)."""
        self._check_eager(mx, my)
        chunks, n = aux
        theta, ts = self._scaled_theta(mx, my)
        return self._fast_log_odds(chunks, n, ts) + self._log_kappa(theta)

    # -- θ-fast evaluation (inference.table) ---------------------------------------------------------
    #: A forward pass per θ over all events is expensive: fits tabulate log Λ in θ by default.
    theta_fast_preferred = True

    def log_ratio_nodes(self, aux, theta: np.ndarray, *, derivatives: bool = False) -> np.ndarray:
        """log Λ at several θ: (P, n), or with ``derivatives`` (P, 4, n) = (log Λ, ∂mX, ∂mY, ∂mX∂mY).

        Network in ``fast_dtype``, no gradient tape. The derivatives are exact (almost everywhere): every
        member logit z_k is piecewise linear in θ, so one backward pass per member gives ∇z_k, and the
        derivatives of the ensemble log-odds follow from those of its smooth combination of the z_k.
        """
        chunks, n = aux
        theta = np.asarray(theta, np.float64).reshape(-1, 2)
        for a, b in theta:
            self.check_theta(a, b)
        ts = (theta - self._center) / self._scale
        fn = self._nodes_fn(derivatives)
        scale = np.array(
            [1.0, 1.0 / self._scale[0], 1.0 / self._scale[1], 1.0 / (self._scale[0] * self._scale[1])]
        )
        out = []
        for t, th in zip(ts, theta, strict=True):
            vals = fn(chunks, n, tf.constant(t)).numpy()
            if not derivatives:
                out.append(vals + self._log_kappa_numpy(th))
                continue
            vals = vals * scale[:, None] + self._log_kappa_derivatives(th)[:, None]
            out.append(vals)
        return np.stack(out)

    def _log_ratio_checked(self, x: np.ndarray, mx: float, my: float) -> np.ndarray:
        # float64 network in chunks: memory bounded by the chunk size, not by the number of events
        aux = self.precompute(tf.constant(x))
        fn = self._nodes_fn(False, "float64")
        ts = (np.array([mx, my]) - self._center) / self._scale
        return fn(*aux, tf.constant(ts)).numpy() + self._log_kappa_numpy((mx, my))

    def _nodes_fn(self, derivatives: bool, dtype: str | None = None):
        dtype = dtype or self.fast_dtype
        key = f"_nodes_compiled_{dtype}_{derivatives}"
        fn = self.__dict__.get(key)
        if fn is not None:
            return fn
        L = self._layers[dtype]
        dt = L["wx"].dtype

        def chunk_values(xc, ts):
            return _log_odds(self._logits(xc, ts, dtype))

        @tf.function(jit_compile=True)  # the elementwise part: XLA fuses it (the matmuls stay on oneDNN)
        def combine(z, gz):
            d = tf.zeros(tf.shape(gz)[1:], _F64)  # per-event shift of the scaled θ
            with tf.GradientTape() as outer:
                outer.watch(d)
                with tf.GradientTape() as inner:
                    inner.watch(d)
                    f = _log_odds(z + tf.einsum("kci,ci->kc", gz, d))
                g = inner.gradient(f, d)  # (c, 2): each f_i depends on d_i only
                gx = g[:, 0]  # inside the outer tape, which must record the slice
            fxy = outer.gradient(gx, d)[:, 1]
            return tf.stack([f, g[:, 0], g[:, 1], fxy])

        def chunk_derivatives(xc, ts):
            pre = self._pre_activations(xc, ts, dtype)
            delta = tf.ones_like(pre[-1])  # per member: ∂z_k/∂(own output) = 1
            for (w, _), a_prev in zip(reversed(L["rest"]), reversed(pre[:-1]), strict=True):
                delta = tf.matmul(delta, w, transpose_b=True) * tf.cast(a_prev > 0, dt)
            gz = tf.matmul(delta, L["wt"], transpose_b=True)  # (K, c, 2): ∇_θ z_k
            return combine(tf.cast(pre[-1][..., 0], _F64), tf.cast(gz, _F64))

        if derivatives:
            spec = tf.TensorSpec([4, None], _F64)

            @tf.function(reduce_retracing=True)
            def fn(chunks, n, ts):
                vals = tf.map_fn(lambda xc: chunk_derivatives(xc, ts), chunks, fn_output_signature=spec)
                return tf.reshape(tf.transpose(vals, [1, 0, 2]), [4, -1])[:, :n]

        else:

            @tf.function(reduce_retracing=True)
            def fn(chunks, n, ts):
                vals = tf.map_fn(
                    lambda xc: chunk_values(xc, ts), chunks, fn_output_signature=tf.TensorSpec([None], _F64)
                )
                return tf.reshape(vals, [-1])[:n]

        self.__dict__[key] = fn
        return fn

    def _log_kappa_derivatives(self, theta) -> np.ndarray:
        """(log κ, ∂mX, ∂mY, ∂mX∂mY) at θ."""
        if self._kappa_mode == "fixed":
            return np.array([self.log_kappa_fixed, 0.0, 0.0, 0.0])
        mx, my = (tf.constant(float(v), _F64) for v in theta)
        with tf.GradientTape(persistent=True) as outer:
            outer.watch([mx, my])
            with tf.GradientTape() as inner:
                inner.watch([mx, my])
                lk = self.kappa_surface.tf_log_kappa(mx, my)
            gx, gy = inner.gradient(lk, [mx, my])
        fxy = outer.gradient(gx, my)
        return np.array([float(lk), float(gx), float(gy), 0.0 if fxy is None else float(fxy)])

    def __getstate__(self):
        # compiled TF functions are caches: they are rebuilt on demand (and cannot be pickled for Dask)
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_nodes_compiled_")}

    def _log_kappa_numpy(self, theta) -> float:
        if self._kappa_mode == "fixed":
            return self.log_kappa_fixed
        return float(self.kappa_surface(theta[0], theta[1]))

    # -- numpy helpers ------------------------------------------------------------------------------
    def member_logits(self, x: np.ndarray, mx: float, my: float) -> np.ndarray:
        """Per-member logits z_k(x, θ), shape (K, n), in float64 (exact path)."""
        self.check_theta(mx, my)
        xs = self.transform.forward(x if isinstance(x, np.ndarray) else list(x))  # checks shape, NaN, domain
        _, ts = self._scaled_theta(float(mx), float(my))
        return self._logits(tf.constant(xs), ts, "float64").numpy()

    def predict(self, x: np.ndarray, mx: float, my: float) -> np.ndarray:
        """Ensemble-averaged classifier output ⟨g⟩(x, θ), shape (n,)."""
        z = self.member_logits(x, mx, my)
        return (0.5 * (1.0 + np.tanh(0.5 * z))).mean(axis=0)

    def _log_odds_on(self, x: np.ndarray):
        """θ (P, 2) → (P, n) log(⟨g⟩/(1 − ⟨g⟩)) on ``x`` without κ (fast dtype, no gradient).

        ``x`` is transformed and the graph traced once, however many θ batches are asked for.
        """
        chunks, n = self.precompute(tf.constant(np.asarray(x, np.float64)))

        @tf.function(reduce_retracing=True)
        def run(ts):
            vals = tf.map_fn(
                lambda xc: _log_odds(self._logits(xc, ts, self.fast_dtype)),
                chunks,
                fn_output_signature=tf.TensorSpec([None], _F64),
            )
            return tf.reshape(vals, [-1])[:n]

        def log_odds(theta: np.ndarray) -> np.ndarray:
            ts_all = (np.asarray(theta, np.float64) - self._center) / self._scale
            return np.stack([run(tf.constant(t)).numpy() for t in ts_all])

        return log_odds

    def calibrate_kappa(
        self,
        reference: np.ndarray,
        *,
        step: float = 25.0,
        n_check: int = 40,
        seed: int | np.random.SeedSequence | None = 0,
        log_weights: np.ndarray | None = None,
    ) -> KappaSurface:
        """Compute the sampled κ(θ) = 1 / E_B[⟨g⟩/(1 − ⟨g⟩)] on a regular θ grid over the training range.

        The table (spacing ≤ ``step`` GeV) is interpolated by a bicubic spline; its accuracy is checked
        at ``n_check`` random cell centres (:attr:`KappaSurface.check_rms`). Use a background sample
        the members were not trained on and at least as large as the data to be fitted: the Monte Carlo
        error of log κ (:attr:`KappaSurface.mc_error`) enters the fit like a normalisation error.

        Parameters
        ----------
        reference : ndarray (m, d)
            SR background events (held-out CFM sample, or the true background for ablations).
        step : float
            Largest node spacing in GeV.
        n_check : int
            Cell centres at which the interpolation is checked (0: no check).
        seed
            Chooses the cell centres.
        log_weights : ndarray (m,), optional
            Importance weights of the reference (a tempered-flow sample): κ is then the self-normalised
            weighted mean, with a much smaller Monte Carlo error at high masses for the same size.
        """
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != self.feature_set.dim or len(ref) < 2:
            raise InputError(f"reference must be a (m ≥ 2, {self.feature_set.dim}) array; got {ref.shape}")
        if log_weights is not None:
            log_weights = np.asarray(log_weights, np.float64)
            if (
                log_weights.shape != (len(ref),)
                or np.isnan(log_weights).any()
                or np.isposinf(log_weights).any()
            ):
                raise InputError(
                    f"log_weights must be (m,) = ({len(ref)},) numbers < +inf (−inf: weight 0); got shape "
                    f"{log_weights.shape}"
                )
        self.kappa_surface = build_kappa_surface(
            self._log_odds_on(ref),  # nodes and check centres share one transform of the reference
            self.theta_bounds,
            step=step,
            n_check=n_check,
            seed=seed,
            n_reference=len(ref),
            log_weights=log_weights,
        )
        log.info(
            "κ(θ) table: %d × %d nodes on %d events; MC error %.3g, interpolation check rms %.3g (max %.3g)",
            len(self.kappa_surface.mx_nodes),
            len(self.kappa_surface.my_nodes),
            len(ref),
            self.kappa_surface.mc_error,
            self.kappa_surface.check_rms,
            self.kappa_surface.check_max,
        )
        return self.kappa_surface

    # -- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path, *, keras_members: bool = True) -> Path:
        """Save as a model bundle (:mod:`gbi_zfit.models.persistence`).

        Members are written as ``.keras`` files (usable on their own with ``keras.saving.load_model``) or,
        with ``keras_members=False``, as ``.npz`` weight lists. The sidecar holds the preprocessing, θ
        scaling, both κ modes, the configuration, training histories and seeds.
        """
        from .persistence import save_bundle

        members: dict[str, Any] = {}
        for i, ws in enumerate(self._members_np):
            if keras_members:
                net = build_classifier_network(self.feature_set.dim + 2, self.hidden)
                net.set_weights(ws)
                members[f"member_{i:02d}"] = net
            else:
                members[f"member_{i:02d}"] = ws
        meta = {
            "theta_bounds": [list(b) for b in self.theta_bounds],
            "theta_center": self._center.tolist(),
            "theta_scale": self._scale.tolist(),
            "hidden": list(self.hidden),
            "log_kappa_fixed": self.log_kappa_fixed,
            "kappa_mode": self.kappa_mode,
            "kappa_surface": None if self.kappa_surface is None else self.kappa_surface.to_dict(),
            "fast_dtype": self.fast_dtype,
            "feature_set": self.feature_set.name,
            **self.metadata,
        }
        return save_bundle(
            path,
            kind=_KIND,
            kind_version=_KIND_VERSION,
            members=members,
            features=self.feature_set.names,
            preprocessing=self.transform.to_dict(),
            metadata=meta,
        )

    @classmethod
    def load(
        cls, path: str | Path, *, feature_set: str | FeatureSet = "paws", **overrides
    ) -> ClassifierEnsemble:
        """Load a bundle written by :meth:`save` (on any Keras backend); ``overrides`` e.g. ``fast_dtype``.

        Raises
        ------
        ModelFileError
            Missing/corrupt/tampered files, another kind of model, or other features.
        """
        from .persistence import parse_bundle

        fs = get_feature_set(feature_set)
        with parse_bundle(
            path, kind=_KIND, kind_version=_KIND_VERSION, expected_features=fs.names, what="classifier bundle"
        ) as (members, sidecar):
            meta = dict(sidecar["metadata"])
            weights = [
                m if isinstance(m, list) else [np.asarray(w) for w in m.get_weights()]
                for m in members.values()
            ]
            surface = meta.pop("kappa_surface", None)
            bounds = tuple(tuple(b) for b in meta.pop("theta_bounds"))
            kwargs = {
                "theta_bounds": bounds,
                "log_kappa": meta.pop("log_kappa_fixed"),
                "kappa_surface": None if surface is None else _surface_from_sidecar(surface, bounds),
                "kappa_mode": meta.pop("kappa_mode", "fixed"),
                "fast_dtype": meta.pop("fast_dtype", "float32"),
                "feature_set": fs,
            }
            for k in ("theta_center", "theta_scale", "hidden", "feature_set"):
                meta.pop(k, None)
            kwargs.update(overrides)
            return cls(weights, FeatureTransform.from_dict(sidecar["preprocessing"]), metadata=meta, **kwargs)

    def __repr__(self) -> str:
        (a, b), (c, d) = self.theta_bounds
        return (
            f"ClassifierEnsemble({self.n_members} × {'-'.join(map(str, self.hidden))}, κ {self.kappa_mode}, "
            f"mX ∈ [{a:g}, {b:g}], mY ∈ [{c:g}, {d:g}] GeV, fast {self.fast_dtype})"
        )


def _surface_from_sidecar(d: Mapping[str, Any], bounds) -> KappaSurface:
    """The κ table of a sidecar; older bundles stored a low-order Chebyshev series: tabulated here."""
    if "coef" not in d:
        return KappaSurface.from_dict(d)
    coef = np.asarray(d["coef"], dtype=np.float64)
    center, scale = _theta_scaling(bounds)
    (a, b), (c, e) = bounds
    mx, my = regular_nodes(a, b, 25.0), regular_nodes(c, e, 25.0)
    u = np.polynomial.chebyshev.chebvander((mx - center[0]) / scale[0], len(coef) - 1)
    v = np.polynomial.chebyshev.chebvander((my - center[1]) / scale[1], len(coef) - 1)
    log.warning("κ(θ) of this bundle is a low-order fit (old format); recalibrate it with calibrate_kappa()")
    return KappaSurface(
        mx.tolist(), my.tolist(), (u @ coef @ v.T).tolist(), n_reference=d.get("n_reference", 0)
    )
