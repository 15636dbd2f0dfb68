"""Sideband validation (gbi_zfit.inference.validation, `gbi validate`): spurious signal in sideband windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from gbi_zfit.cli import main
from gbi_zfit.data.events import COLUMNS, Events
from gbi_zfit.data.mjj import fit_sidebands
from gbi_zfit.data.regions import DEFAULT_SR
from gbi_zfit.errors import InputError, RegionError
from gbi_zfit.inference.validation import (
    SidebandValidation,
    WindowRatio,
    _exact_log_density,
    default_windows,
    validate_sidebands,
)
from gbi_zfit.models import OracleRatio

WINDOW = (3700.0, 4100.0)
THETA = (300.0, 150.0)


def test_default_windows():
    assert default_windows() == [(2900.0, 3300.0), (3700.0, 4100.0), (4100.0, 4500.0)]
    with pytest.raises(RegionError, match="no validation window"):
        default_windows(below=0, above=1, mjj_range=(2650.0, 4000.0))


def test_window_ratio_adds_a_per_event_correction(sim):
    oracle = OracleRatio(sim)
    x = sim.sample_background_sr(300, seed=1).features("paws")
    c = np.linspace(-1.0, 1.0, len(x))
    ratio = WindowRatio(oracle, lambda _x: c)
    base = oracle.log_ratio_numpy(x, *THETA)
    np.testing.assert_allclose(ratio.log_ratio_numpy(x, *THETA), base + c, rtol=1e-12)
    aux = ratio.precompute(tf.constant(x))
    got = ratio.log_ratio_precomputed(
        aux, tf.constant(THETA[0], tf.float64), tf.constant(THETA[1], tf.float64)
    )
    np.testing.assert_allclose(got.numpy(), base + c, rtol=1e-12)
    nodes = ratio.log_ratio_nodes(aux, np.array([THETA]), derivatives=True)
    ref = oracle.log_ratio_nodes(oracle.precompute(tf.constant(x)), np.array([THETA]), derivatives=True)
    np.testing.assert_allclose(nodes[0, 0], ref[0, 0] + c, rtol=1e-12)
    np.testing.assert_allclose(nodes[0, 1:], ref[0, 1:], rtol=1e-12)  # θ-derivatives unchanged
    bad = WindowRatio(oracle, lambda _x: c[:-1])
    with pytest.raises(InputError, match="one number"):
        bad.precompute(tf.constant(x))


class _ExactGenerator:
    """The benchmark's exact p_B(x | mjj) as a 'generator' (a perfect background model)."""

    def __init__(self, sim, mjj_fit):
        self.sim = sim
        self.metadata = {"mjj_fit": mjj_fit.to_dict()}

    def log_prob_marginal(self, x, nodes, log_w):
        x = np.asarray(x)
        terms = [
            self.sim.log_pb_x_given_mjj(x, np.full(len(x), m)) + lw
            for m, lw in zip(nodes, log_w, strict=True)
        ]
        return np.logaddexp.reduce(np.stack(terms), axis=0)


def _with_window_signal(sim, background: Events, n_signal: int, seed: int) -> Events:
    """Background plus ``n_signal`` signal events at THETA with mjj uniform in WINDOW."""
    sig = sim.sample_signal(n_signal, *THETA, seed=seed)
    cols = {k: np.asarray(sig[k]) for k in COLUMNS}
    cols["mjj"] = np.random.default_rng(seed).uniform(*WINDOW, n_signal)
    return Events.concatenate([background, Events(cols, label=np.ones(n_signal, int))])


@pytest.fixture(scope="module")
def background(sim):
    return sim.sample_background(150_000, seed=11)


def test_exact_models_transport_to_the_window_like_the_oracle(sim, background):
    """A perfect generator: the transported ratio is the exact p_S / p_B(x | W), so its fit is the oracle's."""
    events = _with_window_signal(sim, background, 150, seed=12)
    gen = _ExactGenerator(sim, fit_sidebands(background.mjj, DEFAULT_SR))
    res = validate_sidebands(
        events, OracleRatio(sim), gen, windows=[WINDOW], retrain=False, sim=sim, log=lambda _m: None
    )
    (w,) = res.windows
    assert w.n_events == int(((events.mjj >= WINDOW[0]) & (events.mjj < WINDOW[1])).sum())
    assert w.generator == "reused"
    assert w.z_local > 3  # the injected signal is found ...
    assert w.mx == pytest.approx(THETA[0], abs=25) and w.my == pytest.approx(THETA[1], abs=25)  # noqa: PT018
    # ... with the oracle's numbers: the quantile-node densities are exact to well below the errors
    assert abs(w.mu_hat - w.oracle["mu_hat"]) < 0.05 * w.mu_error
    assert abs(w.z_local - w.oracle["z_local"]) < 0.05
    assert res.sigma_mu == pytest.approx(w.mu_hat)
    d = res.to_dict()
    assert d["spurious_signal"]["sigma_mu"] == res.sigma_mu
    assert SidebandValidation.from_dict(json.loads(json.dumps(d))).windows == res.windows


