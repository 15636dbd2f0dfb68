"""Executors, seeds, per-worker state and the resumable result store (gbi_zfit.parallel)."""

from __future__ import annotations

import concurrent.futures
import functools
import json
import os
import time
import uuid

import numpy as np
import pytest
from scipy import optimize

from gbi_zfit import parallel
from gbi_zfit.errors import ConfigError, DataFileError, InputError
from gbi_zfit.parallel import (
    DaskExecutor,
    ResultStore,
    SerialExecutor,
    make_executor,
    run_tasks,
    spawn_seeds,
)

N_TASKS = 12


# ---- tasks: module-level, so Dask workers import them by reference -------------------------------------


def make_state(n_events: int = 400) -> dict:
    """The 'expensive' per-worker object; the uuid tells factory calls apart."""
    return {"n_events": n_events, "pid": os.getpid(), "build": uuid.uuid4().hex}


def toy_fit(state: dict, seed: np.random.SeedSequence, interrupt_at: int | None = None, fail_at=None) -> dict:
    """A toy: draw a Gaussian sample and fit (mean, log sigma) by minimising the NLL with scipy."""
    index = int(seed.spawn_key[-1])
    if index == interrupt_at:
        raise KeyboardInterrupt
    if index == fail_at:
        raise ValueError("bad toy")
    rng = np.random.default_rng(seed)
    x = rng.normal(1.5, 0.7, size=state["n_events"])

    def nll(p):
        mu, log_sigma = p
        return float(np.sum(0.5 * ((x - mu) / np.exp(log_sigma)) ** 2 + log_sigma))

    res = optimize.minimize(
        nll, x0=[1.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}
    )
    # a nested spawn inside the task must not change what later runs see
    extra = np.random.default_rng(seed.spawn(1)[0]).uniform()
    return {"mu": float(res.x[0]), "sigma": float(np.exp(res.x[1])), "nll": float(res.fun), "extra": extra}


def whoami(state: dict, item: int) -> tuple[int, str, int]:
    return state["pid"], state["build"], item


def whoami_or_stop(state, item: int) -> int:
    if item == 2:
        raise KeyboardInterrupt
    return item


def count_cached(state, item) -> int:
    return len(parallel._STATE)


# ---- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_executor():
    """One 2-worker LocalCluster (processes) for the module: startup costs seconds."""
    with DaskExecutor(n_workers=2, threads_per_worker=1, processes=True) as ex:
        yield ex


@pytest.fixture(scope="module")
def reference() -> list[dict]:
    """Uninterrupted serial run, no store."""
    return run_tasks(SerialExecutor(), make_state, toy_fit, spawn_seeds(7, N_TASKS), progress=False)


# ---- seeds ----------------------------------------------------------------------------------------------


def test_spawn_seeds_child_independent_of_n():
    a, b = spawn_seeds(3, 5), spawn_seeds(3, 50)
    for sa, sb in zip(a, b[:5], strict=True):
        assert np.array_equal(sa.generate_state(4), sb.generate_state(4))
    assert not np.array_equal(a[0].generate_state(4), a[1].generate_state(4))
    root = np.random.SeedSequence(3)
    first = spawn_seeds(root, 2)
    assert [s.spawn_key for s in spawn_seeds(root, 2)] == [s.spawn_key for s in first]  # root not advanced
    assert len(spawn_seeds(None, 3)) == 3
    with pytest.raises(InputError):
        spawn_seeds(1, -1)


# ---- serial ---------------------------------------------------------------------------------------------


def test_serial_results_reproducible_and_factory_once(reference):
    seeds = spawn_seeds(7, N_TASKS)
    again = run_tasks(SerialExecutor(), make_state, toy_fit, seeds, progress=False)
    assert again == reference  # bit-identical, even though tasks spawn from their seeds
    assert abs(np.mean([r["mu"] for r in reference]) - 1.5) < 0.1
    # one factory call for the whole run, state dropped at the end
    out = run_tasks(SerialExecutor(), make_state, whoami, range(6), progress=True)
    assert len({build for _, build, _ in out}) == 1
    assert [i for _, _, i in out] == list(range(6))
    assert not parallel._STATE


