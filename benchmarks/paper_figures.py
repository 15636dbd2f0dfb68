"""The GBI paper's Fig. 1–3 on the synthetic benchmark, each with a table of its numbers.

* **Fig. 1** (``fig1_mu_hat``): fitted μ̂ against the injected μ (log–log, diagonal μ̂ = μ_inj), medians
  over data realisations with 16–84 % bands, for GBI-PAWS (learned ratio and the exact oracle: fitted
  to the R-ANODE data sets when the R-ANODE result holds such fits (``ranode.py --paws-models``), else
  from ``benchmarks/sensitivity.py`` at θ = (300, 150)) and R-ANODE (learned p_B: the paper's μ scan and our
  Minuit fit with f frozen; thin lines for exact p_B and for exact p_B, p_S, from ``benchmarks/ranode.py``).
  A lower panel shows the median μ̂/μ_inj. The inputs may use different data sizes, so the same S/√B
  is a different μ in each: μ_inj is always the realised SR signal fraction of the fitted data sets.
* **Fig. 2** (``fig2_masses``): fitted (m̂X, m̂Y) of every data set against the truth, learned GBI-PAWS
  and the oracle (:func:`gbi_zfit.plotting.sensitivity.plot_mass_scatter` on the sensitivity records).
* **Fig. 3** (``fig3_mass_grid``): fitted/true of (μ, mX, mY) across the mass grid with bootstrap,
  profile-likelihood and Fisher (observed, expected) errors
  (:func:`gbi_zfit.plotting.mass_grid.plot_mass_grid` on the ``benchmarks/mass_grid.py`` result).

For each figure ``NAME.png``, ``NAME.md`` (Markdown table) and ``NAME.json`` (the same numbers) are
written to ``--out``. A missing or unreadable input is reported and its curves (or figure) are skipped.

Assemble from existing results (defaults: the committed files under ``benchmarks/results/``)::

    python benchmarks/paper_figures.py --from-results --out /tmp/figs \\
        [--sensitivity benchmarks/results/sensitivity.json] \\
        [--ranode benchmarks/results/ranode_1m] [--mass-grid benchmarks/results/fig3_oracle.json]

``--ranode`` takes ``ranode_summary.json`` or its directory; a directory without a summary (a run still
in progress) is read from its ``runs/*.json``.

Run the component benchmarks first (as subprocesses, outputs under ``OUT/runs/``), then assemble::

    python benchmarks/paper_figures.py --quick --out /tmp/figs_quick   # small sizes, ≈ 15–20 min on 2 cores (measured 17.5)
    python benchmarks/paper_figures.py --out benchmarks/results/paper  # the benchmarks' default sizes (hours)
    python benchmarks/paper_figures.py --quick --out DIR --dry-run     # only print the commands

The runs are resumable (rerun the same command); ``--only sensitivity ranode mass_grid`` picks components,
``--sensitivity-models DIR`` reuses trained GBI-PAWS models. Measured for the quick preset on 2 CPU cores
shared with a test run: sensitivity 187 s (training included), R-ANODE 802 s, mass grid 58 s — 17.5 min.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
DEFAULT_SENSITIVITY = RESULTS / "sensitivity.json"
DEFAULT_RANODE = RESULTS / "ranode_1m"
DEFAULT_MASS_GRID = RESULTS / "fig3_oracle.json"
THETA = (300.0, 150.0)
FIG1, FIG2, FIG3 = "fig1_mu_hat", "fig2_masses", "fig3_mass_grid"
COMPONENTS = ("sensitivity", "ranode", "mass_grid")

#: Arguments of the component benchmarks per preset (``--out`` and stores are added by :func:`commands`).
PRESETS: dict[str, dict[str, list[str]]] = {
    "quick": {
        "sensitivity": [
            "--realisations", "2", "--n-background", "30000", "--train-n-background", "200000", "--classifier-preset", "quick",
            "--start", "truth", "--theta", "300", "150", "--s-over-sqrt-b", "0.3", "1", "3",
        ],
        "ranode": [
            "--sb", "1", "3", "--realisations", "2", "--n-background", "100000", "--members", "4",
            "--mu-points", "10", "--mu-min", "1e-4", "--refine", "3", "--bkg-members", "5",
            "--bkg-quick", "--methods", "learned", "ideal",
        ],
        "mass_grid": [
            "--points", "100,100", "300,150", "500,300", "--n-background", "200000", "--mu", "0.006",
            "--n-bootstrap", "10",
        ],
    },
    "full": {  # the sizes named in the benchmarks' docstrings (their defaults)
        "sensitivity": ["--realisations", "5"],
        "ranode": [],
        "mass_grid": ["--n-bootstrap", "50", "--seed", "1"],
    },
}  # fmt: skip

# curve key -> (label, colour, line style, marker, draw band, line width)
_CURVES = {
    "gbi_learned": ("GBI-PAWS (learned)", "tab:red", "-", "o", True, 2.0),
    "gbi_oracle": ("GBI-PAWS (oracle)", "tab:blue", "-", "o", True, 2.0),
    "ranode_learned_scan": ("R-ANODE (learned), μ scan", "tab:green", "-", "s", True, 2.0),
    "ranode_learned_fit": ("R-ANODE (learned), Minuit", "tab:olive", "--", "D", True, 2.0),
    "ranode_oracle_pb_scan": ("R-ANODE (exact $p_B$), μ scan", "tab:purple", "-", "v", False, 1.2),
    "ranode_oracle_pb_fit": ("R-ANODE (exact $p_B$), Minuit", "tab:purple", "--", "v", False, 1.2),
    "ranode_ideal_fit": ("exact $p_B$, $p_S$ (R-ANODE likelihood)", "black", ":", "x", False, 1.2),
}


def note(text: str) -> None:
    """A message for the user (skipped inputs, written files)."""
    print(text, flush=True)


# --------------------------------------------------------------------------------------------------
# reading the inputs


def _read_json(path: Path, what: str) -> dict | None:
    if not path.is_file():
        note(f"note: no {what} at {path}: skipping its curves")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        note(f"note: cannot read {what} {path} ({exc}): skipping its curves")
        return None
    if not isinstance(data, dict):
        note(f"note: {what} {path} is not a JSON object: skipping its curves")
        return None
    return data


def load_sensitivity(path: Path) -> dict | None:
    """``sensitivity.json`` of ``benchmarks/sensitivity.py`` (needs its per-data-set ``records``)."""
    data = _read_json(path, "sensitivity result")
    if data is not None and not isinstance(data.get("records"), list):
        note(f"note: {path} has no per-data-set 'records': skipping the GBI-PAWS curves")
        return None
    return data


def _ranode_entry(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One run file of ``benchmarks/ranode.py`` as the entry its summary holds (``results[m][sb]["runs"]``)."""
    from gbi_zfit.inference.ranode import RANODEResult

    res = RANODEResult.from_dict(rec)
    entry = {
        "mu_true": res.scan.truth["mu"],
        "scan_mu_hat": res.scan.mu_hat,
        "scan_interval_95": list(res.scan.interval(0.95)),
        "scan_z": res.scan.significance,
    }
    if res.fit is not None:
        entry.update(fit_mu_hat=res.fit.mu, fit_interval_95=list(res.fit.interval(0.95)))
        entry.update(fit_error=res.fit.error, fit_z=res.fit.significance)
    return entry


