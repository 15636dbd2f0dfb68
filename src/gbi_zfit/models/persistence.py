"""Save and load trained models as *bundles*: a directory of weight files plus a JSON sidecar.

Every learned model of the package (background flows, CFM generators, classifier ensembles) is stored
the same way, so that loading can check, before anything is deserialised, that the files are complete,
unmodified and made for the inputs the caller has::

    my_model/
      model.json          the sidecar (below)
      member_00.keras     a Keras 3 model (loaded with ``safe_mode=True``)
      member_01.npz       plain arrays, e.g. the variables of a TFP flow (``allow_pickle=False``)
      ...

The sidecar records

* ``format`` / ``format_version`` — the bundle layout (:data:`FORMAT_VERSION`); a bundle written by a
  newer layout is refused;
* ``kind`` and ``kind_version`` — what the bundle holds (e.g. ``"background_flow"``, ``"cfm"``,
  ``"classifier"``) and the version of that model's own schema, chosen by the model class;
* ``features`` — feature names in column order (``None`` if not applicable);
* ``members`` — one entry per weight file: file name, storage type, size and SHA-256 checksum;
* ``versions`` — gbi_zfit, Python, numpy, TensorFlow, TensorFlow Probability, Keras, tf-keras at save time;
* ``preprocessing`` — parameters of the input transformation the model was trained with;
* ``metadata`` — anything else the model needs or wants to document: seeds, θ range, training history,
  configuration. Recommended keys: ``"seeds"``, ``"theta_range"``, ``"history"``, ``"config"``.

Writes are atomic: the bundle is assembled in a temporary directory next to the target and renamed into
place only when complete, so a failure (exception, full disk, Ctrl-C) leaves neither a half-written
bundle nor a damaged previous one.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "toy"
>>> _ = save_bundle(d, kind="toy", members={"m0": {"w": np.ones(3)}}, features=["a", "b"],
...                 metadata={"seeds": [1]})
>>> members, sidecar = load_bundle(d, kind="toy", expected_features=["a", "b"])
>>> members["m0"]["w"].tolist(), sidecar["metadata"]["seeds"]
([1.0, 1.0, 1.0], [1])

Keras 3 models are stored as ``.keras`` files; custom layers must be registered with
``keras.saving.register_keras_serializable`` (or passed as ``custom_objects=`` to :func:`load_bundle`),
because unsafe deserialisation (lambdas, pickles) is never enabled.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError, ModelFileError

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SIDECAR_NAME",
    "LoadedBundle",
    "load_bundle",
    "parse_bundle",
    "read_sidecar",
    "save_bundle",
    "verify_bundle",
]

log = logging.getLogger(__name__)

#: Name of the layout, written into every sidecar.
FORMAT_NAME = "gbi_zfit.model_bundle"
#: Layout version written by this package; bundles with a larger number are refused.
FORMAT_VERSION = 1
#: File name of the sidecar inside a bundle directory.
SIDECAR_NAME = "model.json"

_MEMBER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_CHUNK = 1 << 20


class LoadedBundle(NamedTuple):
    """What :func:`load_bundle` returns; unpacks as ``members, sidecar``."""

    #: ``{name: keras.Model | dict[str, ndarray] | list[ndarray]}`` in the order they were saved.
    members: dict[str, Any]
    #: The parsed sidecar (see the module docstring).
    sidecar: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# helpers


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("gbi_zfit", "numpy", "tensorflow", "tensorflow-probability", "keras", "tf-keras", "zfit"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _major(version: str | None) -> int | None:
    if not version:
        return None
    m = re.match(r"(\d+)", str(version))
    return int(m.group(1)) if m else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, np.random.SeedSequence)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_keras3_model(obj: Any) -> bool:
    mod = type(obj).__module__ or ""
    if not (mod.startswith("keras") or hasattr(obj, "get_config")):
        return False
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a dependency
        return False
    return isinstance(obj, keras.Model)


def _as_arrays(name: str, obj: Any) -> tuple[str, dict[str, np.ndarray]]:
    """(container, {key: array}) for a dict or a sequence of array-likes (tf.Variable included)."""

    def arr(key: str, value: Any) -> np.ndarray:
        a = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if a.dtype == object:
            raise InputError(f"member {name!r}, array {key!r}: object arrays cannot be stored (no pickles)")
        return a

    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str) or not key:
                raise InputError(f"member {name!r}: array names must be non-empty strings, got {key!r}")
            out[key] = arr(key, value)
        return "dict", out
    if isinstance(obj, (np.ndarray, str, bytes)) or not isinstance(obj, Sequence):
        raise InputError(
            f"member {name!r} has unsupported type {type(obj).__name__}; pass a Keras 3 model, a dict "
            "of arrays, or a list of arrays (e.g. [v.numpy() for v in module.trainable_variables])"
        )
    return "list", {f"a{i:05d}": arr(str(i), value) for i, value in enumerate(obj)}


def _check_member_name(name: Any) -> str:
    if not isinstance(name, str) or not _MEMBER_NAME.match(name) or name.lower().startswith("model.json"):
        raise InputError(
            f"invalid member name {name!r}: use 1-100 characters from [A-Za-z0-9_.-], not starting with "
            "'.' or '-' (it becomes a file name)"
        )
    return name


def _write_member(tmp: Path, name: str, obj: Any) -> dict[str, Any]:
    if _is_keras3_model(obj):
        import keras

        fname = f"{name}.keras"
        obj.save(tmp / fname)
        entry: dict[str, Any] = {"file": fname, "type": "keras", "keras": keras.__version__}
    else:
        container, arrays = _as_arrays(name, obj)
        fname = f"{name}.npz"
        with open(tmp / fname, "wb") as fh:
            np.savez(fh, **arrays)
        entry = {"file": fname, "type": "npz", "container": container, "n_arrays": len(arrays)}
    path = tmp / fname
    _fsync_file(path)
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = _sha256(path)
    return entry


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` directory to ``target``, replacing an existing bundle there."""
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)  # put the previous bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# public API


