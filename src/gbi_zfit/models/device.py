"""Where Keras training runs: the Keras backend, the GPUs TensorFlow sees, and the distribution strategy.

The rule (DESIGN §4): ``tf.config.list_physical_devices("GPU")`` decides. With the TensorFlow backend,

* no GPU or one GPU → TensorFlow's default strategy (ops are placed on the GPU automatically if present);
* several GPUs → :class:`tf.distribute.MirroredStrategy` over all of them (data-parallel; the batch size
  of the training configuration is the *global* batch, split across the replicas).

With the JAX backend (``KERAS_BACKEND=jax``) Keras runs on JAX's default device; there is no TF strategy
and training is single-device. Fits never depend on this: they evaluate the trained weights in pure
TensorFlow (see :mod:`gbi_zfit.models.classifier`).

:func:`plan_devices` holds the decision as a pure function (tested on CPU with any GPU count);
:func:`training_scope` applies it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

__all__ = ["DevicePlan", "backend_name", "device_plan", "gpu_devices", "plan_devices", "training_scope"]


def backend_name() -> str:
    """The active Keras backend (``"tensorflow"``, ``"jax"``, ...), from ``KERAS_BACKEND`` at import."""
    import keras

    return keras.backend.backend()


def gpu_devices() -> list[str]:
    """Names of the GPUs TensorFlow sees (``tf.config.list_physical_devices("GPU")``)."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


@dataclass(frozen=True)
class DevicePlan:
    """The device decision for training.

    Attributes
    ----------
    backend : str
        Keras backend.
    gpus : tuple of str
        GPUs TensorFlow sees.
    strategy : str
        ``"mirrored"`` (several GPUs, TensorFlow backend), ``"default"`` (TensorFlow's default strategy)
        or ``"none"`` (non-TensorFlow backends).
    device : str
        ``"cpu"``, ``"gpu"`` or ``"multi-gpu"``, for logs and benchmark tables.
    """

    backend: str
    gpus: tuple[str, ...] = field(default_factory=tuple)
    strategy: str = "default"
    device: str = "cpu"

    @property
    def n_gpus(self) -> int:
        return len(self.gpus)

    def to_dict(self) -> dict:
        return asdict(self)


def plan_devices(backend: str, gpus: Sequence[str]) -> DevicePlan:
    """The pure decision: which strategy for this backend and these GPUs (no device is touched)."""
    gpus = tuple(gpus)
    device = "cpu" if not gpus else ("gpu" if len(gpus) == 1 else "multi-gpu")
    if backend != "tensorflow":
        return DevicePlan(backend, gpus, "none", device)
    return DevicePlan(backend, gpus, "mirrored" if len(gpus) > 1 else "default", device)


def device_plan() -> DevicePlan:
    """:func:`plan_devices` for the running process."""
    return plan_devices(backend_name(), gpu_devices())


@contextlib.contextmanager
def training_scope(plan: DevicePlan | None = None) -> Iterator[object | None]:
    """Context in which Keras models are built, compiled and trained; yields the TF strategy or ``None``.

    Examples
    --------
    >>> with training_scope() as strategy:
    ...     model = build_network(...)
    ...     model.compile(...)
    """
    plan = plan or device_plan()
    if plan.strategy == "none":
        yield None
        return
    import tensorflow as tf

    if plan.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    with strategy.scope():
        yield strategy