def load_ranode(path: Path) -> dict | None:
    """``ranode_summary.json`` (or its directory; without a summary there, the directory's ``runs/*.json``).

    Returns
    -------
    dict or None
        ``{"settings": ..., "theta": ..., "results": {method: {sb: {"runs": [entry, ...]}}}, "source": str}``.
    """
    if path.is_dir() and (path / "ranode_summary.json").is_file():
        path = path / "ranode_summary.json"
    if path.is_file():
        data = _read_json(path, "R-ANODE summary")
        if data is None:
            return None
        if not isinstance(data.get("results"), dict):
            note(f"note: {path} has no 'results': skipping the R-ANODE curves")
            return None
        data["source"] = str(path)
        return data
    runs_dir = path / "runs" if (path / "runs").is_dir() else path
    files = sorted(runs_dir.glob("*_sb*_r*.json")) if runs_dir.is_dir() else []
    if not files:
        note(f"note: no R-ANODE summary or run files at {path}: skipping the R-ANODE curves")
        return None
    results: dict[str, dict[str, dict[str, list]]] = {}
    paws: dict[str, dict[str, list]] = {}
    bad = 0
    for f in files:
        try:
            rec = json.loads(f.read_text())
            sb = f"{float(rec['s_over_sqrt_b']):g}"
            if rec.get("method") == "paws":  # GBI-PAWS on the same data sets (--paws-models)
                paws.setdefault(sb, {"runs": []})["runs"].append(rec)
                continue
            entry = _ranode_entry(rec)
            results.setdefault(rec["method"], {}).setdefault(sb, {"runs": []})["runs"].append(entry)
        except Exception as exc:  # noqa: BLE001 -- one unreadable run must not hide the others
            bad += 1
            note(f"note: skipping R-ANODE run {f.name}: {type(exc).__name__}: {exc}")
    if not results:
        return None
    note(f"note: no ranode_summary.json at {path}: read {len(files) - bad} run file(s) from {runs_dir}")
    out = {"settings": {}, "theta": list(THETA), "results": results, "source": str(runs_dir)}
    if paws:
        out["gbi_paws"] = paws
    return out