def test_exact_window_density_is_normalised(sim):
    """The oracle's window density (quadrature over mjj) integrates to 1: E_{p_B(SR)}[p_B(W) / p_B(SR)] = 1."""
    x = sim.sample_background_sr(200_000, seed=5).features("paws")
    ratio = np.exp(_exact_log_density(sim, x, *WINDOW) - sim.log_pb_x_sr(x))
    assert ratio.mean() == pytest.approx(1.0, abs=4 * ratio.std() / np.sqrt(len(x)))


def test_a_poor_generator_shows_a_spurious_signal(sim, background):
    """A generator retrained for seconds mismodels the window: far more signal than the oracle finds there."""
    from gbi_zfit.models.flowgen import FlowGenerator, GeneratorConfig

    sb = DEFAULT_SR.sidebands(background)
    gen = FlowGenerator.train_sidebands(sb, GeneratorConfig.preset("test"), seed=2)
    gen.metadata["mjj_fit"] = fit_sidebands(background.mjj, DEFAULT_SR).to_dict()
    res = validate_sidebands(
        background, OracleRatio(sim), gen, windows=[WINDOW], sim=sim, seed=3, log=lambda _m: None
    )
    (w,) = res.windows
    assert w.generator == "retrained"
    assert w.z_local > w.oracle["z_local"] + 3
    assert res.sigma_mu > w.oracle["mu_hat"] + 2 * w.mu_error


def test_bad_inputs(sim, background):
    gen = _ExactGenerator(sim, fit_sidebands(background.mjj, DEFAULT_SR))
    oracle = OracleRatio(sim)
    with pytest.raises(RegionError, match="overlaps the signal region"):
        validate_sidebands(background, oracle, gen, windows=[(3500.0, 3900.0)], retrain=False)
    with pytest.raises(RegionError, match="events"):
        validate_sidebands(background, oracle, gen, windows=[(6500.0, 6900.0)], retrain=False)
    with pytest.raises(InputError, match="low < high"):
        validate_sidebands(background, oracle, gen, windows=[(4100.0, 3700.0)], retrain=False)
    with pytest.raises(InputError, match="density"):
        validate_sidebands(background, oracle, object(), windows=[WINDOW])
    no_fit = _ExactGenerator(sim, fit_sidebands(background.mjj, DEFAULT_SR))
    no_fit.metadata = {}
    with pytest.raises(InputError, match="mjj"):
        validate_sidebands(background, oracle, no_fit, windows=[WINDOW])


# ------------------------------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny flow generator + PAWS ensemble trained through the CLI on a 60k-background file."""
    tmp = tmp_path_factory.mktemp("validate")
    data, run = tmp / "data.npz", tmp / "run"
    assert main(["generate", "--out", str(data), "--n-background", "60000", "--mu", "0", "--seed", "4"]) == 0
    opts = ["--out", str(run), "--preset", "test", "--seed", "5", "--no-progress"]
    assert main(["train", "generator", str(data), *opts]) == 0
    assert main(["train", "paws", "--background", str(run / "data" / "sr_background.npz"), *opts]) == 0
    return data, run


def test_validate_command_writes_the_systematic_for_gbi_fit(run, capsys):
    data, out = run
    argv = ["validate", str(data), "--model", str(out / "models" / "paws"), "--out", str(out)]
    assert main([*argv, "--windows", *map(str, WINDOW), "--reuse-generator", "--check-benchmark"]) == 0
    text = capsys.readouterr().out
    assert "spurious signal σ_ss" in text
    assert "[generator reused]" in text
    result = json.loads((out / "results" / "validate.json").read_text())
    (w,) = result["windows"]
    assert result["spurious_signal"]["sigma_mu"] == max(w["mu_hat"], 0.0)
    assert w["oracle"] is not None
    assert (out / "figures" / "validate.png").stat().st_size > 1000
    # the rerun takes the window from the store
    assert main([*argv, "--windows", *map(str, WINDOW), "--reuse-generator", "--check-benchmark"]) == 0
    assert "from" in capsys.readouterr().out
    path = out / "results" / "validate.json"
    # gbi fit reads the systematic from the file (the fit with it is tested in test_systematics)
    assert main(["fit", str(data), "--oracle", "--spurious-signal", str(path)]) == 0
    assert "spurious" in capsys.readouterr().out


