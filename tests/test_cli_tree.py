"""``--tree`` / ``--branches`` of the `gbi` subcommands that read a data file, and ``--n-background`` checks."""

from __future__ import annotations

import json

import pytest

from gbi_zfit.cli import build_parser, main
from gbi_zfit.data.benchmark import LHCOSim
from gbi_zfit.data.io import save_npz, write_root

#: The subcommands that read a data file (positional ``path``), with the options they need to get that far.
READERS = {
    "fit": ["--oracle"],
    "scan": ["--oracle", "--params", "mu"],
    "ranode": ["--oracle-background", "--out", "{out}"],
    "train flows": ["--out", "{out}"],
    "train cfm": ["--out", "{out}"],
}


@pytest.fixture(scope="module")
def ntuple(tmp_path_factory):
    """A small ROOT file in the layout of someone else's ntuple: tree ``nominal``, branch ``Mjj``."""
    d = tmp_path_factory.mktemp("cli_tree")
    events = LHCOSim().make_dataset(s_over_sqrt_b=5, n_background=20_000, seed=3)
    path = d / "ntuple.root"
    write_root(events, path, tree="nominal", branches={"mjj": "Mjj"}, label_branch="is_signal")
    save_npz(events, d / "data.npz")
    return {"root": path, "npz": d / "data.npz", "dir": d}


def _argv(command: str, path, extra: list[str], out) -> list[str]:
    return [*command.split(), str(path), *(a.replace("{out}", str(out)) for a in extra)]


def _one_line_error(capsys, command: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"gbi {command.split()[0]}: error: ")
    return err[0]


@pytest.mark.parametrize("command", list(READERS))
def test_every_data_reader_has_tree_and_branches(command):
    args = build_parser().parse_args(
        [*_argv(command, "x.root", READERS[command], "o"), "--tree", "t", "--branches", "mjj=M"]
    )
    assert args.tree == "t"
    assert args.branches == ["mjj=M"]


def test_fit_reads_the_named_tree_and_branches(ntuple, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["fit", str(ntuple["root"]), "--oracle", "--tree", "nominal", "--branches", "mjj=Mjj"]
    assert main([*argv, "label=is_signal", "--out", str(out)]) == 0
    assert "FitResult (valid" in capsys.readouterr().out
    result = json.loads((out / "results" / "ntuple_fit.json").read_text())
    assert result["values"]["mu"] > 0
    manifest = json.loads((out / "manifest.json").read_text())[-1]
    assert manifest["tree"] == "nominal"
    assert manifest["branches"] == {"mjj": "Mjj"}
    assert manifest["label_branch"] == "is_signal"


@pytest.mark.parametrize("command", list(READERS))
def test_wrong_tree_is_one_line_naming_the_option(ntuple, tmp_path, capsys, command):
    argv = _argv(command, ntuple["root"], READERS[command], tmp_path / "out")
    assert main([*argv, "--tree", "events_typo"]) == 2
    line = _one_line_error(capsys, command)
    for word in ("no tree 'events_typo'", "['nominal']", "--tree"):
        assert word in line, (word, line)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--tree", "nominal"], ["lacks branch", "'mjj'", "Mjj", "--branches"]),
        (["--tree", "nominal", "--branches", "mjj"], ["COLUMN=BRANCH", "'mjj'"]),
        (["--tree", "nominal", "--branches", "mjj=Mjj", "mjj=X"], ["twice"]),
        (["--tree", "nominal", "--branches", "mass=Mjj"], ["unknown column", "mass"]),
    ],
)
def test_bad_branches_are_one_line(ntuple, capsys, options, words):
    assert main(["fit", str(ntuple["root"]), "--oracle", *options]) == 2
    line = _one_line_error(capsys, "fit")
    for word in words:
        assert word in line, (word, line)


def test_tree_on_a_file_that_is_not_root_is_refused(ntuple, capsys):
    assert main(["fit", str(ntuple["npz"]), "--oracle", "--tree", "nominal"]) == 2
    line = _one_line_error(capsys, "fit")
    assert ".root" in line
    assert "data.npz" in line


@pytest.mark.parametrize("n", ["0", "-3"])
@pytest.mark.parametrize("command", ["generate", "demo"])
def test_n_background_must_be_positive(tmp_path, capsys, command, n):
    out = tmp_path / ("x.npz" if command == "generate" else "demo")
    argv = [command, "--out", str(out), "--n-background", n]
    assert main([*argv, "--mu", "0.01"] if command == "generate" else argv) == 2
    line = _one_line_error(capsys, command)
    assert "--n-background" in line
    assert n in line
    assert not out.exists()
