"""Shared test fixtures: a zfit/TF state reset between tests and small benchmark samples."""

from __future__ import annotations

import os

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pytest
import zfit

from gbi_zfit.data.benchmark import LHCOSim


@pytest.fixture(autouse=True)
def _reset_zfit_state():
    """Like zfit's own test suite: every test starts with default graph/autograd modes and no caches."""
    zfit.run.set_graph_mode(None)
    zfit.run.set_autograd_mode(True)
    yield
    zfit.run.set_graph_mode(None)
    zfit.run.set_autograd_mode(True)
    zfit.run.clear_graph_cache()


@pytest.fixture(scope="session")
def sim() -> LHCOSim:
    return LHCOSim()


@pytest.fixture(scope="session")
def background_sr(sim):
    """60k background events in the SR (exact SR sampler)."""
    return sim.sample_background_sr(60_000, seed=11)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
