"""One executor interface for toys, scan points and ensemble members.

Work is a list of independent tasks ``task_fn(state, item)``. Where it runs is chosen by the executor:

* :class:`SerialExecutor` — in-process (the default);
* :class:`DaskExecutor` — a :class:`distributed.LocalCluster` started for the run (``gbi ... --dask``) or
  any running Dask scheduler (``gbi ... --scheduler ADDRESS``).

:func:`make_executor` maps those command-line options to an executor. Three guarantees make the results
independent of the executor and of the number of workers:

* **Seeds.** :func:`spawn_seeds` gives task ``i`` the ``i``-th child of ``SeedSequence(seed)``; the child
  depends neither on the number of tasks nor on where or when the task runs.
* **Isolation.** Tasks only see a copy of their item (the serial executor deep-copies it, as a process
  boundary would), so a task cannot change what the next one receives.
* **Per-worker state.** Expensive objects (a compiled zfit loss, a loaded model) are built by
  ``factory()`` once per worker process, not once per task, and cached there (:func:`run_tasks`).

:func:`run_tasks` can write every finished task to a :class:`ResultStore` (JSON Lines, flushed and
fsynced per task); rerunning with the same store skips what is already done, so an interrupted run
(Ctrl-C, a crash, a killed batch job) resumes without losing finished tasks.

Everything sent to Dask workers — ``factory``, ``task_fn`` and the items — must be picklable: use
module-level functions or :func:`functools.partial` of them, not lambdas or closures (the serial executor
does not pickle, but code that runs serially should not break under ``--dask``).

Examples
--------
>>> import functools
>>> import numpy as np
>>> def mean_of_draws(state, seed):                       # a toy: any module-level function
...     return float(np.random.default_rng(seed).normal(size=state["n"]).mean())
>>> seeds = spawn_seeds(42, 4)
>>> with make_executor() as ex:                            # make_executor(dask=True) for a LocalCluster
...     results = run_tasks(ex, functools.partial(dict, n=100), mean_of_draws, seeds, progress=False)
>>> len(results)
4
"""

from __future__ import annotations

import abc
import collections
import copy
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ._util import atomic_write_text
from .errors import ConfigError, DataFileError, InputError

