"""Generic training-loop utilities: mini-batch epochs, early stopping, progress, seeds and history.

The loop is framework-neutral: it calls a ``step(batch) -> loss`` function (usually a compiled
``tf.function`` that applies one optimizer step) on shuffled mini-batches of numpy arrays, evaluates a
``evaluate(arrays) -> loss`` function on the validation set after every epoch, keeps the weights of the
best validation epoch and stops when the validation loss has not improved for ``patience`` epochs.
Models plug in through two callables, ``get_weights()`` and ``set_weights(w)``.

Examples
--------
>>> import numpy as np
>>> w = np.zeros(1)
>>> def step(batch):                                   # one gradient step of a toy least-squares fit
...     w[:] -= 0.1 * 2 * (w - batch[0].mean())
...     return float(((batch[0] - w) ** 2).mean())
>>> def evaluate(arrays):
...     return float(((arrays[0] - w) ** 2).mean())
>>> x = np.random.default_rng(1).normal(3.0, 1.0, (1000, 1))
>>> hist = fit_early_stopping(step, evaluate, (x[:800],), (x[800:],), batch_size=100, max_epochs=50,
...     patience=3, seed=0, get_weights=lambda: w.copy(), set_weights=lambda v: w.__setitem__(slice(None), v),
...     progress=False)
>>> bool(abs(w[0] - 3.0) < 0.2), hist.best_epoch >= 0
(True, True)
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import InputError

__all__ = [
    "EarlyStopping",
    "TrainingHistory",
    "fit_early_stopping",
    "seed_ints",
    "train_validation_split",
]

log = logging.getLogger(__name__)


def seed_ints(seed: int | np.random.SeedSequence | None, n: int = 1) -> list[int]:
    """``n`` reproducible 31-bit integer seeds (for TF/Keras initialisers) derived from ``seed``.

    A ``SeedSequence`` (e.g. a child from :func:`gbi_zfit.parallel.spawn_seeds`) is used as is, so the
    integers depend only on it and not on global state.
    """
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [int(v) for v in ss.generate_state(n, dtype=np.uint32) % (2**31 - 1)]


def train_validation_split(
    n: int, validation_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint (train, validation) index arrays; at least one event in each.

    Raises
    ------
    InputError
        ``validation_fraction`` not in (0, 1) or fewer than 2 events.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise InputError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if n < 2:
        raise InputError(f"need at least 2 events to split into training and validation, got {n}")
    perm = rng.permutation(n)
    n_val = min(max(int(round(validation_fraction * n)), 1), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@dataclasses.dataclass
class TrainingHistory:
    """Per-epoch losses and the outcome of one training run.

    Attributes
    ----------
    loss, val_loss : list of float
        Mean training loss (over the epoch's batches) and validation loss after each epoch.
    epoch_time : list of float
        Wall time of each epoch in seconds (training + validation).
    best_epoch : int
        Index of the epoch with the lowest validation loss (its weights are the ones kept); -1 before
        the first epoch.
    best_val_loss : float
        That validation loss.
    initial_val_loss : float
        Validation loss before training.
    stopped_early : bool
        Whether early stopping ended the run before ``max_epochs``.
    interrupted : bool
        Whether the run was stopped by Ctrl-C (the best weights so far are kept).
    """

    loss: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    epoch_time: list[float] = dataclasses.field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    initial_val_loss: float = math.nan
    stopped_early: bool = False
    interrupted: bool = False

    @property
    def n_epochs(self) -> int:
        return len(self.loss)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingHistory:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def __str__(self) -> str:
        if not self.loss:
            return "TrainingHistory(no epochs)"
        t = sum(self.epoch_time)
        how = "interrupted" if self.interrupted else ("early stop" if self.stopped_early else "max epochs")
        return (
            f"TrainingHistory({self.n_epochs} epochs, {how}; val loss {self.initial_val_loss:.4f} → "
            f"best {self.best_val_loss:.4f} at epoch {self.best_epoch}; {t:.1f} s, "
            f"{t / self.n_epochs:.2f} s/epoch)"
        )


@dataclasses.dataclass
class EarlyStopping:
    """Stop when the monitored loss has not improved by more than ``min_delta`` for ``patience`` epochs."""

    patience: int = 10
    min_delta: float = 0.0
    best: float = math.inf
    wait: int = 0

    def __post_init__(self):
        if self.patience < 1:
            raise InputError(f"patience must be >= 1, got {self.patience}")

    def update(self, value: float) -> tuple[bool, bool]:
        """Record one epoch's loss; returns ``(improved, stop)``. NaN never improves."""
        if math.isfinite(value) and value < self.best - self.min_delta:
            self.best = value
            self.wait = 0
            return True, False
        self.wait += 1
        return False, self.wait >= self.patience


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(n)
    # drop a last batch smaller than half a batch (noisy gradient); keep it if it is the only one
    edges = list(range(0, n, batch_size))
    out = [perm[i : i + batch_size] for i in edges]
    if len(out) > 1 and len(out[-1]) < batch_size // 2:
        out.pop()
    return out


def fit_early_stopping(
    step: Callable[[tuple[np.ndarray, ...]], Any],
    evaluate: Callable[[tuple[np.ndarray, ...]], Any],
    train: Sequence[np.ndarray],
    validation: Sequence[np.ndarray],
    *,
    batch_size: int = 1024,
    max_epochs: int = 100,
    patience: int = 10,
    min_delta: float = 0.0,
    seed: int | np.random.SeedSequence | np.random.Generator | None = None,
    get_weights: Callable[[], Any] | None = None,
    set_weights: Callable[[Any], None] | None = None,
    on_epoch_end: Callable[[int, TrainingHistory], None] | None = None,
    progress: bool = True,
    desc: str | None = None,
    max_bad_epochs: int = 3,
) -> TrainingHistory:
    """Train with mini-batches, early stopping on the validation loss and best-weight restoration.

    Parameters
    ----------
    step
        ``step(batch) -> loss``: one optimizer step on ``batch``, a tuple of array slices of ``train``
        (same row indices in each); the loss may be a float or a scalar tensor.
    evaluate
        ``evaluate(arrays) -> loss`` on the validation tuple (no parameter update).
    train, validation
        Tuples of arrays with the events along axis 0.
    batch_size, max_epochs, patience, min_delta
        Mini-batch size; epoch limit; epochs without an improvement larger than ``min_delta`` before
        stopping.
    seed
        Seed of the batch shuffling (an int, ``SeedSequence`` or ``Generator``).
    get_weights, set_weights
        Snapshot and restore the model weights; the best validation epoch's weights are restored at the
        end. Without them, the final weights are kept.
    on_epoch_end
        ``on_epoch_end(epoch, history)`` after each epoch (e.g. logging, checkpointing).
    progress
        Show a tqdm bar over epochs with the current losses.
    desc
        Label of the progress bar.
    max_bad_epochs
        Abort after this many consecutive epochs with a non-finite training loss (the best weights are
        kept); a diverging run then shows ``stopped_early`` and a finite best loss if any epoch was good.

    Returns
    -------
    TrainingHistory

    Notes
    -----
    Ctrl-C during training stops after restoring the best weights so far (``history.interrupted``);
    the ``KeyboardInterrupt`` is *not* re-raised, so a caller can still save a usable model.
    """
    train = tuple(np.asarray(a) for a in train)
    validation = tuple(np.asarray(a) for a in validation)
    n = len(train[0])
    if n == 0 or any(len(a) != n for a in train):
        raise InputError(
            f"training arrays must be non-empty and of equal length, got {[len(a) for a in train]}"
        )
    if len(validation[0]) == 0 or any(len(a) != len(validation[0]) for a in validation):
        raise InputError("validation arrays must be non-empty and of equal length")
    if batch_size < 1 or max_epochs < 0:
        raise InputError(f"need batch_size >= 1 and max_epochs >= 0, got {batch_size}, {max_epochs}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    history = TrainingHistory()
    stopper = EarlyStopping(patience=patience, min_delta=min_delta)
    history.initial_val_loss = float(evaluate(validation))
    stopper.best = history.initial_val_loss if math.isfinite(history.initial_val_loss) else math.inf
    best_weights = get_weights() if get_weights is not None else None
    bad = 0
    bar = tqdm(total=max_epochs, desc=desc, disable=not progress, unit="epoch", leave=False)
    try:
        for epoch in range(max_epochs):
            t0 = time.perf_counter()
            total, count = 0.0, 0
            for idx in _batches(n, batch_size, rng):
                loss = float(step(tuple(a[idx] for a in train)))
                total += loss * len(idx)
                count += len(idx)
            train_loss = total / count
            val_loss = float(evaluate(validation))
            history.loss.append(train_loss)
            history.val_loss.append(val_loss)
            history.epoch_time.append(time.perf_counter() - t0)
            improved, stop = stopper.update(val_loss)
            if improved:
                history.best_epoch, history.best_val_loss = epoch, val_loss
                if get_weights is not None:
                    best_weights = get_weights()
            bad = bad + 1 if not math.isfinite(train_loss) else 0
            bar.set_postfix(loss=f"{train_loss:.4f}", val=f"{val_loss:.4f}", best=f"{stopper.best:.4f}")
            bar.update()
            if on_epoch_end is not None:
                on_epoch_end(epoch, history)
            if bad >= max_bad_epochs:
                log.warning("%s: training loss non-finite for %d epochs; stopping", desc or "training", bad)
                history.stopped_early = True
                break
            if stop:
                history.stopped_early = epoch + 1 < max_epochs
                break
    except KeyboardInterrupt:
        history.interrupted = True
        log.warning(
            "%s: interrupted after %d epoch(s); keeping the best weights",
            desc or "training",
            history.n_epochs,
        )
    finally:
        bar.close()
    if history.best_epoch < 0:
        history.best_val_loss = history.initial_val_loss
    if set_weights is not None and best_weights is not None:
        set_weights(best_weights)
    return history
