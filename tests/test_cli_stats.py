"""`gbi toys` and `gbi coverage`, in-process through `gbi_zfit.cli.main`, on tiny toy configurations."""

from __future__ import annotations

import json
import re
import runpy
import shutil
from pathlib import Path

import pytest

import gbi_zfit.inference.toys as toys_module
from gbi_zfit.cli import main
from gbi_zfit.inference.coverage import CoverageResult

# 3000 expected SR background events, no MINOS: ≈ 0.3 s per toy after ≈ 4 s of per-run setup
TINY = ["--n-background-sr", "3000", "--minos-toys", "0", "--no-progress"]
TAG = "oracle_sb1_mx300_my150"
N = 3


def _no_toys(monkeypatch):
    """Make any toy that would be computed fail the test: what follows must come from the store."""

    def boom(state, seed):
        raise AssertionError(f"toy {seed.spawn_key} was recomputed")

    monkeypatch.setattr(toys_module, "run_one_toy", boom)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def toys_run(tmp_path_factory):
    """One `gbi toys` run of N tiny toys; tests work on copies of its output directory."""
    out = tmp_path_factory.mktemp("toys") / "out"
    assert main(["toys", *TINY, "--n-toys", str(N), "--out", str(out)]) == 0
    return out


@pytest.fixture
def out(toys_run, tmp_path):
    dst = tmp_path / "out"
    shutil.copytree(toys_run, dst)
    return dst