def test_cache_key_keeps_state_between_calls():
    ex = SerialExecutor()
    a = run_tasks(ex, make_state, whoami, range(3), progress=False, cache_key="k1")
    b = run_tasks(ex, make_state, whoami, range(3), progress=False, cache_key="k1")
    assert {x[1] for x in a} == {x[1] for x in b}
    assert len({x[1] for x in a}) == 1
    assert run_tasks(ex, None, count_cached, [0], progress=False) == [1]  # k1 still cached
    ex.clear_cache()
    assert not parallel._STATE


def test_serial_error_has_task_note(tmp_path):
    store = ResultStore(tmp_path / "r.jsonl", {"case": "error"})
    seeds = spawn_seeds(7, N_TASKS)
    with pytest.raises(KeyboardInterrupt):
        run_tasks(SerialExecutor(), None, whoami_or_stop, range(N_TASKS), store=store, progress=False)
    assert store.done() == {0, 1}
    with pytest.raises(ValueError, match="bad toy") as info:
        run_tasks(
            SerialExecutor(),
            make_state,
            functools.partial(toy_fit, fail_at=4),
            seeds,
            store=store,
            progress=False,
        )
    assert any("task 4" in note for note in info.value.__notes__)  # original index, also when resumed
    assert any("4 of 12 tasks finished and are saved" in note for note in info.value.__notes__)
    assert ResultStore(tmp_path / "r.jsonl", {"case": "error"}).done() == {0, 1, 2, 3}
    assert not parallel._STATE  # dropped on error too


# ---- store and resume -----------------------------------------------------------------------------------


def test_store_resume_after_interrupt(tmp_path, reference):
    path, config = tmp_path / "toys.jsonl", {"mu": 0.01, "seed": 7}
    seeds = spawn_seeds(7, N_TASKS)
    with pytest.raises(KeyboardInterrupt):
        run_tasks(
            SerialExecutor(),
            make_state,
            functools.partial(toy_fit, interrupt_at=5),
            seeds,
            store=ResultStore(path, config),
            progress=False,
        )
    store = ResultStore(path, config)
    assert store.done() == set(range(5))
    out = run_tasks(SerialExecutor(), make_state, toy_fit, seeds, store=store, progress=False)
    assert out == reference
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["config"] == config
    indices = [json.loads(line)["index"] for line in lines[1:]]
    assert sorted(indices) == list(range(N_TASKS))  # each task exactly once
    assert [r["result"] for r in ResultStore(path).load()] == reference
    # nothing left to do: no task runs (an interrupting task would raise)
    again = run_tasks(
        SerialExecutor(),
        make_state,
        functools.partial(toy_fit, interrupt_at=0),
        seeds,
        store=store,
        progress=False,
    )
    assert again == reference
    # extending the run keeps the finished toys and adds identical new ones
    longer = run_tasks(
        SerialExecutor(), make_state, toy_fit, spawn_seeds(7, N_TASKS + 2), store=store, progress=False
    )
    assert longer[:N_TASKS] == reference
    assert len(store) == N_TASKS + 2


def test_store_truncated_last_line_is_dropped(tmp_path, reference):
    path, config = tmp_path / "toys.jsonl", {"seed": 7}
    seeds = spawn_seeds(7, N_TASKS)
    run_tasks(
        SerialExecutor(), make_state, toy_fit, seeds[:6], store=ResultStore(path, config), progress=False
    )
    raw = path.read_bytes()
    path.write_bytes(raw[:-25])  # a crash in the middle of writing task 5 (or a write in progress)
    reader = ResultStore(path, read_only=True)  # e.g. summarising a live run: sees 5, changes nothing
    assert reader.done() == set(range(5))
    assert path.read_bytes() == raw[:-25]
    with pytest.raises(InputError, match="read-only"):
        reader.append(5, {})
    with pytest.raises(DataFileError, match="no result store"):
        ResultStore(tmp_path / "missing.jsonl", read_only=True)
    assert not (tmp_path / "missing.jsonl").exists()
    store = ResultStore(path, config)
    assert store.done() == set(range(5))
    assert path.read_bytes().endswith(b"\n")  # partial line removed before appending
    out = run_tasks(SerialExecutor(), make_state, toy_fit, seeds, store=store, progress=False)
    assert out == reference
    assert len(path.read_text().splitlines()) == 1 + N_TASKS


