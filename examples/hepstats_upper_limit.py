"""Upper limit on the signal fraction μ (CLs, 95 %) and discovery significance with hepstats.

What it shows
    The hepstats idiom — a calculator built from a zfit loss and minimizer, ``POI``/``POIarray``,
    ``UpperLimit(...).upperlimit()`` and ``Discovery(...).result()`` — on our ratio PDF at fixed
    θ = (mX, mY). Two classes of :mod:`gbi_zfit.inference.hepstats_adapter` replace their hepstats
    parents, for reasons explained there: ``UnbinnedAsymptoticCalculator`` (hepstats would bin the 6-d
    feature space to build the Asimov data set; ours weights an SR background reference sample instead)
    and ``UpperLimitNP2`` / ``DiscoveryNP2`` (limits that survive numpy ≥ 2, and Z beyond 8σ). The
    observed limit is cross-checked with the package's own profile-likelihood CLs limit, and the
    one-call helper :func:`gbi_zfit.inference.hepstats_adapter.upper_limit` gives the same numbers.

The data hold a small signal (S/√B = 0.5) at θ = (300, 150) GeV; the limit is set at that θ.

Run::

    python examples/hepstats_upper_limit.py [--n-background 1000000] [--seed 2]

≈ 1 min on 2 CPU cores with the defaults; the tests use 200k background events (≈ 30 s).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")

import numpy as np
import zfit
from hepstats.hypotests.parameters import POI, POIarray

import gbi_zfit as gz
from gbi_zfit.inference.hepstats_adapter import (
    DiscoveryNP2,
    UnbinnedAsymptoticCalculator,
    UpperLimitNP2,
    profile_upper_limit,
    upper_limit,
)

THETA = (300.0, 150.0)


def main(n_background: int = 1_000_000, seed: int = 2) -> dict:
    sim = gz.LHCOSim()
    data = sim.make_dataset(s_over_sqrt_b=0.5, mx=THETA[0], my=THETA[1], n_background=n_background, seed=seed)
    sr = sim.signal_region.signal_region(data)
    # SR background reference for the Asimov data set: independent of the data, several times larger
    reference = sim.sample_background_sr(4 * len(sr), seed=seed + 1000).features("paws")

    obs = gz.feature_space("paws")
    mu = zfit.Parameter("mu", 0.002, 0, 0.2)
    mx = zfit.Parameter("mx", THETA[0], 25, 700, floating=False)  # the limit is set at fixed θ
    my = zfit.Parameter("my", THETA[1], 25, 700, floating=False)
    pdf = gz.RatioPDF(obs, gz.OracleRatio(sim), mu=mu, mx=mx, my=my, reference=reference)
    loss = zfit.loss.UnbinnedNLL(pdf, gz.to_zfit_data(sr, obs))
    minimizer = zfit.minimize.Minuit(gradient="zfit")

    best = minimizer.minimize(loss)
    best.hesse()
    mu_hat, sigma = float(best.params[mu]["value"]), float(best.params[mu]["hesse"]["error"])
    print(f"μ̂ = {mu_hat:.3g} ± {sigma:.2g} (truth {sr.label.mean():.3g})")

    calculator = UnbinnedAsymptoticCalculator(best, minimizer)  # reference: the PDF's
    scan = POIarray(mu, np.linspace(0.0, mu_hat + 5 * sigma, 25))
    limits = UpperLimitNP2(calculator, scan, POI(mu, 0.0)).upperlimit(alpha=0.05, CLs=True)
    p0, z0 = DiscoveryNP2(calculator, POI(mu, 0.0)).result()

    # cross-checks: the package's own asymptotic CLs limit (no hepstats) and the one-call helper
    fitter = gz.SignalFitter(gz.OracleRatio(sim), sr, reference=reference)
    own = profile_upper_limit(fitter, theta=THETA, alpha=0.05, cls=True)
    helper = upper_limit(fitter, theta=THETA, alpha=0.05)
    print(
        f"95 % CLs upper limit on μ: observed {limits['observed']:.3g}, expected {limits['expected']:.3g} "
        f"[−1σ {limits['expected_m1']:.3g}, +1σ {limits['expected_p1']:.3g}]"
    )
    print(f"  same limit, own profile-likelihood CLs: {own:.3g}; one-call helper: {helper['observed']:.3g}")
    print(f"discovery: p0 = {p0:.3g}, Z = {z0:.2f}")
    return {"limits": limits, "own": own, "helper": helper, "mu_hat": mu_hat, "sigma": sigma, "z": z0}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    main(args.n_background, args.seed)
