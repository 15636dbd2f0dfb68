"""Coverage of the fit's intervals from pseudo-experiments, and a toy-based (Neyman) remedy.

:func:`run_coverage` runs toys (:func:`gbi_zfit.inference.toys.run_toys`: generator, bootstrap or model
toys at a known truth) and summarises, with binomial errors, how often

* the Wilks interval of μ (t_μ < χ²_{1}: 68.3 %, 95 %) contains μ_true,
* the Wilks region of θ = (mX, mY) (t_θ < χ²_{2}: 68.3 %, 95 %) contains θ_true,
* the MINOS and HESSE 68 % intervals of μ contain μ_true,

plus the μ pull (μ̂ − μ_true) / σ_HESSE with θ floating and with θ fixed at the truth, and the median
discovery significance Z0. Where Wilks' theorem fails — (mX, mY) at small signals, where θ is only
weakly identified — the toys themselves give the remedy: the empirical 68.3 / 95 % quantiles of t_θ and
t_μ at the truth are the calibrated thresholds to use instead of χ²_k (a Neyman construction at the
truth). They are reported next to χ²_k with order-statistic errors, and the coverage they give is checked
out of sample (thresholds from the even toys applied to the odd ones and vice versa).

A run is resumable: with a store path, every toy is appended to a JSON Lines file as it finishes, and a
rerun (or a run extended to more toys) skips what is there. :func:`summarize_store` summarises a store
at any time, e.g. while the run is going.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import chi2

from .._util import dump_json, load_json_record
from ..errors import DataFileError, InputError
from .toys import ToyConfig, run_toys, store_config

__all__ = [
    "CoverageConfig",
    "CoverageResult",
    "run_coverage",
    "summarize_store",
    "summarize_toys",
]

#: The configuration of a coverage run is the toy configuration.
CoverageConfig = ToyConfig

#: Confidence levels of the table.
CLS = (0.683, 0.95)


def _binomial(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    p = k / n
    return p, math.sqrt(p * (1.0 - p) / n)


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _clean(obj: Any) -> Any:
    """NaN/inf → None, numpy → Python (JSON without NaN literals)."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def _quantile_with_error(t: np.ndarray, p: float) -> tuple[float, float, float]:
    """Empirical p-quantile of ``t`` and its ±1σ order-statistic interval."""
    n = len(t)
    if n == 0:
        return math.nan, math.nan, math.nan
    s = np.sort(t)
    q = float(np.quantile(s, p))
    half = math.sqrt(n * p * (1.0 - p))
    lo = s[max(0, math.floor(n * p - half) - 1)]
    hi = s[min(n - 1, math.ceil(n * p + half) - 1)]
    return q, float(lo), float(hi)