def save_bundle(
    directory: str | os.PathLike,
    *,
    kind: str,
    members: Mapping[str, Any],
    features: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    kind_version: int = 1,
    overwrite: bool = True,
) -> Path:
    """Write a model bundle to ``directory`` atomically.

    Parameters
    ----------
    directory
        Target directory; created with its parents. An existing *bundle* there is replaced (only after
        the new one is complete); an existing directory that is not a bundle is never touched.
    kind
        What the bundle holds, e.g. ``"background_flow"``, ``"cfm"``, ``"classifier"``; checked on load.
    members
        ``{name: weights}``, in the order to restore them. ``weights`` is one of

        * a Keras 3 ``keras.Model`` → ``name.keras`` (Keras' own format);
        * a dict ``{array_name: array-like}`` → ``name.npz``, loaded back as a dict;
        * a list of array-likes (numpy arrays, ``tf.Variable``) → ``name.npz``, loaded back as a list.

        Names become file names: characters ``[A-Za-z0-9_.-]``.
    features
        Names of the input features in column order (checked on load with ``expected_features``).
    metadata
        JSON-serialisable extras (numpy scalars/arrays are converted): seeds, θ range, training history,
        the configuration needed to rebuild the model. NaN/inf are allowed.
    preprocessing
        JSON-serialisable parameters of the model's input transformation.
    kind_version
        Version of this kind's own schema; bump it when a model class changes what it stores, and pass
        the highest supported one to :func:`load_bundle` as ``kind_version``.
    overwrite
        Replace an existing bundle at ``directory`` (default); ``False`` raises instead.

    Returns
    -------
    pathlib.Path
        The bundle directory.

    Raises
    ------
    InputError
        Invalid member names or types, or metadata that is not JSON-serialisable (nothing is written).
    ModelFileError
        ``directory`` exists and is not a bundle, or is a bundle and ``overwrite=False``; or writing failed
        (the previous content of ``directory`` is left as it was).
    """
    target = Path(directory)
    if not isinstance(kind, str) or not kind:
        raise InputError(f"kind must be a non-empty string, got {kind!r}")
    if not members:
        raise InputError("a bundle needs at least one member")
    names = [_check_member_name(n) for n in members]
    if len({n.lower() for n in names}) != len(names):
        raise InputError(f"member names must be unique (case-insensitively): {names}")
    if features is not None:
        features = [str(f) for f in features]
    sidecar: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "kind_version": int(kind_version),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "features": features,
        "members": {},
        "preprocessing": dict(preprocessing or {}),
        "metadata": dict(metadata or {}),
    }
    try:  # validate the JSON part before touching the disk
        json.dumps(sidecar, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise InputError(f"metadata/preprocessing of the bundle must be JSON-serialisable: {exc}") from exc

    if target.exists():
        if not target.is_dir():
            raise ModelFileError(f"{target} exists and is not a directory; choose another path")
        if any(target.iterdir()) and not (target / SIDECAR_NAME).is_file():
            raise ModelFileError(
                f"{target} is a non-empty directory that is not a model bundle (no {SIDECAR_NAME}); "
                "refusing to replace it — choose an empty or new directory"
            )
        if not overwrite and (target / SIDECAR_NAME).is_file():
            raise ModelFileError(f"a model bundle already exists at {target} (pass overwrite=True)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        for name in names:
            sidecar["members"][name] = _write_member(tmp, name, members[name])
        text = json.dumps(sidecar, default=_json_default, indent=2)
        (tmp / SIDECAR_NAME).write_text(text + "\n", encoding="utf-8")
        _fsync_file(tmp / SIDECAR_NAME)
        _fsync_dir(tmp)
        if target.exists() and not any(target.iterdir()):
            target.rmdir()  # an empty directory (e.g. from mkdir) is simply replaced
        _replace_dir(tmp, target)
        _fsync_dir(target.parent)
    except InputError:
        raise
    except OSError as exc:
        raise ModelFileError(f"could not write the model bundle {target}: {exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("saved %s bundle with %d member(s) to %s", kind, len(names), target)
    return target


def read_sidecar(directory: str | os.PathLike) -> dict[str, Any]:
    """Parse and sanity-check the sidecar of the bundle at ``directory`` (no weight file is read).

    Raises
    ------
    ModelFileError
        Missing directory or sidecar, unreadable JSON, not a gbi_zfit bundle, or a newer layout.
    """
    d = Path(directory)
    path = d / SIDECAR_NAME
    if not d.is_dir():
        raise ModelFileError(f"no model bundle at {d}: directory does not exist")
    if not path.is_file():
        raise ModelFileError(f"{d} is not a model bundle: {SIDECAR_NAME} is missing")
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is unreadable or corrupt: {exc}") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a gbi_zfit model sidecar (format {FORMAT_NAME!r} expected)")
    fv = sidecar.get("format_version")
    if not isinstance(fv, int) or isinstance(fv, bool):
        raise ModelFileError(f"{path}: invalid format_version {fv!r}")
    if fv > FORMAT_VERSION:
        raise ModelFileError(
            f"{d} was written with bundle format version {fv}, newer than the {FORMAT_VERSION} this "
            f"gbi_zfit {_versions()['gbi_zfit']} reads; upgrade gbi_zfit "
            f"(it was saved by gbi_zfit {sidecar.get('versions', {}).get('gbi_zfit')})"
        )
    members = sidecar.get("members")
    if not isinstance(members, dict) or not members:
        raise ModelFileError(f"{path}: no members listed")
    for name, entry in members.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("file"), str)
            and entry.get("type") in ("keras", "npz")
            and isinstance(entry.get("sha256"), str)
            and Path(entry["file"]).name == entry["file"]
        )
        if not ok:
            raise ModelFileError(f"{path}: invalid entry for member {name!r}: {entry!r}")
    for key in ("metadata", "preprocessing", "versions"):
        sidecar.setdefault(key, {})
        if not isinstance(sidecar[key], dict):
            raise ModelFileError(
                f"{path}: {key!r} must be a JSON object, found {type(sidecar[key]).__name__}; the sidecar "
                "was edited or is corrupt"
            )
    features = sidecar.get("features")
    if features is not None and not (
        isinstance(features, list) and all(isinstance(f, str) for f in features)
    ):
        raise ModelFileError(f"{path}: 'features' must be a list of names or null, found {features!r}")
    return sidecar


