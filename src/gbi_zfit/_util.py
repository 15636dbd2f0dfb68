"""Small internal helpers shared by several modules."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    Nothing half-written is ever left at ``path``: on an exception the temporary file is removed and an
    existing file at ``path`` stays untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def as_float64(value):
    """``value`` as a float64 tensor without a float32 detour.

    ``tf.cast(325.00001, tf.float64)`` first makes a float32 constant (325.0); Python and numpy scalars
    are therefore converted directly, tensors and variables are cast.
    """
    import numpy as np
    import tensorflow as tf

    if isinstance(value, (float, int, np.floating, np.integer, np.ndarray)):
        return tf.constant(value, tf.float64)
    return tf.cast(value, tf.float64)


def lazy_getattr(module_globals: dict, lazy: dict[str, str]):
    """A module ``__getattr__`` (PEP 562) importing ``name`` from ``lazy[name]`` on first use.

    Keeps ``import gbi_zfit`` and its subpackages cheap: TensorFlow, zfit and Keras load only when a
    name that needs them is touched. The value is cached in the module's globals.
    """
    import importlib

    def __getattr__(name: str):
        if name in lazy:
            value = getattr(importlib.import_module(lazy[name]), name)
            module_globals[name] = value
            return value
        raise AttributeError(f"module {module_globals['__name__']!r} has no attribute {name!r}")

    return __getattr__