def _pull_stats(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 2:
        return {"n": n, "mean": math.nan, "mean_error": math.nan, "width": math.nan, "width_error": math.nan}
    sd = float(np.std(x, ddof=1))
    return {
        "n": n,
        "mean": float(np.mean(x)),
        "mean_error": sd / math.sqrt(n),
        "width": sd,
        "width_error": sd / math.sqrt(2.0 * (n - 1)),
    }


@dataclass
class CoverageResult:
    """Summary of a coverage run; prints as a table like DESIGN §7 and round-trips through JSON.

    Attributes
    ----------
    config : dict
        The :class:`~gbi_zfit.inference.toys.ToyConfig` as a dict.
    seed, n_toys : int
        Root seed and number of toys requested (toys summarised: ``n_done``).
    n_used : int
        Toys whose fits were all valid; every coverage fraction and pull is over these.
    n_failed : int
        Toys that raised (``failures`` lists index and error) or whose fits were invalid.
    coverage : dict
        ``name -> {"label", "cl", "k", "threshold", "n", "covered", "fraction", "error"}`` for
        ``mu_68``, ``mu_95``, ``theta_68``, ``theta_95``, ``minos_68``, ``hesse_68``, ``hesse_fixed_68``.
    pull, pull_fixed : dict
        ``n``, ``mean`` ± ``mean_error``, ``width`` ± ``width_error`` of the μ pull with θ floating / fixed.
    pull_shift : dict
        The same for the per-toy difference pull − pull_fixed (same toys): the shift of μ̂ caused by
        maximising over θ, measured far more precisely than either pull mean.
    z0_median, z0_fixed_median : float
        Median discovery significance with θ floating (local) / fixed at the truth.
    neyman : dict
        ``"t_mu"`` and ``"t_theta"``: per CL the χ²_k threshold, the toy quantile with its order-statistic
        interval, the Wilks coverage and the out-of-sample coverage of the toy threshold.
    minos_check : dict
        On toys with MINOS: how often "MINOS 68 % covers" equals "t_μ < 1" (the profile interval).
    samples : dict
        Per-toy values of the used toys (``index``, ``mu_hat``, ``pull``, ``pull_fixed``, ``t_mu``,
        ``t_theta``, ``z0``) for figures.
    """

    config: dict
    seed: int
    n_toys: int
    n_done: int = 0
    n_used: int = 0
    n_failed: int = 0
    failures: list = field(default_factory=list)
    truth: dict = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)
    pull: dict = field(default_factory=dict)
    pull_fixed: dict = field(default_factory=dict)
    pull_shift: dict = field(default_factory=dict)
    z0_median: float = math.nan
    z0_fixed_median: float = math.nan
    neyman: dict = field(default_factory=dict)
    minos_check: dict = field(default_factory=dict)
    time_per_toy_s: float = math.nan
    samples: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _clean(
            {
                "config": self.config,
                "seed": self.seed,
                "n_toys": self.n_toys,
                "n_done": self.n_done,
                "n_used": self.n_used,
                "n_failed": self.n_failed,
                "failures": self.failures,
                "truth": self.truth,
                "coverage": self.coverage,
                "pull": self.pull,
                "pull_fixed": self.pull_fixed,
                "pull_shift": self.pull_shift,
                "z0_median": self.z0_median,
                "z0_fixed_median": self.z0_fixed_median,
                "neyman": self.neyman,
                "minos_check": self.minos_check,
                "time_per_toy_s": self.time_per_toy_s,
                "samples": self.samples,
                "info": self.info,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CoverageResult:
        d = dict(d)
        for key in ("z0_median", "z0_fixed_median", "time_per_toy_s"):
            d[key] = _num(d.get(key))
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self.to_dict(), path, indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> CoverageResult:
        """From a JSON file or JSON text written by :meth:`to_json`; :class:`DataFileError` if it is not one."""
        return load_json_record(cls, text_or_path, "a coverage result")

    def __eq__(self, other) -> bool:
        return isinstance(other, CoverageResult) and self.to_dict() == other.to_dict()

    # -- access ----------------------------------------------------------------------------------------
    def fraction(self, name: str) -> tuple[float, float]:
        """(coverage fraction, binomial error) of ``name`` (e.g. ``"theta_68"``)."""
        c = self.coverage[name]
        return _num(c["fraction"]), _num(c["error"])

    def threshold(self, statistic: str = "t_theta", cl: float = 0.683) -> float:
        """Toy-calibrated threshold of ``statistic`` (``"t_mu"``/``"t_theta"``) at ``cl``, to use instead of χ²_k."""
        for row in self.neyman[statistic]["levels"]:
            if abs(row["cl"] - cl) < 1e-9:
                return _num(row["toy_threshold"])
        raise InputError(f"no {cl} level for {statistic}; levels are {CLS}")

    # -- printing --------------------------------------------------------------------------------------
    def __str__(self) -> str:
        c = self.config

        def cov(name, err=True):
            f, e = self.fraction(name)
            if not math.isfinite(f):
                return "—"
            n = self.coverage[name]["n"]
            note = f" (n={n})" if n != self.n_used else ""
            return (f"{f:.3f} ± {e:.3f}" if err else f"{f:.3f}") + note

        p, pf = self.pull, self.pull_fixed
        head = (
            f"Coverage of the {c.get('kind')} toys at S/√B = {c.get('s_over_sqrt_b'):g}, "
            f"θ = ({c.get('mx'):g}, {c.get('my'):g}), μ_true = {self.truth.get('mu', math.nan):.5g}, "
            f"N_B,exp = {c.get('n_background_sr'):g}; {self.n_done} of {self.n_toys} toys done, "
            f"{self.n_used} used, {self.n_failed} failed/invalid; {self.time_per_toy_s:.1f} s/toy (median)"
        )
        cols = [
            "S/√B",
            "toys",
            "μ (k=1) 68.3 %",
            "μ (k=1) 95 %",
            "(mX,mY) (k=2) 68.3 %",
            "(mX,mY) (k=2) 95 %",
            "MINOS 68 %",
            "HESSE 68 %",
            "μ pull mean",
            "pull width",
            "median Z0",
        ]
        row = [
            f"{c.get('s_over_sqrt_b'):g}",
            f"{self.n_used}",
            cov("mu_68"),
            cov("mu_95"),
            cov("theta_68"),
            cov("theta_95"),
            cov("minos_68", err=False),
            cov("hesse_68", err=False),
            f"{p['mean']:+.3f} ± {p['mean_error']:.3f}",
            f"{p['width']:.2f} ± {p['width_error']:.2f}",
            f"{self.z0_median:.1f}",
        ]
        lines = [
            head,
            "",
            "| " + " | ".join(cols) + " |",
            "|" + "---|" * len(cols),
            "| " + " | ".join(row) + " |",
        ]
        lines += [
            "",
            (
                f"θ fixed at the truth: μ pull mean {pf['mean']:+.3f} ± {pf['mean_error']:.3f}, "
                f"width {pf['width']:.3f} ± {pf['width_error']:.3f}; HESSE 68 % {cov('hesse_fixed_68')}; "
                f"median Z0 {self.z0_fixed_median:.2f}"
            ),
            (
                f"shift of the pull from floating θ (paired, same toys): "
                f"{self.pull_shift.get('mean', math.nan):+.3f} ± {self.pull_shift.get('mean_error', math.nan):.3f}"
            ),
        ]
        mc = self.minos_check
        if mc.get("n"):
            lines.append(
                f"MINOS vs profile: on {mc['n']} toys with MINOS, 'MINOS 68 % covers' == 't_μ < 1' in "
                f"{mc['agree']} (mismatches at toys {mc['mismatch']})"
            )
        lines += [
            "",
            "Toy-calibrated (Neyman) thresholds of 2ΔNLL at the truth, to use instead of χ²_k:",
            "| statistic | CL | χ²_k | toy quantile [±1σ] | Wilks coverage | coverage of toy threshold (out of sample) |",
            "|---|---|---|---|---|---|",
        ]
        for stat, name in (("t_mu", "t_μ (k=1)"), ("t_theta", "t_θ (k=2)")):
            for r in self.neyman.get(stat, {}).get("levels", []):
                lines.append(
                    f"| {name} | {r['cl']:.1%} | {r['chi2']:.2f} | {_num(r['toy_threshold']):.2f} "
                    f"[{_num(r['toy_threshold_lo']):.2f}, {_num(r['toy_threshold_hi']):.2f}] | "
                    f"{_num(r['wilks_coverage']):.3f} | {_num(r['calibrated_coverage']):.3f} ± "
                    f"{_num(r['calibrated_coverage_error']):.3f} |"
                )
        if self.failures:
            shown = "; ".join(f"#{f['index']}: {f['reason']}" for f in self.failures[:5])
            lines += ["", f"failed/invalid toys ({len(self.failures)}): {shown}"]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
def summarize_toys(
    results: Sequence[Mapping[str, Any] | None],
    config: ToyConfig | Mapping,
    seed: int,
    n_toys: int | None = None,
) -> CoverageResult:
    """Summarise per-toy results (:func:`~gbi_zfit.inference.toys.run_one_toy` dicts) into a CoverageResult.

    ``None`` entries (toys not done yet) are skipped. Toys that raised, or whose fits were not all valid,
    count as failures and are left out of every fraction.
    """
    cfg = config.to_dict() if isinstance(config, ToyConfig) else dict(config)
    done = [r for r in results if r is not None]
    used, failures = [], []
    for i, r in enumerate(results):
        if r is None:
            continue
        index = r.get("index", i)
        if not r.get("ok", False):
            failures.append({"index": index, "reason": r.get("error", "failed")})
        elif not r.get("valid", False):
            fit = r.get("fit", {})
            why = [
                name
                for name, ok in (
                    ("full fit", fit.get("valid")),
                    ("μ profile", r.get("profile_mu", {}).get("valid")),
                    ("θ-fixed fit", r.get("fixed_theta", {}).get("valid")),
                )
                if not ok
            ]
            failures.append({"index": index, "reason": "invalid: " + (", ".join(why) or "no HESSE error")})
        else:
            used.append(r)
    truth = dict(used[0]["truth"]) if used else (ToyConfig.from_dict(cfg).truth if cfg else {})

    def arr(key, sub=None):
        vals = [(r[key] if sub is None else r[key][sub]) for r in used]
        return np.array([_num(v) for v in vals], dtype=np.float64)

    t_mu, t_th = arr("t_mu"), arr("t_theta")
    coverage: dict[str, dict] = {}
    for cl in CLS:
        tag = f"{round(cl * 100):d}"
        for stat, t, k, label in (
            (f"mu_{tag}", t_mu, 1, "μ (k=1)"),
            (f"theta_{tag}", t_th, 2, "(mX, mY) (k=2)"),
        ):
            thr = float(chi2.ppf(cl, k))
            covered = int(np.sum(t < thr))
            f, e = _binomial(covered, len(t))
            coverage[stat] = {
                "label": f"{label} Wilks {cl:.1%}",
                "cl": cl,
                "k": k,
                "threshold": thr,
                "n": len(t),
                "covered": covered,
                "fraction": f,
                "error": e,
            }
    for name, key, label in (
        ("minos_68", "minos_covers", "MINOS 68 %"),
        ("hesse_68", "hesse_covers", "HESSE 68 %"),
        ("hesse_fixed_68", "hesse_covers_fixed", "HESSE 68 % (θ fixed)"),
    ):
        flags = [bool(r[key]) for r in used if r.get(key) is not None]
        f, e = _binomial(sum(flags), len(flags))
        coverage[name] = {
            "label": label,
            "cl": 0.6827,
            "k": 1,
            "threshold": None,
            "n": len(flags),
            "covered": sum(flags),
            "fraction": f,
            "error": e,
        }

    # toy-based thresholds; out-of-sample check: even toys calibrate the odd ones and vice versa
    idx = np.array([r.get("index", i) for i, r in enumerate(used)], dtype=int)
    even = idx % 2 == 0
    neyman: dict[str, dict] = {}
    for stat, t, k in (("t_mu", t_mu, 1), ("t_theta", t_th, 2)):
        levels = []
        for cl in CLS:
            q, lo, hi = _quantile_with_error(t, cl)
            covered, n_cal = 0, 0
            for a, b in ((even, ~even), (~even, even)):
                if a.sum() and b.sum():
                    covered += int(np.sum(t[b] < np.quantile(t[a], cl)))
                    n_cal += int(b.sum())
            f, e = _binomial(covered, n_cal)
            levels.append(
                {
                    "cl": cl,
                    "chi2": float(chi2.ppf(cl, k)),
                    "toy_threshold": q,
                    "toy_threshold_lo": lo,
                    "toy_threshold_hi": hi,
                    "wilks_coverage": float(np.mean(t < chi2.ppf(cl, k))) if len(t) else math.nan,
                    "calibrated_coverage": f,
                    "calibrated_coverage_error": e,
                    "chi2_cl_of_toy_threshold": float(chi2.cdf(q, k)) if math.isfinite(q) else math.nan,
                }
            )
        neyman[stat] = {"k": k, "n": len(t), "levels": levels}

    with_minos = [r for r in used if r.get("minos_covers") is not None]
    mismatch = [
        int(r.get("index", -1)) for r in with_minos if bool(r["minos_covers"]) != bool(r["t_mu"] < 1.0)
    ]
    minos_check = {"n": len(with_minos), "agree": len(with_minos) - len(mismatch), "mismatch": mismatch}

    mu_hat = np.array([r["fit"]["values"]["mu"] for r in used], dtype=np.float64)
    z0 = arr("z0")
    times = [r.get("time_total_s", r.get("time_s")) for r in done if r.get("ok")]
    return CoverageResult(
        config=cfg,
        seed=int(seed),
        n_toys=int(n_toys if n_toys is not None else len(results)),
        n_done=len(done),
        n_used=len(used),
        n_failed=len(failures),
        failures=failures,
        truth=truth,
        coverage=coverage,
        pull=_pull_stats(arr("pull")),
        pull_fixed=_pull_stats(arr("pull_fixed")),
        pull_shift=_pull_stats(arr("pull") - arr("pull_fixed")),
        z0_median=float(np.median(z0)) if len(z0) else math.nan,
        z0_fixed_median=float(np.median(arr("z0_fixed"))) if len(z0) else math.nan,
        neyman=neyman,
        minos_check=minos_check,
        time_per_toy_s=float(np.median(times)) if times else math.nan,
        samples={
            "index": idx.tolist(),
            "mu_hat": mu_hat.tolist(),
            "pull": arr("pull").tolist(),
            "pull_fixed": arr("pull_fixed").tolist(),
            "t_mu": t_mu.tolist(),
            "t_theta": t_th.tolist(),
            "z0": z0.tolist(),
        },
        info={
            "global_not_min": int(sum(bool(r.get("global_not_min")) for r in used)),
            "mu_at_limit": int(sum(bool(r["fit"].get("at_limit")) for r in used)),
        },
    )


def run_coverage(
    config: ToyConfig,
    n_toys: int,
    seed: int,
    executor=None,
    store_path: str | Path | None = None,
    progress: bool = True,
) -> CoverageResult:
    """Run (or resume) ``n_toys`` toys of ``config`` and summarise their coverage.

    Parameters
    ----------
    config : CoverageConfig (= ToyConfig)
        Truth, toy kind and fit settings.
    n_toys, seed : int
        Toy ``i`` uses child ``i`` of ``SeedSequence(seed)``: the result does not depend on the executor.
    executor : gbi_zfit.parallel.Executor, optional
        Default: in-process (:class:`~gbi_zfit.parallel.SerialExecutor`); e.g.
        ``make_executor(dask=True, n_workers=2)`` for a Dask LocalCluster.
    store_path : path, optional
        JSON Lines result store: finished toys are saved as they finish and skipped on a rerun.

    Examples
    --------
    >>> cfg = CoverageConfig(s_over_sqrt_b=1.0, mx=300, my=150)
    >>> res = run_coverage(cfg, n_toys=500, seed=1, store_path="toys.jsonl")
    >>> print(res)                               # the coverage table
    >>> res.threshold("t_theta", 0.683)          # toy-calibrated 2ΔNLL threshold for (mX, mY)
    """
    results = run_toys(config, n_toys, seed, executor, store_path, progress=progress)
    return summarize_toys(results, config, seed, n_toys)


def summarize_store(path: str | Path, n_toys: int | None = None) -> CoverageResult:
    """Summarise the toys found in a result store (also while its run is still going)."""
    from ..parallel import ResultStore

    if not Path(path).is_file():  # reading must not create an empty store as a side effect
        raise DataFileError(f"{path} does not exist or is not a file; give the path of a toy result store")
    store = ResultStore(path, read_only=True)  # safe while the run is still appending
    cfg = store.header.get("config") or {}
    if cfg.get("schema") != store_config(ToyConfig(), 0)["schema"]:
        raise DataFileError(f"{path} is not a store of gbi_zfit toys (config {cfg!r})")
    res = store.results()
    n = n_toys if n_toys is not None else (max(res) + 1 if res else 0)
    return summarize_toys([res.get(i) for i in range(n)], cfg["toys"], cfg["seed"], n)