def test_store_config_mismatch_and_corruption(tmp_path):
    path = tmp_path / "r.jsonl"
    store = ResultStore(path, {"mu": 0.01, "model": "oracle"}, meta={"cmd": "gbi toys"})
    store.append(0, {"x": np.float32(0.25), "v": np.arange(3), "t": (1, 2)})
    assert store.load() == [{"index": 0, "result": {"x": 0.25, "v": [0, 1, 2], "t": [1, 2]}}]
    assert ResultStore(path, {"model": "oracle", "mu": 0.01}).done() == {0}  # key order irrelevant
    with pytest.raises(ConfigError, match="different configuration"):
        ResultStore(path, {"mu": 0.02, "model": "oracle"})
    assert ResultStore(path).done() == {0}  # reading without a config is allowed
    with pytest.raises(InputError, match="task 1"):
        store.append(1, object())
    assert ResultStore(path).done() == {0}
    with path.open("a") as fh:
        fh.write("{not json}\n")
    with pytest.raises(DataFileError, match="corrupt"):
        ResultStore(path)
    other = tmp_path / "other.jsonl"
    other.write_text('{"a": 1}\n')
    with pytest.raises(DataFileError, match="not a gbi_zfit result store"):
        ResultStore(other)


# ---- dask -----------------------------------------------------------------------------------------------


def test_dask_identical_to_serial(dask_executor, reference):
    seeds = spawn_seeds(7, N_TASKS)
    out = run_tasks(dask_executor, make_state, toy_fit, seeds, progress=False, desc="toys")
    assert out == reference
    assert dask_executor.n_workers == 2


def test_dask_factory_once_per_worker(dask_executor):
    out = run_tasks(dask_executor, functools.partial(make_state, 10), whoami, range(40), progress=True)
    assert sorted(i for _, _, i in out) == list(range(40))
    builds_by_pid: dict[int, set[str]] = {}
    for pid, build, _ in out:
        builds_by_pid.setdefault(pid, set()).add(build)
    assert 1 <= len(builds_by_pid) <= 2
    assert os.getpid() not in builds_by_pid  # ran in the worker processes
    assert all(len(builds) == 1 for builds in builds_by_pid.values())  # one factory call per worker
    assert set(dask_executor.client.run(lambda: len(parallel._STATE)).values()) == {0}  # dropped after run


def test_dask_resume_of_serial_run_and_error(dask_executor, tmp_path, reference):
    path, config = tmp_path / "toys.jsonl", {"seed": 7}
    seeds = spawn_seeds(7, N_TASKS)
    with pytest.raises(KeyboardInterrupt):
        run_tasks(
            SerialExecutor(),
            make_state,
            functools.partial(toy_fit, interrupt_at=4),
            seeds,
            store=ResultStore(path, config),
            progress=False,
        )
    out = run_tasks(
        dask_executor, make_state, toy_fit, seeds, store=ResultStore(path, config), progress=False
    )
    assert out == reference
    assert len(path.read_text().splitlines()) == 1 + N_TASKS

    store = ResultStore(tmp_path / "err.jsonl", config)
    with pytest.raises(ValueError, match="bad toy") as info:
        run_tasks(
            dask_executor,
            make_state,
            functools.partial(toy_fit, fail_at=3),
            seeds,
            store=store,
            progress=False,
        )
    assert any("task 3" in note for note in info.value.__notes__)
    assert 3 not in store.done()


def test_scheduler_address_connects_without_owning(dask_executor, reference):
    seeds = spawn_seeds(7, N_TASKS)
    with make_executor(scheduler=dask_executor.scheduler_address) as ex:
        assert isinstance(ex, DaskExecutor)
        out = run_tasks(ex, make_state, toy_fit, seeds, progress=False)
    assert out == reference
    # closing the connected executor left the cluster running
    assert run_tasks(dask_executor, None, count_cached, [0, 1], progress=False) == [0, 0]


def test_make_executor_choices_and_bad_address():
    assert isinstance(make_executor(), SerialExecutor)
    with pytest.raises(ConfigError, match="cannot connect"):
        DaskExecutor(scheduler_address="tcp://127.0.0.1:9", timeout=1)


def slow_state() -> dict:
    time.sleep(0.2)
    return make_state()


def test_state_built_once_by_concurrent_threads():
    token = "threads-test"
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            states = list(pool.map(lambda _: parallel._get_state(token, slow_state), range(8)))
        assert len({s["build"] for s in states}) == 1
    finally:
        parallel._drop_state(token, retire=True)
    assert parallel._get_state(token, make_state)["build"] != states[0]["build"]  # retired: not cached
    assert token not in parallel._STATE
