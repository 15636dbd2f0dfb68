"""`gbi train cfm` → `gbi train paws` → `gbi fit --model`, and `gbi demo --learned`, with the test presets."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from gbi_zfit.cli import main
from gbi_zfit.data.io import read_events
from gbi_zfit.data.mjj import MjjFitResult
from gbi_zfit.inference import FitResult
from gbi_zfit.models.cfm import CFMConfig, CFMGenerator, GeneratorQuality
from gbi_zfit.models.classifier import ClassifierConfig, ClassifierEnsemble


def gbi(command: str) -> int:
    """Run ``gbi COMMAND`` in-process (paths must not contain spaces)."""
    return main(command.split())


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Data (60k background, S/√B = 5), the test-preset CFM and a 2-member test-preset ensemble."""
    root = tmp_path_factory.mktemp("train")
    data, run = root / "data.npz", root / "run"
    sample = run / "data" / "sr_background.npz"
    assert gbi(f"generate --out {data} --n-background 60000 --s-over-sqrt-b 5 --seed 3") == 0
    # --factor 1: the test-preset ensemble uses 3000 background events anyway (--check-benchmark runs in
    # the slow `demo --learned` test)
    opts = "--preset test --factor 1 --seed 2 --no-progress"
    assert gbi(f"train cfm {data} --out {run} {opts}") == 0
    opts = "--preset test --ensemble 2 --kappa sampled --no-progress"
    assert gbi(f"train paws --background {sample} --out {run} {opts}") == 0
    return {"data": data, "run": run, "sample": sample}


def _finite_result(path) -> FitResult:
    res = FitResult.from_json(path)
    assert all(math.isfinite(res.values[p]) for p in ("mu", "mx", "my"))
    assert all(math.isfinite(e) for e in res.errors.values())
    assert math.isfinite(res.nll)
    return res


def test_train_cfm_outputs(chain):
    run = chain["run"]
    cfm = CFMGenerator.load(run / "models" / "cfm")
    assert cfm.config == CFMConfig.preset("test")
    assert cfm.metadata["training_data"]["path"] == str(chain["data"].resolve())
    # the SR background sample: 1 × the predicted SR count (--factor 1), all in the SR, background-labelled
    sample = read_events(chain["sample"])
    mjj_fit = MjjFitResult.from_dict(json.loads((run / "results" / "mjj_fit.json").read_text()))
    assert len(sample) == round(mjj_fit.n_sr) > 1000
    assert np.all((sample.mjj >= 3300) & (sample.mjj < 3700))
    assert not sample.label.any()
    assert cfm.metadata["sr_background"]["n"] == len(sample)
    quality = json.loads((run / "results" / "cfm_quality.json").read_text())
    assert set(quality) == {"sideband"}  # closure on held-out sideband events: works on real data
    assert 0.0 < GeneratorQuality.from_dict(quality["sideband"]).auc < 1.0
    assert (run / "figures" / "cfm_quality_sideband.png").stat().st_size > 10_000


def test_train_paws_outputs(chain):
    run = chain["run"]
    ens = ClassifierEnsemble.load(run / "models" / "paws")
    assert ens.n_members == 2
    assert ens.kappa_mode == "sampled"
    assert ens.kappa_surface is not None
    assert ClassifierConfig.from_dict(ens.metadata["config"]).hidden == ClassifierConfig.preset("test").hidden
    assert ens.metadata["background"]["path"] == str(chain["sample"].resolve())
    summary = json.loads((run / "results" / "paws_training.json").read_text())
    assert summary["n_members"] == 2
    steps = [e.get("step") for e in json.loads((run / "manifest.json").read_text())]
    assert steps[:2] == ["train cfm", "train paws"]