def test_help_lists_the_statistics_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "toys" in text
    assert "coverage" in text
    for cmd in ("toys", "coverage"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert f"gbi {cmd} --s-over-sqrt-b 1" in text  # the epilog's examples
        assert "--scheduler ADDRESS" in text
        c = toys_module.ToyConfig()  # the help states the dataclass's defaults
        for default in (c.s_over_sqrt_b, c.mx, c.my, int(c.n_background_sr)):
            assert re.search(rf"\(default {default:g}[) ]", " ".join(text.split())), default


def test_toys_write_store_figures_and_manifest(out):
    store = out / "results" / "toys.jsonl"
    lines = _lines(store)
    assert len(lines) == 1 + N  # header + one line per toy
    header = json.loads(lines[0])["config"]
    assert header["seed"] == 1
    assert header["toys"]["n_background_sr"] == 3000
    assert header["toys"]["minos_toys"] == 0
    assert sorted(json.loads(line)["index"] for line in lines[1:]) == list(range(N))
    for name in (f"pulls_{TAG}.png", f"test_statistics_{TAG}.png"):
        assert (out / "figures" / name).stat().st_size > 10_000
    entry = json.loads((out / "manifest.json").read_text())[-1]
    assert entry["subcommand"] == "toys"
    assert entry["n_toys"] == N
    assert Path(entry["store"]).parts[-2:] == ("results", "toys.jsonl")


def test_rerun_resumes_without_recomputing(out, monkeypatch, capsys):
    store = out / "results" / "toys.jsonl"
    before = store.read_bytes()
    _no_toys(monkeypatch)
    assert main(["toys", *TINY, "--n-toys", str(N), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"({N} of them done before)" in text
    assert f"{N} of {N} toys done: {N} valid (100.0%)" in text
    assert "μ pull (θ floating): mean" in text
    assert store.read_bytes() == before


def test_more_toys_extend_the_store(out, monkeypatch, capsys):
    store = out / "results" / "toys.jsonl"
    before = store.read_text()
    computed = []
    original = toys_module.run_one_toy

    def counting(state, seed):
        computed.append(int(seed.spawn_key[-1]))
        return original(state, seed)

    monkeypatch.setattr(toys_module, "run_one_toy", counting)
    assert main(["toys", *TINY, "--n-toys", str(N + 1), "--out", str(out)]) == 0
    assert computed == [N]  # only the new toy
    after = store.read_text()
    assert after.startswith(before)
    assert len(after.splitlines()) == 1 + N + 1
    assert f"{N + 1} of {N + 1} toys done" in capsys.readouterr().out


def test_coverage_on_a_toys_store_and_summarize_only(out, monkeypatch, capsys):
    _no_toys(monkeypatch)  # `gbi toys` already ran these toys: coverage only summarises them
    assert main(["coverage", *TINY, "--n-toys", str(N), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| S/√B | toys |" in text
    assert "Toy-calibrated (Neyman) thresholds" in text
    path = out / "results" / f"coverage_{TAG}.json"
    first = path.read_text()
    res = CoverageResult.from_json(path)
    assert (res.n_toys, res.n_done, res.n_used) == (N, N, N)
    assert res.config["n_background_sr"] == 3000
    assert res.pull["n"] == N

    path.unlink()
    assert main(["coverage", "--summarize-only", "--out", str(out)]) == 0
    assert path.read_text() == first
    # options that agree with the store are accepted; fewer toys summarise the first ones
    assert (
        main(
            [
                "coverage",
                "--summarize-only",
                "--seed",
                "1",
                "--kind",
                "oracle",
                "--n-toys",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert CoverageResult.from_json(path).n_done == 2
    entry = json.loads((out / "manifest.json").read_text())[-1]
    assert entry["subcommand"] == "coverage --summarize-only"


def test_benchmark_script_is_gbi_coverage(out, monkeypatch, capsys):
    script = Path(__file__).parents[1] / "benchmarks" / "coverage.py"
    monkeypatch.setattr("sys.argv", [str(script), "--summarize-only", "--out", str(out)])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(script), run_name="__main__")
    assert info.value.code == 0
    assert "| S/√B | toys |" in capsys.readouterr().out
    assert CoverageResult.from_json(out / "results" / f"coverage_{TAG}.json").n_done == N


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"gbi {argv[0]}: error: ")
    return err


def test_bad_input_is_one_line_with_exit_code_2(out, tmp_path, monkeypatch, capsys):
    _no_toys(monkeypatch)
    store = out / "results" / "toys.jsonl"
    before = store.read_bytes()
    # a store of other settings is refused, naming what differs
    err = _error(capsys, ["toys", *TINY, "--n-toys", "3", "--s-over-sqrt-b", "2", "--out", str(out)])
    assert "--s-over-sqrt-b: stored 1.0, now 2.0" in err
    err = _error(capsys, ["coverage", *TINY, "--seed", "7", "--out", str(out)])
    assert "--seed: stored 1, now 7" in err
    err = _error(capsys, ["coverage", "--summarize-only", "--mx", "400", "--out", str(out)])
    assert "--mx: stored 300.0, now 400.0" in err
    assert store.read_bytes() == before
    # --summarize-only needs a store, and does not create one
    empty = tmp_path / "empty"
    err = _error(capsys, ["coverage", "--summarize-only", "--out", str(empty)])
    assert "no toy store" in err
    assert not (empty / "results" / "toys.jsonl").exists()
    err = _error(
        capsys, ["coverage", "--summarize-only", "--store", str(out / "manifest.json"), "--out", str(empty)]
    )
    assert "not a gbi_zfit result store" in err
    # bad values, all before any toy runs or any store is created
    fresh = tmp_path / "fresh"
    assert "--n-toys must be ≥ 1" in _error(capsys, ["toys", *TINY, "--n-toys", "0", "--out", str(fresh)])
    err = _error(capsys, ["toys", *TINY, "--mx", "900", "--out", str(fresh)])
    assert "900" in err
    assert "range" in err
    assert "s_over_sqrt_b" in _error(capsys, ["toys", *TINY, "--s-over-sqrt-b", "-1", "--out", str(fresh)])
    assert "--scheduler" in _error(
        capsys, ["coverage", *TINY, "--workers", "2", "--scheduler", "tcp://x:1", "--out", str(fresh)]
    )
    assert not (fresh / "results" / "toys.jsonl").exists()


def _toys(store: Path) -> dict[int, dict]:
    """The key numbers of every toy in a store."""
    out = {}
    for line in _lines(store)[1:]:
        rec = json.loads(line)
        r = rec["result"]
        out[rec["index"]] = [r[k] for k in ("t_mu", "t_theta", "pull", "pull_fixed", "z0")] + [
            r["fit"]["values"]
        ]
    return out


@pytest.mark.slow
def test_dask_workers_give_the_serial_toys(out, tmp_path):
    """Two local Dask workers compute the same toys, bit for bit, as the serial run (starts a cluster)."""
    store = tmp_path / "dask.jsonl"
    argv = [
        "toys",
        *TINY,
        "--n-toys",
        str(N),
        "--workers",
        "2",
        "--store",
        str(store),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert _toys(store) == _toys(out / "results" / "toys.jsonl")