def load_mass_grid(path: Path):
    """The :class:`~gbi_zfit.inference.mass_grid.MassGridResult` of ``benchmarks/mass_grid.py``, or None."""
    data = _read_json(path, "mass-grid result")
    if data is None:
        return None
    from gbi_zfit.inference.mass_grid import MassGridResult

    try:
        return MassGridResult.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        note(f"note: {path} is not a mass-grid result ({type(exc).__name__}: {exc}): skipping Fig. 3")
        return None


# --------------------------------------------------------------------------------------------------
# numbers


def stats(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Median, 16/84 % quantiles, min and max of the finite values (None if there are none), and their count."""
    a = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return {"median": None, "q16": None, "q84": None, "min": None, "max": None, "n": 0}
    q16, med, q84 = np.quantile(a, [0.16, 0.5, 0.84])
    return {
        "median": float(med),
        "q16": float(q16),
        "q84": float(q84),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": len(a),
    }


def _point(sb: float, runs: Sequence[tuple[float, float, float | None]]) -> dict[str, Any]:
    """One x position of a Fig. 1 curve from its runs' (μ_true, μ̂, Z).

    ``n_b_sr`` is the SR background count implied by S/√B and μ: μ/(1 − μ) = n_S/N_B and
    S/√B = n_S/√N_B give N_B = (S/√B · (1 − μ)/μ)² (exact up to the rounding of n_S).
    """
    mu_true = [t for t, _, _ in runs]
    n_b = [(sb * (1.0 - t) / t) ** 2 for t in mu_true if sb > 0 and 0 < t < 1]
    return {
        "s_over_sqrt_b": float(sb),
        "n_runs": len(runs),
        "n_b_sr": stats(n_b)["median"],
        "mu_inj": stats(mu_true)["median"],
        "mu_hat": stats([h for _, h, _ in runs]),
        "mu_ratio": stats([h / t if t > 0 else None for t, h, _ in runs]),
        "z": stats([z for _, _, z in runs]),
    }


def fig1_curves(sensitivity: dict | None, ranode: dict | None, theta=THETA) -> list[dict[str, Any]]:
    """The Fig. 1 curves: per method, per S/√B the statistics of μ̂ and μ̂/μ_inj over data realisations."""
    curves: list[dict[str, Any]] = []

    def add(key: str, source: str, n_bkg, by_sb: Mapping[float, list]) -> None:
        # S/√B = 0 (spurious-signal runs) is not a Fig. 1 point
        by_sb = {sb: runs for sb, runs in by_sb.items() if runs and sb > 0}
        if by_sb:
            points = [_point(sb, by_sb[sb]) for sb in sorted(by_sb)]
            curves.append(
                {
                    "key": key,
                    "label": _CURVES[key][0],
                    "source": source,
                    "n_background": n_bkg,
                    "points": points,
                }
            )

    same_data = (ranode or {}).get("gbi_paws")
    if same_data:
        # GBI-PAWS fitted to the R-ANODE data sets themselves: the like-for-like comparison
        n_bkg = ranode.get("settings", {}).get("n_background")
        for m in ("learned", "oracle"):
            by_sb = {
                float(sb): [(e["mu_true"], e[m]["mu_hat"], e[m].get("z")) for e in row["runs"] if m in e]
                for sb, row in same_data.items()
            }
            add(f"gbi_{m}", "ranode (same data sets)", n_bkg, by_sb)
    elif sensitivity is not None:
        recs = [
            r
            for r in sensitivity["records"]
            if r.get("ok") and (float(r["mx"]), float(r["my"])) == (float(theta[0]), float(theta[1]))
        ]
        if not recs:
            note(f"note: the sensitivity result has no successful data sets at θ = {theta}")
        n_bkg = sensitivity.get("config", {}).get("n_background")
        for m in ("learned", "oracle"):
            by_sb: dict[float, list] = {}
            for r in recs:
                if m in r:
                    by_sb.setdefault(float(r["s_over_sqrt_b"]), []).append(
                        (r["mu_true"], r[m]["values"]["mu"], r[m].get("z"))
                    )
            add(f"gbi_{m}", "sensitivity", n_bkg, by_sb)
    if ranode is not None:
        n_bkg = ranode.get("settings", {}).get("n_background")
        results = ranode["results"]
        for method in ("learned", "oracle_pb", "ideal"):
            rows = results.get(method, {})
            # the ideal density has no training: its scan and its Minuit fit agree; draw the fit
            for variant in ("fit",) if method == "ideal" else ("scan", "fit"):
                by_sb = {
                    float(sb): [
                        (e["mu_true"], e[f"{variant}_mu_hat"], e.get(f"{variant}_z"))
                        for e in row.get("runs", [])
                        if e.get(f"{variant}_mu_hat") is not None
                    ]
                    for sb, row in rows.items()
                }
                add(f"ranode_{method}_{variant}", "ranode", n_bkg, by_sb)
    return curves


def fig2_rows(sensitivity: dict) -> list[dict[str, Any]]:
    """Per (θ, S/√B, method) the statistics of m̂X and m̂Y over data realisations."""
    groups: dict[tuple[float, float, float], list] = {}
    for r in sensitivity["records"]:
        if r.get("ok"):
            groups.setdefault((float(r["mx"]), float(r["my"]), float(r["s_over_sqrt_b"])), []).append(r)
    rows = []
    for (mx, my, sb), recs in sorted(groups.items()):
        for m in ("learned", "oracle"):
            fits = [r[m]["values"] for r in recs if m in r]
            if fits:
                rows.append(
                    {
                        "mx_true": mx,
                        "my_true": my,
                        "s_over_sqrt_b": sb,
                        "method": m,
                        "n_runs": len(fits),
                        "mx_hat": stats([f["mx"] for f in fits]),
                        "my_hat": stats([f["my"] for f in fits]),
                    }
                )
    return rows


def _none(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def fig3_rows(result) -> list[dict[str, Any]]:
    """Per mass point and parameter: fitted, true, fitted/true and each method's error of fitted/true."""
    from gbi_zfit.inference.fit import PARAM_NAMES

    rows = []
    for p in result.points:
        for name in PARAM_NAMES:
            t = p.truth[name]
            e = p.errors(name)
            rows.append(
                {
                    "mx_true": p.mx,
                    "my_true": p.my,
                    "dataset": p.dataset,
                    "parameter": name,
                    "fitted": _none(p.values[name]),
                    "true": _none(t),
                    "fitted_over_true": _none(p.ratio(name)),
                    "bootstrap": _none(e["bootstrap"][0] / t),
                    "profile_minus": _none(e["profile"][0] / t),
                    "profile_plus": _none(e["profile"][1] / t),
                    "hesse": _none(e["hesse"][0] / t),
                    "expected": _none(e["expected"][0] / t),
                    "valid": bool(p.valid),
                }
            )
    return rows


# --------------------------------------------------------------------------------------------------
# tables


def _f(v, fmt: str = "{:.3g}") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else fmt.format(v)


def _band(q: Mapping[str, Any], fmt: str = "{:.3g}") -> str:
    if q.get("median") is None:
        return "—"
    return f"{_f(q['median'], fmt)} [{_f(q['q16'], fmt)}, {_f(q['q84'], fmt)}]"


def _md(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fig1_markdown(curves: Sequence[Mapping[str, Any]], theta=THETA) -> str:
    head = [
        "method",
        "N_B,SR",
        "S/√B",
        "runs",
        "μ_inj",
        "μ̂ median [16 %, 84 %]",
        "μ̂/μ_inj median [16 %, 84 %]",
    ]
    head.append("Z median")
    rows = []
    for c in curves:
        for p in c["points"]:
            rows.append(
                [
                    c["label"],
                    _f(p["n_b_sr"], "{:,.0f}"),
                    f"{p['s_over_sqrt_b']:g}",
                    str(p["n_runs"]),
                    _f(p["mu_inj"], "{:.3e}"),
                    _band(p["mu_hat"], "{:.3e}"),
                    _band(p["mu_ratio"], "{:.2f}"),
                    _f(p["z"]["median"], "{:.2f}"),
                ]
            )
    return (
        f"# Fig. 1: fitted μ̂ vs injected μ at θ = ({theta[0]:g}, {theta[1]:g}) GeV\n\n"
        "Medians over data realisations; brackets: 16–84 % quantiles. μ_inj is the median realised SR "
        "signal fraction; μ̂/μ_inj is the median of the per-data-set ratios. N_B,SR: SR background events "
        "per data set, from S/√B and μ_inj (the inputs may differ in size). Z: √q0 (GBI-PAWS: θ floating; R-ANODE: √(2ΔlnL)).\n\n"
        + _md(head, rows)
        + "\n"
    )


def fig2_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ["θ true", "S/√B", "method", "runs", "m̂X median [16 %, 84 %]", "m̂Y median [16 %, 84 %]"]
    body = [
        [
            f"({r['mx_true']:g}, {r['my_true']:g})",
            f"{r['s_over_sqrt_b']:g}",
            _CURVES[f"gbi_{r['method']}"][0],
            str(r["n_runs"]),
            _band(r["mx_hat"], "{:.0f}"),
            _band(r["my_hat"], "{:.0f}"),
        ]
        for r in rows
    ]
    return (
        "# Fig. 2: fitted (m̂X, m̂Y) vs truth, GBI-PAWS\n\n"
        "Medians over data realisations [16–84 % quantiles], GeV; canonical m̂X ≥ m̂Y.\n\n"
        + _md(head, body)
        + "\n"
    )


def fig3_markdown(rows: Sequence[Mapping[str, Any]], result) -> str:
    head = ["point", "par", "fitted", "true", "fit/true", "±boot", "profile −/+", "±HESSE", "±expected"]
    body = []
    for r in rows:
        fmt = "{:.3g}" if r["parameter"] == "mu" else "{:.1f}"
        prof = (
            f"−{r['profile_minus']:.3f} / +{r['profile_plus']:.3f}"
            if r["profile_minus"] is not None and r["profile_plus"] is not None
            else "open"
        )
        body.append(
            [
                f"({r['mx_true']:g}, {r['my_true']:g})" + (f" #{r['dataset']}" if r["dataset"] else ""),
                r["parameter"],
                _f(r["fitted"], fmt),
                _f(r["true"], fmt),
                _f(r["fitted_over_true"], "{:.3f}"),
                _f(r["bootstrap"], "{:.3f}"),
                prof,
                _f(r["hesse"], "{:.3f}"),
                _f(r["expected"], "{:.3f}"),
            ]
        )
    cfg = result.config
    s = result.summary()
    summary_rows = []
    for name, entry in s.items():
        ratio = entry["ratio_to_profile"]
        summary_rows.append(
            [name, _f(entry["mean_fitted_over_true"], "{:.3f}")]
            + [_f(ratio[m]["mean"], "{:.2f}") for m in ("bootstrap", "hesse", "expected")]
            + [f"{_f(entry['chi2_profile'], '{:.1f}')} / {entry['n_profile']}"]
        )
    return (
        "# Fig. 3: fitted / true across the mass grid (oracle)\n\n"
        f"μ = {cfg.get('mu')}, {cfg.get('n_background')} background events, {cfg.get('n_bootstrap')} "
        "bootstrap replicas. Errors are of fitted/true (68 %): bootstrap standard deviation, profile "
        "likelihood (Wilks, asymmetric), Fisher information observed (HESSE) and expected (Asimov).\n\n"
        + _md(head, body)
        + "\n\nAgreement of the methods (mean over points of σ_method / σ_profile) and χ² of "
        "(fitted − true)/σ_profile:\n\n"
        + _md(
            ["par", "mean fit/true", "boot/prof", "HESSE/prof", "expected/prof", "χ²(prof) / n"], summary_rows
        )
        + "\n"
    )


# --------------------------------------------------------------------------------------------------
# figures


_RATIO_TOP = 3.0


def plot_fig1(curves: Sequence[Mapping[str, Any]], path: Path, theta=THETA) -> Path:
    """μ̂ vs μ_inj (log–log) with bands and the diagonal; lower panel: median μ̂/μ_inj with 16–84 % bars."""
    from matplotlib import ticker

    from gbi_zfit.plotting._style import save, style

    plt, _ = style()
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(9, 10), sharex=True, gridspec_kw={"height_ratios": [3, 1.3], "hspace": 0.05}
    )
    mu_all = [p["mu_inj"] for c in curves for p in c["points"] if p["mu_inj"]] or [1e-3]
    lo, hi = min(mu_all) / 2.5, max(mu_all) * 2.5
    floor = 0.2 * min(mu_all)  # μ̂ = 0 (at its limit) cannot be drawn on a log axis
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1.2, ls=":", label=r"$\hat\mu = \mu_\mathrm{inj}$")
    for k, c in enumerate(curves):
        label, color, ls, marker, band, lw = _CURVES.get(c["key"], (c["label"], f"C{k}", "-", "o", True, 1.5))
        pts = [p for p in c["points"] if p["mu_inj"] and p["mu_hat"]["median"] is not None]
        if not pts:
            continue
        x = np.array([p["mu_inj"] for p in pts])
        q = {s: np.maximum([p["mu_hat"][s] for p in pts], floor) for s in ("median", "q16", "q84")}
        n_b = max(pts, key=lambda p: p["s_over_sqrt_b"])["n_b_sr"]  # largest n_S: least rounding
        suffix = rf", $N_{{B,SR}}$ ≈ {n_b / 1e3:.3g}k" if n_b else ""
        if band:
            ax.fill_between(x, q["q16"], q["q84"], color=color, alpha=0.18, lw=0)
        ax.plot(x, q["median"], ls=ls, marker=marker, color=color, lw=lw, ms=6, label=label + suffix)
        # μ̂/μ above the panel's top is drawn at the top
        r = {s: np.minimum([p["mu_ratio"][s] for p in pts], _RATIO_TOP) for s in ("median", "q16", "q84")}
        shift = 1.0 + 0.03 * (k - (len(curves) - 1) / 2)  # side by side, not on top of each other
        rax.errorbar(
            x * shift,
            r["median"],
            yerr=[r["median"] - r["q16"], r["q84"] - r["median"]] if band else None,
            ls=ls,
            marker=marker,
            color=color,
            lw=lw,
            ms=5,
            capsize=2,
        )
    rax.axhline(1.0, color="grey", ls=":", lw=1.2)
    ax.axhline(floor, color="lightgrey", lw=0.8, zorder=0)
    ax.text(lo * 1.1, floor * 1.08, r"$\hat\mu = 0$ drawn here", fontsize=9, color="grey")
    for a in (ax, rax):
        a.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis, rax.xaxis):  # the ROOT style labels minor log ticks: they overlap
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_ylim(floor * 0.7, hi * 1.5)
    ax.set_ylabel(r"fitted $\hat\mu$ (median, 16–84 %)", fontsize="small")
    ax.set_title(
        rf"$(m_X, m_Y)$ = ({theta[0]:g}, {theta[1]:g}) GeV, medians over data realisations", fontsize=13
    )
    ax.legend(fontsize=10, loc="upper left")
    rax.set_ylim(0.0, _RATIO_TOP * 1.04)
    rax.text(
        hi / 1.1,
        _RATIO_TOP * 0.9,
        f"values > {_RATIO_TOP:g} drawn at {_RATIO_TOP:g}",
        fontsize=9,
        color="grey",
        ha="right",
    )
    rax.set_ylabel(r"$\hat\mu / \mu_\mathrm{inj}$", fontsize="small")
    rax.set_xlabel(r"injected $\mu_\mathrm{inj}$ (SR signal fraction)", fontsize="small")
    fig.subplots_adjust(left=0.15, right=0.96, top=0.95, bottom=0.08)
    return save(fig, path)


