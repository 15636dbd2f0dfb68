"""The ``quick`` preset end to end: CFM in the sidebands → SR background sample → classifier ensemble → fit.

On the benchmark (1M background events, signal at θ = (325, 175) — between grid points — with S/√B = 5):

1. sideband fit of p(mjj) (:func:`gbi_zfit.data.mjj.fit_sidebands`);
2. CFM (``CFMConfig.preset("quick")``) trained on the sideband events;
3. SR background sample: 3 × the predicted SR count, mjj from the p(mjj) fit, features from the CFM;
   quality check against the true SR background (C2ST AUC, target ≤ 0.55; figure with ``--plot``);
4. classifier ensemble (``ClassifierConfig.preset("quick")``) on the CFM sample vs benchmark signal;
5. fit of the SR data (fast path), κ fixed and sampled.

Prints the wall/CPU time of every stage; the goal is ≤ 10 min on 2 CPU cores.

    python benchmarks/quick_pipeline.py [--seed 1] [--plot quality.png] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("ZFIT_DISABLE_TF_WARNINGS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from gbi_zfit.data.benchmark import LHCOSim
from gbi_zfit.data.mjj import fit_sidebands
from gbi_zfit.inference import SignalFitter
from gbi_zfit.models.cfm import CFMConfig, generator_quality, train_cfm
from gbi_zfit.models.classifier import ClassifierConfig, train_classifier_ensemble

THETA = (325.0, 175.0)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Stage:
    def __init__(self, name: str, log: list):
        self.name, self.log = name, log

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc):
        wall, cpu = time.perf_counter() - self.t0, _cpu() - self.c0
        self.log.append((self.name, wall, cpu))
        print(f"[{self.name}] {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--s-over-sqrt-b", type=float, default=5.0)
    ap.add_argument("--plot", default=None, help="write the generator-quality figure here")
    ap.add_argument("--out", default=None, help="save the trained CFM and classifier bundles here")
    args = ap.parse_args()
    sim = LHCOSim()
    stages: list = []
    ss = np.random.SeedSequence(args.seed)
    s_data, s_cfm, s_gen, s_cls, s_q = ss.spawn(5)
    with Stage("data + p(mjj) sideband fit", stages):
        data = sim.make_dataset(s_over_sqrt_b=args.s_over_sqrt_b, mx=THETA[0], my=THETA[1], seed=s_data)
        sb = sim.signal_region.sidebands(data)
        sr = sim.signal_region.signal_region(data)
        mjj_fit = fit_sidebands(data.mjj, sim.signal_region)
    print(f"  SR events {len(sr)} (signal {int(sr.label.sum())}), predicted SR background {mjj_fit.n_sr:.0f}")
    with Stage("CFM training (quick)", stages):
        cfm = train_cfm(sb, CFMConfig.preset("quick"), seed=s_cfm, progress=False)
    print(f"  {cfm.history}")
    with Stage("SR background sample (3 × N_SR)", stages):
        gen = cfm.sample_sr_background(mjj_fit, factor=3.0, seed=s_gen)
    print(f"  {len(gen.mjj)} events")
    with Stage("generator quality (C2ST)", stages):
        truth = sim.sample_background_sr(60_000, seed=s_q).features("paws")
        quality = generator_quality(gen.features[:60_000], truth, seed=s_q)
    print(quality)
    if args.plot:
        from gbi_zfit.plotting.generator import plot_generator_quality

        plot_generator_quality(quality, args.plot)
    with Stage("classifier ensemble training (quick)", stages):
        cfg = ClassifierConfig.preset("quick")
        ensemble = train_classifier_ensemble(gen.features, cfg, seed=s_cls)
    for h in ensemble.metadata["histories"]:
        print(
            f"  member: {len(h['loss'])} epochs, best {h['best_epoch']}, "
            f"{np.mean(h['epoch_time']):.1f} s/epoch, {h['n_train']} examples"
        )
    x_sr = sr.features("paws")
    xs = np.concatenate([truth[:5000], sim.sample_signal(2000, *THETA, seed=3).features("paws")])
    r = np.corrcoef(ensemble.log_ratio_numpy(xs, *THETA), sim.log_ratio(xs, *THETA))[0, 1]
    print(f"  Pearson(log Λ_FS, log Λ*) at θ = {THETA}: {r:.3f}")
    for kappa in ("fixed", "sampled"):
        with Stage(f"fit (fast path, κ {kappa})", stages):
            fitter = SignalFitter(ensemble.with_kappa(kappa), x_sr)
            res = fitter.fit_multistart(n_starts=2)
        print(res)
    if args.out:
        cfm.save(os.path.join(args.out, "cfm"))
        ensemble.save(os.path.join(args.out, "classifier"))
    total_wall = sum(s[1] for s in stages)
    total_cpu = sum(s[2] for s in stages)
    print(f"\ntotal: {total_wall:.0f} s wall, {total_cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