def verify_bundle(
    directory: str | os.PathLike,
    *,
    kind: str | None = None,
    expected_features: Sequence[str] | None = None,
    kind_version: int | None = None,
) -> dict[str, Any]:
    """Check a bundle without deserialising it: sidecar, kind, features, versions, files and checksums.

    Parameters are as for :func:`load_bundle`. Returns the sidecar.

    Raises
    ------
    ModelFileError
        On any mismatch; the message names what was expected and what was found.
    """
    d = Path(directory)
    sidecar = read_sidecar(d)
    found_kind = sidecar.get("kind")
    if kind is not None and found_kind != kind:
        raise ModelFileError(f"{d} holds a {found_kind!r} model, expected {kind!r}")
    kv = sidecar.get("kind_version", 1)
    if kind_version is not None and (not isinstance(kv, int) or kv > kind_version):
        raise ModelFileError(
            f"{d}: {found_kind!r} schema version {kv} is newer than the {kind_version} supported by this "
            "gbi_zfit; upgrade gbi_zfit"
        )
    if expected_features is not None:
        expected = [str(f) for f in expected_features]
        found = sidecar.get("features")
        if found != expected:
            raise ModelFileError(
                f"{d}: feature mismatch — the model was trained on features {found}, expected {expected} "
                "(same names in the same order)"
            )
    saved_pkg, now_pkg = sidecar["versions"].get("gbi_zfit"), _versions().get("gbi_zfit")
    if _major(saved_pkg) is not None and _major(now_pkg) is not None and _major(saved_pkg) > _major(now_pkg):
        raise ModelFileError(
            f"{d} was saved by gbi_zfit {saved_pkg}, a newer major version than the installed {now_pkg}; "
            "upgrade gbi_zfit to load it"
        )
    saved_keras = _major(sidecar["versions"].get("keras"))
    now_keras = _major(_versions().get("keras"))
    for name, entry in sidecar["members"].items():
        path = d / entry["file"]
        if not path.is_file():
            raise ModelFileError(f"{d}: member {name!r} is missing ({entry['file']} not found)")
        size = path.stat().st_size
        if "bytes" in entry and size != entry["bytes"]:
            raise ModelFileError(
                f"{d}: member {name!r} ({entry['file']}) has {size} bytes, expected {entry['bytes']}; "
                "the file is truncated or was modified"
            )
        digest = _sha256(path)
        if digest != entry["sha256"]:
            raise ModelFileError(
                f"{d}: checksum mismatch for member {name!r} ({entry['file']}): SHA-256 {digest[:16]}…, "
                f"expected {entry['sha256'][:16]}…; the file is corrupt or was modified"
            )
        if entry["type"] == "keras":
            saved = _major(entry.get("keras")) or saved_keras
            if saved is not None and now_keras is not None and saved != now_keras:
                raise ModelFileError(
                    f"{d}: member {name!r} was saved with Keras {entry.get('keras')}, incompatible with the "
                    f"installed Keras {_versions().get('keras')} (major version differs)"
                )
    return sidecar