# --------------------------------------------------------------------------------------------------
# assembling


def _write(out: Path, name: str, markdown: str, numbers: Mapping[str, Any]) -> list[Path]:
    from gbi_zfit._util import atomic_write_text

    md, js = out / f"{name}.md", out / f"{name}.json"
    atomic_write_text(md, markdown)
    atomic_write_text(js, json.dumps(numbers, indent=1, allow_nan=False))
    return [md, js]


def assemble(
    out: Path,
    sensitivity_path: Path = DEFAULT_SENSITIVITY,
    ranode_path: Path = DEFAULT_RANODE,
    mass_grid_path: Path = DEFAULT_MASS_GRID,
    theta: tuple[float, float] = THETA,
) -> dict[str, list[Path]]:
    """Write the figures and tables from the component results; return the files written per figure."""
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    sens = load_sensitivity(Path(sensitivity_path))
    ranode = load_ranode(Path(ranode_path))

    curves = fig1_curves(sens, ranode, theta)
    if curves:
        numbers = {
            "figure": FIG1,
            "theta": list(theta),
            "band": "16-84 % quantiles over data realisations (linear interpolation)",
            "inputs": {
                "sensitivity": str(sensitivity_path) if sens is not None else None,
                "ranode": ranode["source"] if ranode is not None else None,
            },
            "curves": curves,
        }
        files = _write(out, FIG1, fig1_markdown(curves, theta), numbers)
        written[FIG1] = [plot_fig1(curves, out / f"{FIG1}.png", theta), *files]
    else:
        note("note: Fig. 1 skipped: neither GBI-PAWS nor R-ANODE results")

    if sens is not None and any(r.get("ok") for r in sens["records"]):
        from gbi_zfit.plotting.sensitivity import plot_mass_scatter

        rows = fig2_rows(sens)
        numbers = {"figure": FIG2, "input": str(sensitivity_path), "rows": rows}
        files = _write(out, FIG2, fig2_markdown(rows), numbers)
        written[FIG2] = [plot_mass_scatter(sens["records"], out / f"{FIG2}.png"), *files]
    else:
        note("note: Fig. 2 skipped: no sensitivity results")

    grid = load_mass_grid(Path(mass_grid_path))
    if grid is not None and grid.points:
        from gbi_zfit.plotting.mass_grid import plot_mass_grid

        rows = fig3_rows(grid)
        numbers = {
            "figure": FIG3,
            "input": str(mass_grid_path),
            "config": grid.config,
            "rows": rows,
            "summary": grid.summary(),
        }
        files = _write(out, FIG3, fig3_markdown(rows, grid), numbers)
        written[FIG3] = [plot_mass_grid(grid, out / f"{FIG3}.png"), *files]
    else:
        note("note: Fig. 3 skipped: no mass-grid result")

    for name, paths in written.items():
        note(f"{name}: " + ", ".join(str(p) for p in paths))
    return written


