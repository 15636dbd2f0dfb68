"""Small internal helpers shared by several modules."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import DataFileError, GBIError

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")

__all__ = [
    "array_digest",
    "atomic_path",
    "atomic_write_text",
    "child_seed",
    "dump_json",
    "load_json_record",
    "read_json_object",
    "seed_key",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary path next to ``path``; on success it replaces ``path`` atomically.

    Nothing half-written is ever left at ``path``: on any exception (also ``KeyboardInterrupt``) the
    temporary file is removed and an existing file at ``path`` stays untouched. The temporary file lives
    in the target directory, so :func:`os.replace` is an atomic rename on one file system; it is created
    exclusively (never reusing someone else's file) with the permissions a plain ``open()`` would give
    (the umask decides), keeps the target's suffix (some writers, e.g. numpy, append one otherwise) and is
    flushed to disk before the rename, so a crash cannot expose a stub.

    Parameters
    ----------
    path : str or path-like
        The target file.
    make_parents : bool
        Create missing parent directories (default); ``False`` raises instead.

    Raises
    ------
    DataFileError
        The directory is missing (with ``make_parents=False``) or cannot be created, ``path`` is a
        directory, or an ``OSError`` occurs while writing (full disk, permissions); nothing is written.
    """
    target = Path(os.fspath(path)).expanduser()
    directory = target.parent
    if make_parents:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataFileError(
                f"cannot write {target}: cannot create directory {directory} ({exc})"
            ) from exc
    if not directory.is_dir():
        raise DataFileError(f"cannot write {target}: directory {directory} does not exist; create it first")
    if target.is_dir():
        raise DataFileError(f"cannot write {target}: it is a directory; give a file name")
    tmp = directory / f".{target.stem}.{secrets.token_hex(6)}.partial{target.suffix}"
    try:
        # O_EXCL: never reuse someone else's file; mode 0o666 lets the umask decide, as for a normal open().
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise DataFileError(f"cannot create a file in {directory} ({exc}); check permissions") from exc
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as exc:  # also KeyboardInterrupt: the partial file must go in every case
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, GBIError):
            raise DataFileError(
                f"writing {target} failed ({type(exc).__name__}: {exc}); nothing was written"
            ) from exc
        raise


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def read_json_object(text_or_path, what: str) -> dict:
    """The JSON object in a file (path) or in a JSON string, for ``from_json`` class methods.

    Raises
    ------
    DataFileError
        The file cannot be read, is not valid JSON (e.g. truncated), or does not hold a JSON object.
    """
    import json

    if isinstance(text_or_path, os.PathLike) or not str(text_or_path).lstrip().startswith(("{", "[")):
        path = Path(os.fspath(text_or_path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataFileError(f"cannot read {what} from {path}: {exc}") from exc
        source = str(path)
    else:
        text, source = str(text_or_path), "the JSON text"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(f"{source} is not valid JSON ({exc}); is the file truncated or corrupt?") from exc
    if not isinstance(obj, dict):
        raise DataFileError(f"{source} does not hold {what} (a JSON object), but a {type(obj).__name__}")
    return obj


def array_digest(*arrays: Any) -> str:
    """SHA-256 of the float64 values and shapes of ``arrays``: identifies training data in a result store."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def seed_key(seed: Any) -> Any:
    """A JSON value that identifies ``seed`` (int, SeedSequence or None) in a result store's config."""
    import numpy as np

    if isinstance(seed, np.random.SeedSequence):
        return [str(seed.entropy), list(seed.spawn_key)]
    return None if seed is None else int(seed)


def child_seed(seed: int | np.random.SeedSequence | None, *key: int) -> np.random.SeedSequence:
    """The child ``key`` of ``seed`` (an int, a SeedSequence, or None for fresh entropy), built directly.

    Unlike ``seed.spawn()`` this has no state: the same call always gives the same child.
    """
    import numpy as np

    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, *key))
    return np.random.SeedSequence(seed, spawn_key=key)


def dump_json(
    record: Any, path: str | os.PathLike | None = None, *, indent: int, allow_nan: bool = True
) -> str:
    """JSON text of ``record``, also written to ``path`` (atomically) if given: the ``to_json`` of results."""
    import json

    text = json.dumps(record, indent=indent, allow_nan=allow_nan)
    if path is not None:
        atomic_write_text(path, text)
    return text


def load_json_record(cls: type[T], text_or_path, what: str) -> T:
    """``cls.from_dict`` of the JSON object in a file or JSON text: the ``from_json`` of results.

    Raises
    ------
    DataFileError
        As :func:`read_json_object` (``what`` names the record there), or the object does not describe a
        ``cls`` (``from_dict`` raises ``TypeError``, ``KeyError`` or ``ValueError``).
    """
    d = read_json_object(text_or_path, what)
    try:
        return cls.from_dict(d)
    except (TypeError, KeyError, ValueError) as exc:
        raise DataFileError(f"the JSON does not describe a {cls.__name__}: {exc}") from exc


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
