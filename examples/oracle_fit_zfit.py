"""Fit the signal fraction and masses of benchmark data with the oracle ratio, in plain zfit.

This is the README's quick start: our RatioPDF in a zfit UnbinnedNLL with the low-mass penalty as a
constraint, minimised by zfit's Minuit, with HESSE and MINOS. Run: ``python examples/oracle_fit_zfit.py``
(``--n-background`` smaller for a quicker run).

≈ 1 min on 2 CPU cores with the defaults (1M background events, ≈ 118k in the SR); the tests use 250k
background events (≈ 20 s).
"""

from __future__ import annotations

import argparse

import zfit

import gbi_zfit as gz


def main(n_background: int = 1_000_000, seed: int = 1) -> zfit.result.FitResult:
    sim = gz.LHCOSim()  # exact synthetic LHCO-like benchmark
    data = sim.make_dataset(s_over_sqrt_b=2.0, mx=300, my=150, n_background=n_background, seed=seed)
    sr = sim.signal_region.signal_region(data)  # mjj in [3300, 3700) GeV

    obs = gz.feature_space("paws")  # mJ1, mJ2, τ21 and τ32 of both jets
    mu = zfit.Parameter("mu", 0.005, 0, 1)
    mx = zfit.Parameter("mx", 280, 25, 700)
    my = zfit.Parameter("my", 160, 25, 700)
    pdf = gz.RatioPDF(obs, gz.OracleRatio(sim), mu=mu, mx=mx, my=my)  # μΛ(x|θ) + 1 − μ
    loss = zfit.loss.UnbinnedNLL(pdf, gz.to_zfit_data(sr, obs), constraints=[gz.low_mass_penalty(mx, my)])
    result = zfit.minimize.Minuit(gradient="zfit").minimize(loss)
    result.hesse()
    result.errors(params=[mu])
    print(result)
    print(f"truth: mu = {sr.label.mean():.4g}, mX = 300, mY = 150")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-background", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    main(args.n_background, args.seed)