def commands(preset: str, out: Path, only: Sequence[str] = COMPONENTS, models: Path | None = None):
    """The component benchmarks' command lines of ``preset``, writing under ``out/runs``.

    Returns
    -------
    dict
        component → (argv, the result path that :func:`assemble` reads).
    """
    runs = out / "runs"
    py = sys.executable
    args = PRESETS[preset]
    cmds: dict[str, tuple[list[str], Path]] = {}
    if "sensitivity" in only:
        d = runs / "sensitivity"
        cmd = [py, str(BENCHMARKS / "sensitivity.py"), *args["sensitivity"], "--out", str(d)]
        cmd += [
            "--models",
            str(models or d / "models"),
            "--store",
            str(d / "sensitivity.jsonl"),
            "--no-progress",
        ]
        cmds["sensitivity"] = (cmd, d / "sensitivity.json")
    if "ranode" in only:
        d = runs / "ranode"
        cmds["ranode"] = (
            [py, str(BENCHMARKS / "ranode.py"), *args["ranode"], "--out", str(d), "--no-progress"],
            d,
        )
    if "mass_grid" in only:
        stem = runs / "mass_grid" / "fig3_oracle"
        cmd = [py, str(BENCHMARKS / "mass_grid.py"), *args["mass_grid"], "--out", str(stem), "--no-progress"]
        cmds["mass_grid"] = (cmd, stem.with_suffix(".json"))
    return cmds


