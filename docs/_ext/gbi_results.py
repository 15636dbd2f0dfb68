"""Sphinx directives that put the committed benchmark results (``benchmarks/results/``) into the docs.

``coverage-results``
    For every ``coverage_<tag>.json`` written by ``benchmarks/coverage.py`` (ordered by S/√B, largest
    first): a heading line with the configuration, the coverage table (with binomial errors), the μ pulls
    and median significances, the toy-calibrated (Neyman) thresholds, and the figures
    ``pulls_<tag>.png`` / ``test_statistics_<tag>.png`` when they exist.
``result-figures``
    Every other PNG of the results directory (e.g. closure figures), with its file name as caption.

A new result file appears in the docs at the next build without editing any page. The directory is the
``gbi_results_dir`` configuration value; the JSON files are registered as dependencies, so an incremental
build notices when they change.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

_SHOWN_WITH_COVERAGE = ("pulls_", "test_statistics_")


def _table(header: list[str], rows: list[list[str]], widths: list[int] | None = None) -> nodes.table:
    """A plain docutils table (parser-independent: works from MyST and reST pages alike)."""
    table = nodes.table(classes=["gbi-results"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for w in widths or [1] * len(header):
        group += nodes.colspec(colwidth=w)

    def row(cells: list[str]) -> nodes.row:
        r = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=cell)
            r += entry
        return r

    head = nodes.thead()
    head += row(header)
    body = nodes.tbody()
    for cells in rows:
        body += row(cells)
    group += head
    group += body
    return table


def _fmt(value, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def _pm(value, error, spec: str = ".3f") -> str:
    return f"{_fmt(value, spec)} ± {_fmt(error, spec)}"


class _ResultsDirective(SphinxDirective):
    def results_dir(self) -> Path:
        return Path(self.config.gbi_results_dir)

    def image(self, path: Path, caption: str) -> nodes.figure:
        self.env.note_dependency(str(path))
        figure = nodes.figure(align="center")
        # '/'-rooted at the source directory, as the image directive stores it; Sphinx copies the file
        uri = "/" + Path(os.path.relpath(path.resolve(), Path(self.env.srcdir).resolve())).as_posix()
        figure += nodes.image(uri=uri, alt=caption)
        figure += nodes.caption(text=caption)
        return figure


class CoverageResults(_ResultsDirective):
    """Tables and figures of every ``coverage_*.json`` in the results directory."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        files = sorted(self.results_dir().glob("coverage_*.json"))
        if not files:
            return [nodes.paragraph(text=f"No coverage results in {self.results_dir()}.")]
        results = []
        for path in files:
            self.env.note_dependency(str(path))
            results.append((path, json.loads(path.read_text())))
        results.sort(key=lambda pr: -float(pr[1]["config"]["s_over_sqrt_b"]))
        out: list[nodes.Node] = []
        for path, res in results:
            out.extend(self.one(path, res))
        return out

    def one(self, path: Path, res: dict) -> list[nodes.Node]:
        cfg, truth = res["config"], res["truth"]
        tag = path.stem.removeprefix("coverage_")
        title = (
            f"S/√B = {cfg['s_over_sqrt_b']:g}, θ = ({cfg['mx']:g}, {cfg['my']:g}) GeV, "
            f"{cfg['kind']} toys — {path.name}"
        )
        wall = (res.get("info") or {}).get("wall_time_s")
        summary = (
            f"{res['n_used']} toys used ({res['n_failed']} failed) of {res['n_toys']}; expected SR background "
            f"{cfg['n_background_sr']:.0f} events, true μ = {truth['mu']:.4g}; each toy fitted from the truth "
            f"with μ, mX, mY floating (HESSE, Wilks statistics from profile fits"
            + (f", MINOS on the first {cfg['minos_toys']} toys" if cfg.get("minos_toys") else ", MINOS")
            + f"); {_fmt(res.get('time_per_toy_s'), '.1f')} s per toy"
            + (f", {wall / 3600:.1f} h wall in total." if wall else ".")
        )
        cov_rows = [
            [c["label"], f"{c['cl']:.3g}", f"{c['covered']} / {c['n']}", _pm(c["fraction"], c["error"])]
            for c in res["coverage"].values()
        ]
        pull, pull_fixed = res["pull"], res["pull_fixed"]
        pull_rows = [
            [
                "μ pull, θ floating",
                _pm(pull["mean"], pull["mean_error"]),
                _pm(pull["width"], pull["width_error"]),
            ],
            [
                "μ pull, θ fixed at the truth",
                _pm(pull_fixed["mean"], pull_fixed["mean_error"]),
                _pm(pull_fixed["width"], pull_fixed["width_error"]),
            ],
        ]
        z_text = (
            f"Median discovery significance Z0 = {_fmt(res.get('z0_median'), '.2f')} with θ floating, "
            f"{_fmt(res.get('z0_fixed_median'), '.2f')} with θ fixed at the truth."
        )
        neyman_rows = []
        for name, label in (("t_mu", "t_μ (k = 1)"), ("t_theta", "t_θ (k = 2)")):
            for level in (res.get("neyman") or {}).get(name, {}).get("levels", []):
                neyman_rows.append(
                    [
                        label,
                        f"{level['cl']:.3g}",
                        _fmt(level["chi2"], ".3f"),
                        (
                            f"{_fmt(level['toy_threshold'], '.3f')} [{_fmt(level['toy_threshold_lo'], '.2f')}, "
                            f"{_fmt(level['toy_threshold_hi'], '.2f')}]"
                        ),
                        _fmt(level["wilks_coverage"], ".3f"),
                        _pm(level["calibrated_coverage"], level["calibrated_coverage_error"]),
                    ]
                )
        out: list[nodes.Node] = [
            nodes.rubric(text=title),
            nodes.paragraph(text=summary),
            _table(["interval", "CL", "covered", "coverage"], cov_rows, [4, 1, 2, 3]),
            _table(["μ pull (μ̂ − μ) / σ_HESSE", "mean", "width"], pull_rows, [4, 3, 3]),
            nodes.paragraph(text=z_text),
        ]
        if neyman_rows:
            out.append(
                nodes.paragraph(
                    text="Toy-calibrated thresholds (empirical quantiles of the test statistic at the truth) "
                    "next to the χ²_k thresholds of Wilks' theorem; the calibrated coverage is measured "
                    "out of sample (even toys → odd toys and back)."
                )
            )
            out.append(
                _table(
                    [
                        "statistic",
                        "CL",
                        "χ²_k threshold",
                        "toy threshold [±1σ]",
                        "Wilks cov.",
                        "calibrated cov.",
                    ],
                    neyman_rows,
                    [2, 1, 2, 3, 2, 3],
                )
            )
        for prefix, caption in (
            ("pulls_", "μ pulls of the toys (θ floating and fixed) against N(0, 1)"),
            ("test_statistics_", "Wilks statistics t_μ and t_θ of the toys against χ²₁ and χ²₂"),
        ):
            fig = self.results_dir() / f"{prefix}{tag}.png"
            if fig.exists():
                out.append(self.image(fig, f"{caption} — {fig.name}"))
        return out


class ResultFigures(_ResultsDirective):
    """Every PNG of the results directory not already shown next to a coverage table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        figures = [
            p for p in sorted(self.results_dir().glob("*.png")) if not p.name.startswith(_SHOWN_WITH_COVERAGE)
        ]
        if not figures:
            return [nodes.paragraph(text="No other result figures are committed yet.")]
        return [self.image(p, p.name) for p in figures]


def setup(app):
    app.add_config_value("gbi_results_dir", "", "env")
    app.add_directive("coverage-results", CoverageResults)
    app.add_directive("result-figures", ResultFigures)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