def test_train_paws_resumes_from_store(chain, tmp_path, capsys):
    """Finished members come back from data/classifier_store.jsonl; other settings get a one-line error."""
    import shutil

    out = tmp_path / "resume"
    (out / "data").mkdir(parents=True)
    shutil.copy(chain["run"] / "data" / "classifier_store.jsonl", out / "data")
    opts = "--preset test --ensemble 2 --kappa sampled --no-progress"
    capsys.readouterr()
    assert gbi(f"train paws --background {chain['sample']} --out {out} {opts}") == 0
    assert "resuming from" in capsys.readouterr().out
    a = ClassifierEnsemble.load(out / "models" / "paws")
    b = ClassifierEnsemble.load(chain["run"] / "models" / "paws")
    x = read_events(chain["sample"]).features("paws")[:500]
    np.testing.assert_array_equal(a.predict(x, 300.0, 150.0), b.predict(x, 300.0, 150.0))
    assert gbi(f"train paws --background {chain['sample']} --out {out} {opts} --epochs 1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "classifier_store.jsonl" in err[0]
    assert "delete it" in err[0]


def test_fit_with_learned_model(chain, tmp_path, capsys):
    out = tmp_path / "fit"
    model = chain["run"] / "models" / "paws"
    assert main(["fit", str(chain["data"]), "--model", str(model), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "training background" in text  # the CFM sample is the figure reference
    assert "θ table (" in text  # learned fits run on the θ table and report its exact check
    res = _finite_result(out / "results" / "data_fit.json")
    assert abs(res.info["table"]["check"]["delta_nll"]) < 1.0
    assert res.nll == res.info["table"]["exact_nll"]
    assert res.info["ratio_model"].startswith("PAWS (2 members, κ sampled")
    (lo_x, hi_x), (lo_y, hi_y) = ClassifierEnsemble.load(model).theta_bounds
    assert lo_x <= res.values["mx"] <= hi_x
    assert lo_y <= res.values["my"] <= hi_y
    assert (out / "figures" / "data_fit.png").stat().st_size > 10_000
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest[-1]["model"] == str(model)
    # the --out directory of `train` works as --model too; κ mode and reference can be chosen
    run, data, sample = chain["run"], chain["data"], chain["sample"]
    assert gbi(f"fit {data} --model {run} --kappa fixed --reference {sample}") == 0
    text = capsys.readouterr().out
    assert "κ fixed" in text
    assert f"reference sample for the figures: {sample}" in text
    assert "FitResult (" in text


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for n in needles:
        assert n in err
    return err


def test_bad_inputs_exit_2_with_one_line(chain, tmp_path, capsys):
    data, sample = str(chain["data"]), str(chain["sample"])
    out = str(tmp_path / "x")
    missing = str(tmp_path / "missing.npz")
    assert main(["train", "paws", "--background", missing, "--out", out, "--preset", "test"]) == 2
    _one_line_error(capsys, "missing.npz")
    assert main(["train", "paws", "--background", sample, "--out", out, "--ensemble", "0"]) == 2
    _one_line_error(capsys, "--ensemble")
    assert main(["train", "paws", "--background", sample, "--out", out, "--epochs", "0"]) == 2
    _one_line_error(capsys, "--epochs")
    # a data file with signal labels is not a background sample
    assert main(["train", "paws", "--background", data, "--out", out, "--preset", "test"]) == 2
    _one_line_error(capsys, "signal")
    assert main(["train", "cfm", missing, "--out", out, "--preset", "test"]) == 2
    _one_line_error(capsys, "missing.npz")
    # fit: exactly one ratio model; a bundle with a member file missing; the wrong kind of bundle
    assert main(["fit", data]) == 2
    _one_line_error(capsys, "--oracle", "--model")
    assert main(["fit", data, "--oracle", "--model", str(chain["run"])]) == 2
    _one_line_error(capsys, "exactly one")
    assert main(["fit", data, "--oracle", "--kappa", "fixed"]) == 2
    _one_line_error(capsys, "--kappa")
    broken = tmp_path / "broken"
    shutil.copytree(chain["run"] / "models" / "paws", broken)
    next(broken.glob("member_01.*")).unlink()
    assert main(["fit", data, "--model", str(broken)]) == 2
    _one_line_error(capsys, "broken")
    assert main(["fit", data, "--model", str(chain["run"] / "models" / "cfm")]) == 2
    _one_line_error(capsys, "cfm")
    assert main(["fit", data, "--model", str(tmp_path / "nothing")]) == 2
    _one_line_error(capsys, "nothing")
    assert main(["demo", "--out", out, "--kappa", "sampled"]) == 2
    _one_line_error(capsys, "--learned")


def test_info_reports_dask_and_keras(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Keras backend" in out
    assert "Dask:" in out


@pytest.fixture
def test_presets_as_quick(monkeypatch):
    """`demo --learned` trains the quick presets; here they are swapped for the test presets."""
    for cls in (CFMConfig, ClassifierConfig):
        original = cls.preset.__func__

        def preset(klass, name, _original=original, **kw):
            return _original(klass, "test" if name == "quick" else name, **kw)

        monkeypatch.setattr(cls, "preset", classmethod(preset))


@pytest.mark.slow
def test_demo_learned_trains_then_reuses(tmp_path, capsys, test_presets_as_quick):
    """`gbi demo --learned` twice: the second run reuses both cached models (≈ 2 min with test presets)."""
    out = tmp_path / "demo"
    argv = ["demo", "--learned", "--out", str(out), "--n-background", "60000", "--s-over-sqrt-b", "5"]
    main(argv)  # the exit code reflects fit validity, which a test-preset model does not promise
    first = capsys.readouterr().out
    assert "reusing" not in first
    comparison = json.loads((out / "results" / "demo_comparison.json").read_text())
    assert set(comparison) >= {"oracle", "learned", "truth", "cfm_quality"}
    assert 0.0 < comparison["cfm_quality"]["benchmark"]["auc"] < 1.0
    assert comparison["reused"] == {"cfm": False, "paws": False}
    for name in ("demo_fit.png", "demo_fit_learned.png", "cfm_quality_benchmark.png"):
        assert (out / "figures" / name).exists()
    main(argv)
    second = capsys.readouterr().out
    assert "reusing the CFM generator and the SR background sample" in second
    assert "reusing the classifier ensemble" in second
    again = json.loads((out / "results" / "demo_comparison.json").read_text())
    assert again["learned"]["values"] == pytest.approx(comparison["learned"]["values"], rel=1e-6)
    # another seed is another data set: the cache is not reused
    main([*argv, "--seed", "2"])
    assert "trained for other data or settings, retraining" in capsys.readouterr().out


@pytest.mark.slow
def test_train_paws_on_dask(chain, tmp_path):
    """Members train on a 2-worker LocalCluster and give the same ensemble as in-process training."""
    out = tmp_path / "dask"
    opts = "--preset test --ensemble 2 --workers 2 --no-progress"
    assert gbi(f"train paws --background {chain['sample']} --out {out} {opts}") == 0
    a = ClassifierEnsemble.load(out / "models" / "paws")
    b = ClassifierEnsemble.load(chain["run"] / "models" / "paws")
    x = read_events(chain["sample"]).features("paws")[:2000]
    # same seeds per member whatever the executor; only floating-point threading effects may differ
    np.testing.assert_allclose(a.predict(x, 300.0, 150.0), b.predict(x, 300.0, 150.0), atol=2e-3)