def test_validate_command_bad_inputs_exit_2(run, tmp_path, capsys):
    data, out = run
    model = str(out / "models" / "paws")
    base = ["validate", str(data), "--model", model, "--out", str(tmp_path / "v")]
    assert main([*base, "--windows", "3700"]) == 2
    assert "pairs" in capsys.readouterr().err
    assert main([*base, "--windows", "3500", "3900"]) == 2
    assert "overlaps the signal region" in capsys.readouterr().err
    assert main([*base, "--seed", "-1"]) == 2
    assert "--seed" in capsys.readouterr().err
    assert (
        main(["validate", str(data), "--model", model, "--generator", str(tmp_path), "--out", str(tmp_path)])
        == 2
    )
    capsys.readouterr()


def test_train_generator_writes_a_weighted_reference_that_train_paws_uses(run, capsys):
    from gbi_zfit.data.io import load_npz_weights

    _, out = run
    w = load_npz_weights(out / "data" / "sr_reference.npz")
    assert w is not None
    assert len(w) >= 4900
    assert 0 < w.max() <= 2.0 + 1e-12
    meta = json.loads((out / "models" / "generator" / "model.json").read_text())
    assert "temperatures" in json.dumps(meta)
    sample = out / "data" / "sr_background.npz"
    assert (
        main(
            [
                "train",
                "paws",
                "--background",
                str(sample),
                "--out",
                str(out),
                "--preset",
                "test",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    assert "importance-weighted" in capsys.readouterr().out


def test_normalisation_map_figure(tmp_path):
    from gbi_zfit.models.fidelity import NormalisationCheck, theta_grid
    from gbi_zfit.plotting.validation import plot_normalisation_map

    theta = theta_grid(step=100.0, low=100.0, high=500.0)
    eps = np.linspace(-0.05, 0.08, len(theta))
    check = NormalisationCheck(
        "learned ratio", [tuple(t) for t in theta], eps.tolist(), [0.01] * len(theta), 1000, 100
    )
    fig = plot_normalisation_map(check)
    mesh = fig.axes[0].collections[0]
    assert mesh.get_clim() == pytest.approx((-0.08, 0.08))
    values = np.ma.masked_invalid(mesh.get_array()).compressed()
    np.testing.assert_allclose(np.sort(values), np.sort(eps))  # every θ drawn once, nothing else
    path = plot_normalisation_map(check.to_dict(), tmp_path / "map.png")
    assert path.stat().st_size > 1000


@pytest.mark.slow
def test_train_paws_check_benchmark_writes_both_checks(run, capsys):
    _, out = run
    sample = out / "data" / "sr_background.npz"
    argv = [
        "train",
        "paws",
        "--background",
        str(sample),
        "--out",
        str(out),
        "--preset",
        "test",
        "--seed",
        "5",
    ]
    assert main([*argv, "--check-benchmark"]) == 0
    text = capsys.readouterr().out
    assert "E_B,true" in text
    assert "signal response" in text
    resp = json.loads((out / "results" / "paws_response.json").read_text())
    assert len(resp["response"]) == 45  # the 50-GeV grid within the test preset's 100…500 GeV
    assert all(np.isfinite(resp["response"]))


def test_sigma_ss_counts_valid_windows_only():
    from gbi_zfit.inference.validation import WindowResult

    def win(mu, valid, z=1.0):
        return WindowResult(0.0, 1.0, 5000, mu, 0.001, 300.0, 150.0, z, valid, "retrained")

    res = SidebandValidation([win(0.002, True), win(0.009, False, z=9.0), win(-0.001, True)])
    assert res.sigma_mu == 0.002  # the invalid fit is listed, not counted
    assert res.max_z == 1.0
    assert res.to_dict()["spurious_signal"]["sigma_mu"] == 0.002
    assert SidebandValidation([win(0.009, False)]).sigma_mu == 0.009  # none valid: all count
    assert SidebandValidation([win(-0.001, True)]).sigma_mu == 0.0


def test_store_of_other_events_or_models_is_refused(sim, background, tmp_path):
    from gbi_zfit.errors import ConfigError

    gen = _ExactGenerator(sim, fit_sidebands(background.mjj, DEFAULT_SR))
    kw = {"windows": [WINDOW], "retrain": False, "store_path": tmp_path / "w.jsonl", "log": lambda _m: None}
    first = validate_sidebands(background, OracleRatio(sim), gen, identity={"paws": "a"}, **kw)
    again = validate_sidebands(background, OracleRatio(sim), gen, identity={"paws": "a"}, **kw)
    assert again.windows == first.windows  # resumed from the store
    with pytest.raises(ConfigError):
        validate_sidebands(background, OracleRatio(sim), gen, identity={"paws": "b"}, **kw)
    other = background.select(np.arange(len(background)) % 2 == 0)
    with pytest.raises(ConfigError):
        validate_sidebands(other, OracleRatio(sim), gen, identity={"paws": "a"}, **kw)
