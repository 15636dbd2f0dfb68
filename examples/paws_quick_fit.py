"""GBI-PAWS end to end: train a small CFM + classifier ensemble, then fit μ and θ with zfit.

What it shows
    1. the sideband fit of p(mjj) (:func:`gbi_zfit.fit_sidebands`) and a CFM background generator
       p_B(x | mjj) trained on the sidebands (:func:`gbi_zfit.models.cfm.train_cfm`);
    2. the SR background sample: mjj from the p(mjj) fit, features from the CFM, 3 × the predicted count;
    3. the parameterized classifier ensemble g(x, θ) trained on that sample against simulated signal on
       a θ grid (:func:`gbi_zfit.models.classifier.train_classifier_ensemble`); it *is* a ratio model
       Λ_FS(x | θ), so it goes into :class:`gbi_zfit.RatioPDF` exactly like the oracle;
    4. the fit in the zfit idiom: a coarse scan of ``loss.value()`` over the training grid picks the
       starting θ (θ is unknown in a search), then ``minimizer.minimize(loss)``, HESSE and MINOS(μ).

Settings: ``--preset quick`` (default; ``CFMConfig``/``ClassifierConfig.preset("quick")`` on the full
50…600 GeV grid, ≈ 10 min on 2 CPU cores, the budget of ``benchmarks/quick_pipeline.py`` with the same
presets) or ``--preset test`` (the ``test`` presets on a 3 × 3 grid
around the signal and 200k background events: ≈ 1 min, a smoke run — the tests use it; the environment
variable ``GBI_EXAMPLES_QUICK=1`` selects it too). The small models are not accurate; the ``paper``
presets are what a real analysis trains (on a GPU, see the docs).

Run::

    python examples/paws_quick_fit.py [--preset quick|test] [--seed 1] [--save DIR]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")

import numpy as np
import zfit

import gbi_zfit as gz
from gbi_zfit.models.cfm import CFMConfig, train_cfm
from gbi_zfit.models.classifier import ClassifierConfig, train_classifier_ensemble

TRUTH = (300.0, 150.0)
SETTINGS = {
    # preset: (background events, S/√B, classifier overrides)
    "quick": (1_000_000, 3.0, {}),
    "test": (200_000, 5.0, {"mx_grid": (200.0, 300.0, 400.0), "my_grid": (100.0, 150.0, 200.0)}),
}


def main(preset: str = "quick", seed: int = 1, save: str | None = None) -> zfit.result.FitResult:
    n_background, s_over_sqrt_b, grid = SETTINGS[preset]
    s_data, s_cfm, s_gen, s_cls = np.random.SeedSequence(seed).spawn(4)
    t0 = time.perf_counter()
    sim = gz.LHCOSim()
    data = sim.make_dataset(
        s_over_sqrt_b=s_over_sqrt_b, mx=TRUTH[0], my=TRUTH[1], n_background=n_background, seed=s_data
    )
    sidebands, sr = sim.signal_region.sidebands(data), sim.signal_region.signal_region(data)

    # 1-2. background generator in the sidebands, SR background sample
    mjj_fit = gz.fit_sidebands(data.mjj, sim.signal_region)
    cfm = train_cfm(sidebands, CFMConfig.preset(preset), seed=s_cfm)
    background = cfm.sample_sr_background(mjj_fit, factor=3.0, seed=s_gen)
    print(
        f"CFM trained, {len(background.mjj)} SR background events generated ({time.perf_counter() - t0:.0f} s)"
    )

    # 3. the classifier ensemble: a ratio model Λ_FS(x | θ)
    config = ClassifierConfig.preset(preset, **grid)
    ensemble = train_classifier_ensemble(background.features, config, seed=s_cls)
    print(f"{ensemble} trained ({time.perf_counter() - t0:.0f} s)")
    if save:
        cfm.save(os.path.join(save, "cfm"))
        ensemble.save(os.path.join(save, "classifier"))  # reload with ClassifierEnsemble.load(...)

    # 4. the zfit fit; θ limits = the range the ensemble was trained on
    (mx_lo, mx_hi), (my_lo, my_hi) = ensemble.theta_bounds
    obs = gz.feature_space("paws")
    mu = zfit.Parameter("mu", 2 / np.sqrt(len(sr)), 0, 1)
    mx = zfit.Parameter("mx", 0.5 * (mx_lo + mx_hi), mx_lo, mx_hi)
    my = zfit.Parameter("my", 0.5 * (my_lo + my_hi), my_lo, my_hi)
    pdf = gz.RatioPDF(obs, ensemble, mu=mu, mx=mx, my=my)
    loss = zfit.loss.UnbinnedNLL(pdf, gz.to_zfit_data(sr, obs), constraints=[gz.low_mass_penalty(mx, my)])

    def nll_at(theta):
        mx.set_value(theta[0])
        my.set_value(theta[1])
        return float(loss.value())

    # start MIGRAD at the most likely training point (canonical mX ≥ mY, nudged inside the limits)
    candidates = np.clip(
        config.grid[config.grid[:, 0] >= config.grid[:, 1]], [mx_lo + 1, my_lo + 1], [mx_hi - 1, my_hi - 1]
    )
    start = min(candidates, key=nll_at)
    mx.set_value(start[0])
    my.set_value(start[1])
    print(f"start θ = ({start[0]:g}, {start[1]:g}) GeV from {len(candidates)} grid points")
    result = zfit.minimize.Minuit(gradient="zfit").minimize(loss)
    result.hesse()
    result.errors(params=[mu])
    print(result)
    print(
        f"truth: mu = {sr.label.mean():.4g}, mX = {TRUTH[0]:g}, mY = {TRUTH[1]:g}; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = "test" if os.environ.get("GBI_EXAMPLES_QUICK") == "1" else "quick"
    ap.add_argument("--preset", choices=sorted(SETTINGS), default=default)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", default=None, help="save the CFM and classifier bundles in this directory")
    args = ap.parse_args()
    main(args.preset, args.seed, args.save)
