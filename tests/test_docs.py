"""The user documentation builds without a single warning, and its validation page shows the committed
benchmark numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_without_warnings(tmp_path):
    """``sphinx-build -W --keep-going -b html docs <tmp>`` (autodoc imports the real package; ≈ 35 s CPU)."""
    out = tmp_path / "html"
    env = {**os.environ, "ZFIT_DISABLE_TF_WARNINGS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"

    for page in (
        "index",
        "getting_started",
        "concepts",
        "examples",
        "validation",
        "howto/index",
        "api/index",
    ):
        assert (out / f"{page}.html").exists(), page
    # the API reference documents the modules from their docstrings
    api = (out / "api" / "pdf.html").read_text()
    assert 'id="gbi_zfit.pdf.ratio.RatioPDF"' in api
    assert "weighted resampling" in api

    # the validation page carries every committed coverage result and its figures
    page = (out / "validation.html").read_text()
    results = sorted((ROOT / "benchmarks" / "results").glob("coverage_*.json"))
    assert results
    for path in results:
        res = json.loads(path.read_text())
        for row in res["coverage"].values():
            assert f"{row['covered']} / {row['n']}" in page, (path.name, row["label"])
            assert f"{row['fraction']:.3f} ± {row['error']:.3f}" in page
        tag = path.stem.removeprefix("coverage_")
        for fig in (f"pulls_{tag}.png", f"test_statistics_{tag}.png"):
            if (path.parent / fig).exists():
                assert fig in page
                assert (out / "_images" / fig).exists()