def _load_member(path: Path, entry: Mapping[str, Any], custom_objects: Mapping[str, Any] | None) -> Any:
    if entry["type"] == "keras":
        import keras

        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False, safe_mode=True)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if entry.get("container") == "list":
        keys = sorted(arrays)
        if keys != [f"a{i:05d}" for i in range(len(keys))]:
            raise ModelFileError(f"{path}: array names {keys[:5]}… do not form a list")
        return [arrays[k] for k in keys]
    return arrays


def load_bundle(
    directory: str | os.PathLike,
    *,
    kind: str | None,
    expected_features: Sequence[str] | None = None,
    kind_version: int | None = None,
    custom_objects: Mapping[str, Any] | None = None,
) -> LoadedBundle:
    """Verify and load the bundle at ``directory``.

    Parameters
    ----------
    directory
        The bundle directory written by :func:`save_bundle`.
    kind
        Required kind (``None`` accepts any; then check ``sidecar["kind"]`` yourself).
    expected_features
        Feature names in order the caller will feed; a different list (names or order) is an error.
    kind_version
        Highest schema version of ``kind`` the caller understands; a newer bundle is an error.
    custom_objects
        Passed to ``keras.saving.load_model`` for unregistered custom layers.

    Returns
    -------
    LoadedBundle
        ``(members, sidecar)``: members as saved (Keras models, dicts or lists of numpy arrays), in
        order; the sidecar as a dict.

    Raises
    ------
    ModelFileError
        Missing directory/sidecar/member, checksum or size mismatch (tampered or truncated files),
        wrong kind, feature mismatch, newer bundle format or kind schema, Keras major-version mismatch,
        or a file that fails to deserialise.
    """
    d = Path(directory)
    sidecar = verify_bundle(d, kind=kind, expected_features=expected_features, kind_version=kind_version)
    members: dict[str, Any] = {}
    for name, entry in sidecar["members"].items():
        path = d / entry["file"]
        try:
            members[name] = _load_member(path, entry, custom_objects)
        except ModelFileError:
            raise
        except Exception as exc:
            raise ModelFileError(f"{d}: member {name!r} ({entry['file']}) cannot be loaded: {exc}") from exc
    return LoadedBundle(members, sidecar)


@contextlib.contextmanager
def parse_bundle(
    directory: str | os.PathLike,
    *,
    kind: str | None,
    what: str,
    expected_features: Sequence[str] | None = None,
    kind_version: int | None = None,
) -> Iterator[LoadedBundle]:
    """:func:`load_bundle`, for a ``with`` block that rebuilds the model from what it returns.

    A malformed record met inside the block — ``KeyError``, ``TypeError``, ``ValueError`` (so also
    :class:`~gbi_zfit.errors.InputError` and :class:`~gbi_zfit.errors.ConfigError`) or ``AttributeError``
    — becomes :class:`ModelFileError` ``"{directory}: invalid {what}: {exc}"``; a :class:`ModelFileError`
    passes unchanged::

        with parse_bundle(path, kind="cfm", what="CFM bundle") as (members, sidecar):
            config = CFMConfig.from_dict(sidecar["metadata"]["config"])
    """
    bundle = load_bundle(directory, kind=kind, expected_features=expected_features, kind_version=kind_version)
    try:
        yield bundle
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{directory}: invalid {what}: {exc}") from exc