__all__ = [
    "DaskExecutor",
    "Executor",
    "ResultStore",
    "SerialExecutor",
    "make_executor",
    "run_tasks",
    "spawn_seeds",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# seeds


def spawn_seeds(seed: int | np.random.SeedSequence | None, n: int) -> list[np.random.SeedSequence]:
    """Independent child seeds for ``n`` tasks: ``SeedSequence(seed).spawn(n)``.

    Child ``i`` has spawn key ``(i,)``, so it is the same for any ``n > i``: task ``i`` draws the same
    numbers with 1 or N workers, in any completion order, and when a run is extended to more tasks.

    Parameters
    ----------
    seed
        Root seed (an int, or a ``SeedSequence`` to nest). ``None`` draws fresh OS entropy, which is
        logged so the run can be reproduced.
    n
        Number of children.

    Returns
    -------
    list of numpy.random.SeedSequence
        Pass child ``i`` to ``np.random.default_rng`` inside task ``i``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"number of seeds must be an integer >= 0, got {n!r}")
    if isinstance(seed, np.random.SeedSequence):
        # spawn() advances the parent's counter; spawn from a fresh copy so that calling this twice with
        # the same SeedSequence gives the same children (as it does for an int).
        root = np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key, pool_size=seed.pool_size)
    else:
        try:
            root = np.random.SeedSequence(seed)
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"seed must be None, an integer ≥ 0 or a SeedSequence, got {seed!r} ({exc})"
            ) from None
        if seed is None:
            log.info(
                "spawn_seeds: no seed given, using entropy %d (pass it as seed to reproduce)", root.entropy
            )
    return root.spawn(n)


# --------------------------------------------------------------------------------------------------
# per-worker state cache

# Lives in the module, so there is one cache per process: in-process for the serial executor, one per
# worker process under Dask (each worker imports this module once). Keys are tokens chosen by run_tasks.
_STATE_MAX = 4
_STATE: collections.OrderedDict[str, Any] = collections.OrderedDict()
_STATE_LOCK = threading.Lock()  # guards the dicts only; never held while a factory runs
_BUILD_LOCKS: dict[str, threading.Lock] = {}  # one per token being built: threads of a worker wait for it
# Tokens of finished runs: a task of that run still executing after it was cancelled must not re-cache a
# state nobody will drop. Bounded; tokens are short strings.
_RETIRED: collections.OrderedDict[str, None] = collections.OrderedDict()
_RETIRED_MAX = 1024


def _cached(token: str) -> tuple[bool, Any]:
    """(found, state); call with _STATE_LOCK held."""
    if token in _STATE:
        _STATE.move_to_end(token)
        return True, _STATE[token]
    return False, None


def _get_state(token: str, factory: Callable[[], Any] | None) -> Any:
    if factory is None:
        return None
    with _STATE_LOCK:
        found, state = _cached(token)
        if found:
            return state
        build_lock = _BUILD_LOCKS.setdefault(token, threading.Lock())
    # The factory may take long (compiling a loss): build outside _STATE_LOCK so _drop_state, which Dask
    # runs in the worker's event loop, never waits for it.
    with build_lock:
        with _STATE_LOCK:
            found, state = _cached(token)  # another thread of this worker built it meanwhile
            if found:
                return state
        state = factory()
        with _STATE_LOCK:
            _BUILD_LOCKS.pop(token, None)
            if token not in _RETIRED:  # else: a cancelled leftover, its result is discarded anyway
                _STATE[token] = state
                while len(_STATE) > _STATE_MAX:  # bounded: stale states (compiled losses) must not pile up
                    _STATE.popitem(last=False)
        return state


def _drop_state(token: str | None = None, retire: bool = False) -> int:
    """Forget one cached state (or all with ``token=None``); returns how many remain.

    ``retire``: the token's run is over, never cache it again in this process.
    """
    with _STATE_LOCK:
        if token is None:
            _STATE.clear()
        else:
            _STATE.pop(token, None)
            if retire:
                _RETIRED[token] = None
                while len(_RETIRED) > _RETIRED_MAX:
                    _RETIRED.popitem(last=False)
        return len(_STATE)


def _run_with_state(token: str, factory: Callable[[], Any] | None, task_fn: Callable, item: Any) -> Any:
    return task_fn(_get_state(token, factory), item)


# --------------------------------------------------------------------------------------------------
# executors


def _add_note(exc: BaseException, index: int, item: Any) -> None:
    text = repr(item)
    if len(text) > 200:
        text = text[:200] + "..."
    _note(exc, f"gbi_zfit.parallel: raised by task {index} (item {text})")


def _note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(note)


class Executor(abc.ABC):
    """Runs independent tasks and yields ``(index, result)`` as they finish.

    Use as a context manager (or call :meth:`close`) so that clusters and connections are released.
    """

    @abc.abstractmethod
    def map(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        desc: str | None = None,
        progress: bool = True,
        indices: Sequence[int] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Apply ``fn`` to every item; yield ``(index, fn(items[index]))`` in order of completion.

        Parameters
        ----------
        fn
            A picklable callable of one argument.
        items
            The task inputs; ``index`` is the position in this iterable.
        desc
            Label of the tqdm progress bar.
        progress
            Show a tqdm progress bar (on stderr).
        indices
            Task numbers of the items, yielded and named in error notes instead of the positions
            (e.g. the original indices of the tasks left to do in a resumed run).

        Raises
        ------
        Exception
            The first exception raised by a task, re-raised unchanged with a note naming the task index.
            Results yielded before it stay valid; pending tasks are cancelled.
        """

    @property
    def n_workers(self) -> int:
        """Number of tasks that can run at the same time."""
        return 1

    def _forget_state(self, token: str | None, retire: bool = False) -> None:
        _drop_state(token, retire)

    def clear_cache(self) -> None:
        """Drop every per-worker state cached by :func:`run_tasks` (``cache_key`` states included)."""
        self._forget_state(None)

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release in-process
        """Release resources (no-op for in-process execution)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class SerialExecutor(Executor):
    """Run tasks one after the other in this process.

    Each item is deep-copied before the call, so tasks behave as under a process-based executor (e.g. a
    task that calls ``seed.spawn()`` does not change the seed the caller holds). A ``KeyboardInterrupt``
    stops after the running task; every result yielded before stays valid (and saved by
    :func:`run_tasks`).
    """

    def map(self, fn, items, *, desc=None, progress=True, indices=None):
        items = list(items)
        indices = _check_indices(indices, len(items))
        with tqdm(total=len(items), desc=desc, disable=not progress, unit="task") as bar:
            for index, item in zip(indices, items, strict=True):
                try:
                    result = fn(copy.deepcopy(item))
                except Exception as exc:
                    _add_note(exc, index, item)
                    raise
                bar.update()
                yield index, result


class DaskExecutor(Executor):
    """Run tasks on a Dask cluster: a new :class:`distributed.LocalCluster`, or a running scheduler.

    Parameters
    ----------
    n_workers
        Worker processes of the local cluster; default: the number of CPU cores available to this process.
        Ignored with ``scheduler_address``.
    threads_per_worker
        Threads per worker. Keep 1 for tasks that share a per-worker state (a zfit loss is not
        thread-safe) and let each worker's TensorFlow use this many intra-op threads.
    scheduler_address
        Address of a running Dask scheduler (e.g. ``"tcp://10.0.0.1:8786"``); the cluster is not owned
        and stays up on :meth:`close`.
    processes
        Local workers as processes (True) or threads of this process (False, no pickling of data, but the
        GIL and TensorFlow's global state are shared).
    timeout
        Seconds to wait for the connection to the scheduler.
    **cluster_kwargs
        Passed to :class:`distributed.LocalCluster`.

    Raises
    ------
    ImportError
        ``dask``/``distributed`` are not installed (``pip install 'gbi_zfit[dask]'``).
    ConfigError
        The scheduler at ``scheduler_address`` cannot be reached.

    Notes
    -----
    Local worker processes are *spawned*: they import the caller's main module again, so a script that
    creates a ``DaskExecutor`` must do so under ``if __name__ == "__main__":``. Worker log messages below
    ERROR are silenced; a failing task is also logged by its worker before it is re-raised here.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        scheduler_address: str | None = None,
        processes: bool = True,
        *,
        timeout: float = 30.0,
        **cluster_kwargs: Any,
    ):
        try:  # optional dependency: import on use so the serial path never needs it
            import dask
            import distributed
        except ImportError as exc:
            raise ImportError(
                "parallel execution with Dask needs dask and distributed: pip install 'gbi_zfit[dask]'"
            ) from exc
        self._distributed = distributed
        self._cluster = None
        self.client = None
        if scheduler_address is not None:
            try:
                self.client = distributed.Client(
                    scheduler_address, timeout=f"{timeout}s", set_as_default=False
                )
            except (OSError, TimeoutError, ValueError) as exc:  # ValueError: malformed address
                raise ConfigError(
                    f"cannot connect to the Dask scheduler at {scheduler_address!r} within {timeout:g} s: "
                    f"{exc}; check the address (e.g. tcp://host:8786) and that the scheduler is running"
                ) from exc
            return
        if n_workers is None:
            n_workers = _available_cores()
        if n_workers < 1 or threads_per_worker < 1:
            raise InputError(
                f"n_workers and threads_per_worker must be >= 1, got {n_workers}, {threads_per_worker}"
            )
        options: dict[str, Any] = {
            "n_workers": n_workers,
            "threads_per_worker": threads_per_worker,
            "processes": processes,
            "dashboard_address": None,  # no dashboard for a batch run
            # The scheduler still serves health/metrics over HTTP, by default on port 8787 with a
            # UserWarning when that is taken (a second cluster): bind a free port, on localhost only.
            "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            "silence_logs": logging.ERROR,
        }
        if processes:
            # distributed already pins OMP/MKL/OpenBLAS to 1 thread per worker; TensorFlow ignores those and
            # would start one thread per core in every worker. Respect a value the user set explicitly.
            options["env"] = {
                "TF_NUM_INTRAOP_THREADS": os.environ.get("TF_NUM_INTRAOP_THREADS", str(threads_per_worker))
            }
        options.update(cluster_kwargs)
        # distributed starts workers with MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold
        # at 128 kB: every large numpy/TF buffer is then mmap'ed and page-faulted anew (measured: a toy's
        # CPU time 4.6 → 9.2 s in one process). Keep freed memory in the heap instead; these must be set
        # before the worker process starts, hence pre-spawn-environ. A value the user set is kept.
        pre_spawn = {
            f"distributed.nanny.pre-spawn-environ.{k}": os.environ.get(k, v)
            for k, v in (("MALLOC_TRIM_THRESHOLD_", str(1 << 30)), ("MALLOC_MMAP_THRESHOLD_", str(32 << 20)))
        }
        with dask.config.set(pre_spawn):
            self._cluster = distributed.LocalCluster(**options)
        try:
            self.client = distributed.Client(self._cluster, timeout=f"{timeout}s", set_as_default=False)
        except BaseException:
            self._cluster.close()
            raise

    @property
    def scheduler_address(self) -> str:
        """Address other clients (or :func:`make_executor`) can connect to."""
        return self.client.scheduler.address

    @property
    def n_workers(self) -> int:
        return max(1, sum(self.client.nthreads().values()))

    def map(self, fn, items, *, desc=None, progress=True, indices=None):
        items = list(items)
        indices = _check_indices(indices, len(items))
        if not items:
            return
        client = self.client
        # Ship fn once per worker (fetched from a peer on first use), not once per task: a factory may
        # carry a dataset or model weights.
        fn_ref = client.scatter(fn, hash=False)
        run = uuid.uuid4().hex[:12]
        label = "".join(c if c.isalnum() else "_" for c in (desc or "task"))
        keys = [f"gbi-{label}-{run}-{i}" for i in indices]
        futures = client.map(_apply, [fn_ref] * len(items), items, key=keys)
        position = {f.key: j for j, f in enumerate(futures)}
        pending = set(futures)
        completed = self._distributed.as_completed(futures, loop=client.loop)
        del futures  # hold only unfinished futures, so finished results can leave the cluster's memory
        try:
            with tqdm(total=len(items), desc=desc, disable=not progress, unit="task") as bar:
                for future in completed:
                    pending.discard(future)
                    j = position[future.key]
                    index = indices[j]
                    try:
                        result = future.result()
                    except Exception as exc:
                        _add_note(exc, index, items[j])
                        raise
                    future.release()
                    bar.update()
                    yield index, result
        finally:
            # Error, Ctrl-C or an abandoned generator: do not leave tasks running on a shared cluster.
            if pending:
                client.cancel(list(pending))
            fn_ref.release()

    def _forget_state(self, token, retire=False):
        super()._forget_state(token, retire)
        self.client.run(_drop_state, token, retire)

    def close(self) -> None:
        """Close the client, and the cluster if this executor started it."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _check_indices(indices: Sequence[int] | None, n: int) -> list[int]:
    if indices is None:
        return list(range(n))
    indices = [int(i) for i in indices]
    if len(indices) != n or len(set(indices)) != n:
        raise InputError(f"indices must be {n} distinct task numbers, one per item")
    return indices


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_executor(dask: bool = False, scheduler: str | None = None, n_workers: int | None = None) -> Executor:
    """The executor selected by the command-line options ``--dask`` and ``--scheduler ADDRESS``.

    Parameters
    ----------
    dask
        Start a :class:`distributed.LocalCluster` with ``n_workers`` single-threaded worker processes.
    scheduler
        Connect to the Dask scheduler at this address instead (implies ``dask``).
    n_workers
        Local workers; default: one per available CPU core.

    Returns
    -------
    Executor
        A :class:`SerialExecutor` unless ``dask`` or ``scheduler`` is given.
    """
    if scheduler:
        return DaskExecutor(scheduler_address=scheduler)
    if dask:
        return DaskExecutor(n_workers=n_workers)
    return SerialExecutor()


# --------------------------------------------------------------------------------------------------
# result store


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (Path, np.random.SeedSequence)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(obj, default=_json_default, **kw)


def config_hash(config: Any) -> str:
    """SHA-256 of the canonical JSON form of ``config`` (key order does not matter)."""
    try:
        text = _dumps(config, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InputError(f"the configuration must be JSON-serialisable: {exc}") from exc
    return hashlib.sha256(text.encode()).hexdigest()


_MAGIC = "gbi_zfit_results"


class ResultStore:
    """Finished task results in a JSON Lines file, appended as tasks finish, for resumable runs.

    Line 1 is a header ``{"gbi_zfit_results": 1, "config_hash": ..., "config": ..., "meta": ...}``, every
    further line one task ``{"index": i, "result": ...}``. Results must be JSON-serialisable (numpy
    scalars and arrays, dataclasses, tuples are converted; NaN/inf are written as ``NaN``/``Infinity``,
    which Python reads back). Floats round-trip exactly.

    Each line is written with a single ``write`` and then flushed and fsynced, so a crash loses at most
    the line being written. A last line without its newline is such a partial write: it is dropped
    (logged at WARNING) and removed from the file before new results are appended. A malformed complete
    line is corruption and raises :class:`DataFileError`. If an index appears twice, the first is kept.
    One writer per file.

    Parameters
    ----------
    path
        The ``.jsonl`` file; created (with its directory) if missing.
    config
        What determines the results (method, model, μ, ...; JSON-serialisable). Its hash is stored in the
        header; reopening an existing store with a different ``config`` raises :class:`ConfigError`, so
        a resumed run cannot mix results of two configurations. Leave the *number* of tasks out of it:
        with :func:`spawn_seeds`, extending a run from 100 to 200 toys keeps the first 100 valid.
        ``None`` opens an existing store without checking (for reading).
    meta
        Extra, unchecked information for the header of a new store (versions, command line, ...).
    fsync
        Fsync after every line (durable on power loss; costs ~ms per task).
    read_only
        Open an existing store for reading only: nothing is created, repaired or appended, so a store can
        be summarised while its run is still writing to it (an incomplete last line is skipped, not cut).

    Raises
    ------
    ConfigError
        The existing store was written with a different configuration.
    DataFileError
        The file is not a result store or is corrupt.
    """

    def __init__(
        self,
        path: str | Path,
        config: Any = None,
        *,
        meta: Mapping[str, Any] | None = None,
        fsync: bool = True,
        read_only: bool = False,
    ):
        self.path = Path(path)
        if self.path.is_dir():
            raise DataFileError(f"{self.path} is a directory; give the path of a result-store file (.jsonl)")
        if read_only and not (self.path.exists() and self.path.stat().st_size > 0):
            raise DataFileError(f"{self.path}: no result store there (missing or empty file)")
        self.fsync = fsync
        self.read_only = read_only
        self._check_config = config is not None
        self.config_hash = config_hash(config) if config is not None else None
        self.header: dict[str, Any] = {}
        self._records: dict[int, Any] = {}
        if self.path.exists() and self.path.stat().st_size > 0:
            self._open_existing()
        else:
            from . import __version__

            self.header = {
                _MAGIC: 1,
                "config_hash": self.config_hash,
                "config": config,
                "meta": dict(meta or {}),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "gbi_zfit": __version__,
            }
            try:
                line = _dumps(self.header)
            except TypeError as exc:
                raise InputError(f"config/meta of the result store must be JSON-serialisable: {exc}") from exc
            atomic_write_text(self.path, line + "\n")  # a store is either absent or has its header

    def _open_existing(self) -> None:
        raw = self.path.read_bytes()
        complete, _, partial = raw.rpartition(b"\n")
        lines = complete.decode("utf-8").split("\n") if complete else []
        if partial and not self.read_only:  # a reader may just see a write in progress
            log.warning(
                "%s: dropping an incomplete last line (%d bytes) left by an interrupted write",
                self.path,
                len(partial),
            )
        if not lines:
            raise DataFileError(f"{self.path}: no complete header line; not a gbi_zfit result store")
        try:
            header = json.loads(lines[0])
        except json.JSONDecodeError as exc:
            raise DataFileError(
                f"{self.path}: unreadable header ({exc}); not a gbi_zfit result store"
            ) from exc
        if not isinstance(header, dict) or _MAGIC not in header:
            raise DataFileError(f"{self.path}: not a gbi_zfit result store (no {_MAGIC!r} header)")
        if self._check_config and header.get("config_hash") != self.config_hash:
            raise ConfigError(
                f"{self.path} holds results of a different configuration (hash {header.get('config_hash')}, "
                f"now {self.config_hash}); resume only with the same settings, or write to a new file.\n"
                f"stored config: {_dumps(header.get('config'), sort_keys=True)}"
            )
        self.header = header
        self.config_hash = header.get("config_hash")
        for lineno, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                index = int(record["index"])
                result = record["result"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataFileError(
                    f"{self.path}:{lineno}: corrupt record ({exc}); move the file away or delete that line"
                ) from exc
            self._records.setdefault(index, result)
        if partial and not self.read_only:
            # Cut the partial line now; appending after it would glue a new record onto it.
            atomic_write_text(self.path, complete.decode("utf-8") + "\n")

    def done(self) -> set[int]:
        """Indices of the finished tasks."""
        return set(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, index: int) -> bool:
        return index in self._records

    def load(self) -> list[dict[str, Any]]:
        """All records ``{"index": i, "result": ...}`` sorted by index."""
        return [{"index": i, "result": self._records[i]} for i in sorted(self._records)]

    def results(self) -> dict[int, Any]:
        """``{index: result}`` of the finished tasks, sorted by index (results as read back from JSON)."""
        return {i: self._records[i] for i in sorted(self._records)}

    def append(self, index: int, result: Any) -> Any:
        """Write one finished task; returns the result as it reads back from the file.

        Raises
        ------
        InputError
            ``result`` is not JSON-serialisable (nothing is written).
        """
        if self.read_only:
            raise InputError(f"{self.path} was opened read-only; open it without read_only=True to append")
        index = int(index)
        try:
            line = _dumps({"index": index, "result": result})
        except (TypeError, ValueError) as exc:
            raise InputError(
                f"result of task {index} cannot be stored as JSON: {exc}; return dicts/lists of numbers, "
                "strings, bools, None or numpy scalars/arrays"
            ) from exc
        stored = json.loads(line)["result"]
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        self._records.setdefault(index, stored)
        return self._records[index]


# --------------------------------------------------------------------------------------------------
# high level


def run_tasks(
    executor: Executor,
    factory: Callable[[], Any] | None,
    task_fn: Callable[[Any, Any], Any],
    items: Sequence[Any],
    *,
    store: ResultStore | None = None,
    desc: str | None = None,
    progress: bool = True,
    cache_key: str | None = None,
) -> list[Any]:
    """Run ``task_fn(state, item)`` for every item, with ``state = factory()`` built once per worker.

    Parameters
    ----------
    executor
        Where to run (:func:`make_executor`).
    factory
        Builds the per-worker state (e.g. a compiled loss); called at most once per worker process and
        run. ``None``: ``state`` is ``None``. Must be picklable for Dask.
    task_fn
        ``task_fn(state, item) -> result``; picklable (module-level function or ``functools.partial``).
        Must not depend on which worker runs it; draw random numbers only from a seed in ``item``
        (:func:`spawn_seeds`) so results are identical for any executor.
    items
        Task inputs; task ``i`` gets ``items[i]``.
    store
        Save every finished task there as it finishes and skip tasks already in it (resume). Stored
        indices ``>= len(items)`` are kept in the file and left out of the return value.
    desc
        Progress bar label.
    progress
        Show a tqdm progress bar.
    cache_key
        Keep the state in the workers after the run under this key and reuse it in later calls with the
        same key (e.g. toys at several μ with one compiled loss). The key must change whenever the
        factory would build something different. Default: the state is built for this call only and
        dropped at its end.

    Returns
    -------
    list
        Results in item order. With a store they are the values as read back from JSON (tuples become
        lists, numpy scalars Python numbers), identical whether they were computed now or resumed.

    Raises
    ------
    Exception
        The first failing task's exception (with a note naming its index); finished tasks stay in the
        store. ``KeyboardInterrupt`` likewise stops the run with finished tasks saved.
    """
    items = list(items)
    n = len(items)
    done = store.done() if store is not None else set()
    todo = [i for i in range(n) if i not in done]
    results: list[Any] = [None] * n
    if store is not None:
        stored = store.results()
        for i in range(n):
            if i in stored:
                results[i] = stored[i]
        if len(todo) < n:
            log.info(
                "%s: resuming, %d of %d tasks already in %s", desc or "tasks", n - len(todo), n, store.path
            )
    if not todo:
        return results

    token = cache_key if cache_key is not None else f"run-{uuid.uuid4().hex}"
    fn = functools.partial(_run_with_state, token, factory, task_fn)
    label = desc if len(todo) == n else f"{desc or 'tasks'} ({n - len(todo)} done before)"
    finished = 0
    try:
        for index, result in executor.map(
            fn, [items[i] for i in todo], desc=label, progress=progress, indices=todo
        ):
            results[index] = store.append(index, result) if store is not None else result
            finished += 1
    except Exception as exc:
        if store is not None:
            _note(exc, f"{n - len(todo) + finished} of {n} tasks finished and are saved in {store.path}")
        raise
    except KeyboardInterrupt:
        if store is not None:
            log.warning(
                "interrupted: %d of %d tasks saved in %s; rerun with the same store to resume",
                n - len(todo) + finished,
                n,
                store.path,
            )
        raise
    finally:
        if cache_key is None:
            try:
                executor._forget_state(token, retire=True)
            except Exception:  # cleanup only: never mask the task's own error
                log.debug("could not drop worker state %s", token, exc_info=True)
    return results