def run_components(cmds: Mapping[str, tuple[list[str], Path]], dry_run: bool = False) -> list[str]:
    """Run the commands one after the other (output passes through); return the components that failed."""
    failed = []
    for name, (cmd, _) in cmds.items():
        note(f"[{name}] " + " ".join(cmd))
        if dry_run:
            continue
        t0 = time.perf_counter()
        (Path(cmd[cmd.index("--out") + 1]).parent).mkdir(parents=True, exist_ok=True)
        rc = subprocess.call(cmd, cwd=BENCHMARKS.parent)
        note(f"[{name}] exit code {rc} after {time.perf_counter() - t0:.0f} s")
        if rc != 0:
            failed.append(name)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--from-results", action="store_true", help="only assemble from existing result JSONs")
    ap.add_argument("--quick", action="store_true", help="small component runs (default: full sizes)")
    ap.add_argument("--sensitivity", type=Path, default=None, help=f"default: {DEFAULT_SENSITIVITY}")
    ap.add_argument(
        "--ranode", type=Path, default=None, help=f"summary or its directory; default {DEFAULT_RANODE}"
    )
    ap.add_argument("--mass-grid", type=Path, default=None, help=f"default: {DEFAULT_MASS_GRID}")
    ap.add_argument(
        "--theta", type=float, nargs=2, default=list(THETA), metavar=("MX", "MY"), help="Fig. 1 θ"
    )
    ap.add_argument(
        "--only", nargs="+", choices=COMPONENTS, default=list(COMPONENTS), help="components to run"
    )
    ap.add_argument("--sensitivity-models", type=Path, default=None, help="trained GBI-PAWS models to reuse")
    ap.add_argument("--dry-run", action="store_true", help="print the component commands, run nothing")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    args = ap.parse_args(argv)

    inputs = {"sensitivity": args.sensitivity, "ranode": args.ranode, "mass_grid": args.mass_grid}
    failed: list[str] = []
    if not args.from_results:
        preset = "quick" if args.quick else "full"
        cmds = commands(preset, args.out, COMPONENTS, args.sensitivity_models)
        for name, (_, result) in cmds.items():  # components not run: their earlier output under OUT/runs
            inputs[name] = inputs[name] or result
        cmds = {k: v for k, v in cmds.items() if k in args.only}
        note(f"preset {preset}: running {', '.join(cmds)} (outputs under {args.out / 'runs'})")
        failed = run_components(cmds, dry_run=args.dry_run)
        if args.dry_run:
            return 0
        if failed:
            note(f"note: failed: {', '.join(failed)}; assembling what exists")
    written = assemble(
        args.out,
        inputs["sensitivity"] or DEFAULT_SENSITIVITY,
        inputs["ranode"] or DEFAULT_RANODE,
        inputs["mass_grid"] or DEFAULT_MASS_GRID,
        theta=(args.theta[0], args.theta[1]),
    )
    note(f"written {sum(len(v) for v in written.values())} file(s) to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
