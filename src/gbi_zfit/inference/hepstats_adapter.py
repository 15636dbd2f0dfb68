"""hepstats (Discovery, UpperLimit, ConfidenceInterval) on the losses of :class:`SignalFitter`.

hepstats 0.10 works with any zfit loss in principle, but three things break for our ratio PDF
(μ Λ(x | θ) + 1 − μ, a density *relative to* p_B, see :class:`~gbi_zfit.pdf.RatioPDF`):

1. **Asimov data.** :class:`hepstats.hypotests.calculators.AsymptoticCalculator` converts an
   ``UnbinnedNLL`` to a ``BinnedNLL`` (``_convert_to_binned``: ``ceil(100/√d)`` bins per axis, 41⁶ ≈ 5·10⁹
   bins for the 6-d PAWS features) and fills the Asimov histogram from ``model.to_binned``, which
   integrates the PDF over each bin as if it were a density in x. Neither is possible nor meaningful
   here. :class:`UnbinnedAsymptoticCalculator` instead builds the **unbinned Asimov data set**: the SR
   background reference sample weighted by Λ_WS(x | μ', θ) = μ'Λ + 1 − μ' at the alternative
   hypothesis, normalised to the expected count (the observed number of SR events; the PDF is not
   extended). Its loss is the same ``UnbinnedNLL`` on the weighted sample.
2. **numpy ≥ 2 float conversion.** ``UpperLimit.upperlimit`` does ``float(root)`` on the (n,)-array
   returned by ``scipy.interpolate.sproot``; with exactly one root (the usual case) numpy 2.4 raises
   ``TypeError`` ("only 0-dimensional arrays can be converted"), which hepstats catches and turns into a
   limit of ``None`` — silently, for the observed *and* each expected limit. :class:`UpperLimitNP2`
   takes the first root explicitly.
3. **Precision.** hepstats computes one-sided p-values as ``1 − Φ(√q)`` and the significance as
   ``Φ⁻¹(1 − p)``; both lose everything beyond Z ≈ 8 (p = 0, Z = inf), and oracle GBI fits easily reach
   Z = 20–40. The calculator here uses the survival function (``norm.sf``), and :class:`DiscoveryNP2`
   ``norm.isf``; where even ``sf`` underflows (Z ≳ 37) the asymptotic Z is √q0 itself.

Toys (:class:`RatioFrequentistCalculator`) work through hepstats' own sampler machinery
(``create_sampler`` / ``SamplerData.resample``, which call :meth:`RatioPDF._sample`, i.e. weighted
resampling of the reference). hepstats' ``generate_and_fit_toys`` however always runs a "profile" fit
with the POI fixed, which zfit refuses (``RuntimeError``) when nothing else floats — exactly our
fixed-θ tests — and it starts every toy fit with μ wherever the previous fit left it (for toys generated
at μ = 0 that is the limit itself, a poor Minuit start). The subclass skips the empty profile fit and
starts each toy fit inside the limits. (hepstats also caches Asimov NLLs by POI value only, not by
alternative; the unbinned calculator keys them by both.)

θ is unidentified at μ = 0. The well-defined discovery test fixes θ (``theta=(mX, mY)``): that is the
*local* significance at that mass point. With θ floating, q0 is the maximum over θ of the local q0, its
null distribution is not ½χ²₁ (Wilks does not apply to a parameter that exists only under the
alternative), and the asymptotic p-value is the local one at θ̂: it ignores the look-elsewhere effect.
The frequentist calculator with θ floating does include it (toys are fitted over θ too) but each toy fit
then has the usual multimodality in θ; trial-factor corrections (Gross–Vitells) are not implemented here.

θ is unidentified at μ = 0, and profiling it there is not only meaningless but slow (Minuit spends
minutes on the flat direction): both calculators evaluate the μ = 0 "profile" as the loss at the current
θ (:func:`profile_nll`), which is exact because Λ_WS = 1 for every θ at μ = 0.

All helpers leave the fitter as they found it (parameter values and floating flags are restored).

Examples
--------
>>> fitter = SignalFitter(OracleRatio(sim), sr_events, reference=sr_background_reference)
>>> p, z = discovery(fitter, theta=(300.0, 150.0))                  # local significance at θ
>>> z_own = profile_q0(fitter, theta=(300.0, 150.0))[1]             # the same, without hepstats
>>> limits = upper_limit(fitter, theta=(300.0, 150.0), alpha=0.05)  # CLs, observed and expected
>>> interval = confidence_interval(fitter, theta=(300.0, 150.0), alpha=0.3173)
>>> p_toys, z_toys = discovery(fitter, theta=(300.0, 150.0), calculator="frequentist", ntoys=500)
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import zfit
from hepstats.hypotests import ConfidenceInterval, Discovery, UpperLimit
from hepstats.hypotests.calculators import AsymptoticCalculator, FrequentistCalculator
from hepstats.hypotests.exceptions import POIRangeError
from hepstats.hypotests.parameters import POI, POIarray
from hepstats.hypotests.toyutils import FitFailuresWarning, ToyResult
from hepstats.utils import pll
from scipy import interpolate, optimize
from scipy.special import logsumexp
from scipy.stats import norm

from ..errors import InputError
from ..pdf.ratio import RatioPDF
from .fit import SignalFitter

__all__ = [
    "DiscoveryNP2",
    "RatioFrequentistCalculator",
    "UnbinnedAsymptoticCalculator",
    "UpperLimitNP2",
    "calibrated_reference_weights",
    "confidence_interval",
    "discovery",
    "make_calculator",
    "profile_nll",
    "profile_q0",
    "profile_upper_limit",
    "unbinned_asimov_data",
    "upper_limit",
]

CALCULATORS = ("asymptotic", "frequentist")


# --------------------------------------------------------------------------------------------------
# unbinned Asimov data
# --------------------------------------------------------------------------------------------------
def calibrated_reference_weights(log_ratio: np.ndarray) -> np.ndarray:
    """Weights v (Σv = 1) of a reference sample with Σ v Λ = 1 exactly, by a one-parameter tilt v ∝ Λ^λ.

    The ratio PDF is normalised by E_B[Λ] = 1, but on a finite reference sample the plain mean of Λ
    differs from 1 by its Monte-Carlo error, which is large because Λ is heavy-tailed (oracle at
    θ = (300, 150): std_B(Λ) ≈ 14, so the mean of 10⁵ reference events is off by 3–6 %). An Asimov set
    built from such a sample is not fitted back at its own μ' (μ̂_A − μ' = O(σ_μ)), and its
    background-only q_A(μ) gets a spurious linear term 2Nμ(1 − mean Λ). Tilting the sample,
    v_i ∝ Λ_i^λ with λ solving Σ v Λ = 1 (λ is small for a fair reference), restores μ̂_A = μ' exactly
    and keeps every weight positive (a tilt ∝ exp(λΛ) would blow up on the heavy tail).
    Measured (12k SR events, six references of 10⁵ events, q_A(μ = 0.001) whose precise value is 1.44):
    1.29–2.01 with the tilt, −0.06–2.28 without. It corrects Monte-Carlo noise only: a learned ratio
    whose mean is far from 1 is miscalibrated and should be fixed, not tilted.

    Parameters
    ----------
    log_ratio : array (n,)
        log Λ(x_i | θ) on the reference sample.
    """
    lr = np.asarray(log_ratio, dtype=np.float64)
    if lr.ndim != 1 or len(lr) < 2 or not np.isfinite(lr).all():
        raise InputError("log_ratio must be a finite 1-d array with at least two entries")

    def log_weights(lam: float) -> np.ndarray:
        a = lam * lr
        return a - logsumexp(a)

    def excess(lam: float) -> float:  # log Σ v Λ, increasing in λ (its derivative is a variance)
        return float(logsumexp(log_weights(lam) + lr))

    if np.ptp(lr) == 0.0:
        return np.full(len(lr), 1.0 / len(lr))
    lo, hi = -0.5, 0.5
    for _ in range(60):
        if excess(lo) < 0.0 < excess(hi):
            break
        lo, hi = 2 * lo, 2 * hi
    else:
        raise InputError(
            "cannot tilt the reference to E[Λ] = 1: all reference events have Λ on one side of 1 "
            "(is the reference a background sample of the same signal region?)"
        )
    lam = optimize.brentq(excess, lo, hi, xtol=1e-14, rtol=1e-12)
    return np.exp(log_weights(lam))


def unbinned_asimov_data(
    pdf: zfit.pdf.BasePDF,
    reference: np.ndarray,
    n_expected: float,
    *,
    calibrate: bool = True,
) -> zfit.Data:
    """The unbinned Asimov data set of a ratio PDF at its current parameter values.

    The expected data density is p_B(x) Λ_WS(x); the background reference sample x_i ∼ p_B represents
    it with weights w_i ∝ v_i Λ_WS(x_i), normalised to ``n_expected``, where v are the
    :func:`calibrated_reference_weights` (or uniform with ``calibrate=False``). Fitting this data set
    returns the generating parameters, and its NLL curve is the median (Asimov) one.

    Parameters
    ----------
    pdf : RatioPDF (or any zfit PDF that is a density relative to the reference's distribution)
    reference : array (n_ref, d)
        SR background events (independent of the data; make it several times larger than the data).
    n_expected : float
        Expected number of events (Σ w).
    calibrate : bool
        Tilt the reference so that its mean of Λ is exactly 1 (needs a :class:`RatioPDF`).
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref_data = zfit.Data.from_numpy(obs=pdf.space, array=ref)
    log_ws = np.asarray(pdf.log_pdf(ref_data), dtype=np.float64)
    if calibrate:
        if not isinstance(pdf, RatioPDF):
            raise InputError("calibrate=True needs a RatioPDF (to evaluate Λ); pass calibrate=False")
        params = pdf.params
        log_v = np.log(
            calibrated_reference_weights(
                pdf.ratio_model.log_ratio_numpy(ref, float(params["mx"].value()), float(params["my"].value()))
            )
        )
    else:
        log_v = np.full(len(ref), -np.log(len(ref)))
    log_w = log_v + log_ws
    weights = float(n_expected) * np.exp(log_w - logsumexp(log_w))
    return zfit.Data.from_numpy(obs=pdf.space, array=ref, weights=weights)


# --------------------------------------------------------------------------------------------------
# hepstats subclasses
# --------------------------------------------------------------------------------------------------
def _theta_only_nuisances(loss, param) -> bool:
    """True if ``param`` is the μ of every model of ``loss`` (all RatioPDFs) and only their θ floats besides."""
    models = list(loss.model)
    if not models or not all(isinstance(m, RatioPDF) and m.params["mu"] is param for m in models):
        return False
    thetas = {id(m.params[k]) for m in models for k in ("mx", "my")}
    return all(id(p) in thetas for p in loss.get_params() if p is not param)


def profile_nll(minimizer, loss, poi: POI) -> float:
    """Minimum of ``loss`` at the POI value ``poi`` over the other floating parameters (hepstats' ``pll``).

    At μ = 0 the ratio PDF is 1 whatever θ is, so when only θ floats besides μ the profile is the
    loss at the current θ: no fit. (Minuit needs minutes to "minimise" such a flat direction.) The
    mass penalty is taken at the current θ, i.e. it is 0 unless θ sits below its threshold, where the
    true profile would be lower by the penalty (q0 then errs on the small, conservative side).
    """
    if poi.value == 0.0 and _theta_only_nuisances(loss, poi.parameter):
        with poi.parameter.set_value(0.0):
            return float(loss.value())
    return float(pll(minimizer, loss, poi))


class _RatioProfileMixin:
    """``obs_nll`` through :func:`profile_nll` (θ is not profiled at μ = 0, where it is unidentified)."""

    def obs_nll(self, pois: POIarray) -> np.ndarray:
        ret = np.empty(pois.shape)
        for i, p in enumerate(pois):
            if p not in self._obs_nll:
                self._obs_nll[p] = profile_nll(self.minimizer, self.loss, p)
            ret[i] = self._obs_nll[p]
        return ret


class UnbinnedAsymptoticCalculator(_RatioProfileMixin, AsymptoticCalculator):
    """hepstats' asymptotic calculator with an unbinned, weighted Asimov data set (no binning).

    Parameters
    ----------
    input : zfit loss or zfit FitResult
        As for :class:`hepstats.hypotests.calculators.AsymptoticCalculator`; one model (a
        :class:`RatioPDF`), one data set.
    minimizer : zfit minimizer
    reference : array (n_ref, d), optional
        SR background sample for the Asimov data set (default: the PDF's own ``reference``).
    calibrate : bool
        See :func:`unbinned_asimov_data`.
    """

    def __init__(self, input, minimizer, *, reference: np.ndarray | None = None, calibrate: bool = True):
        super().__init__(input, minimizer)
        if len(self.model) != 1:
            raise InputError("UnbinnedAsymptoticCalculator supports losses with one model and one data set")
        pdf = self.model[0]
        if reference is None:
            reference = getattr(pdf, "reference", None)
        if reference is None:
            raise InputError(
                "the unbinned Asimov data set needs a background reference sample: give the fitter "
                "reference=... or pass reference= here"
            )
        self._reference = np.asarray(reference, dtype=np.float64)
        self._calibrate = calibrate
        data = self.data[0]
        self._n_expected = float(np.sum(data.weights)) if data.has_weights else float(data.nevents)

    def asimov_dataset(self, poi: POI, ntrials_fit: int | None = None):
        """Weighted reference sample at the alternative hypothesis ``poi`` (nuisances profiled on data)."""
        if poi in self._asimov_dataset:
            return self._asimov_dataset[poi]
        ntrials_fit = 5 if ntrials_fit is None else ntrials_fit
        param = poi.parameter
        pdf = self.model[0]
        self.set_params_to_bestfit()
        was_floating = param.floating
        param.floating = False
        try:
            with param.set_value(poi.value):
                if any(p.floating for p in self.loss.get_params()):  # profile the nuisances at μ'
                    for _ in range(ntrials_fit):
                        if self.minimizer.minimize(loss=self.loss).valid:
                            break
                    else:
                        warnings.warn(
                            f"no valid profile fit at the alternative hypothesis {poi}", stacklevel=2
                        )
                data = unbinned_asimov_data(pdf, self._reference, self._n_expected, calibrate=self._calibrate)
        finally:
            param.floating = was_floating
        self._asimov_dataset[poi] = [data]
        return self._asimov_dataset[poi]

    def asimov_nll(self, pois: POIarray, poialt: POI) -> np.ndarray:
        """Profile NLL of the Asimov set of ``poialt`` at ``pois`` (cached per (alternative, POI) pair,
        where hepstats keys on the POI only)."""
        self.check_pois(pois)
        self.check_pois(poialt)
        ret = np.empty(pois.shape)
        for i, p in enumerate(pois):
            key = (poialt, p)
            if key not in self._asimov_nll:
                self._asimov_nll[key] = profile_nll(self.minimizer, self.asimov_loss(poialt), p)
            ret[i] = self._asimov_nll[key]
        return ret

    def asimov_loss(self, poi: POI):
        """The loss of this calculator (same type, model and constraints) on the unbinned Asimov data."""
        if poi not in self._asimov_loss:
            self._asimov_loss[poi] = self.lossbuilder(self.model, self.asimov_dataset(poi), oldloss=self.loss)
        return self._asimov_loss[poi]

    # the asymptotic formulae of hepstats with the survival function (exact at large q)
    def pnull(self, qobs, qalt=None, onesided=True, onesideddiscovery=False, qtilde=False, nsigma=0):
        sqrtqobs = np.sqrt(qobs)
        pnull = norm.sf(sqrtqobs - nsigma)
        if not (onesided or onesideddiscovery):
            pnull = 2.0 * pnull
        if qalt is not None and qtilde:
            with np.errstate(divide="ignore", invalid="ignore"):
                sqrtqalt = np.sqrt(qalt)
                pnull_2 = norm.sf((qobs + qalt) / (2.0 * sqrtqalt) - nsigma)
            if not (onesided or onesideddiscovery):
                pnull_2 = pnull_2 + norm.sf(sqrtqobs - nsigma)
            pnull = np.where((qobs > qalt) & (qalt > 0), pnull_2, pnull)
        return pnull

    def palt(self, qobs, qalt, onesided=True, onesideddiscovery=False, qtilde=False):
        sqrtqobs, sqrtqalt = np.sqrt(qobs), np.sqrt(qalt)
        if onesided or onesideddiscovery:
            palt = norm.sf(sqrtqobs - sqrtqalt)
        else:
            palt = norm.sf(sqrtqobs + sqrtqalt) + norm.sf(sqrtqobs - sqrtqalt)
        if qtilde:
            with np.errstate(divide="ignore", invalid="ignore"):
                palt_2 = norm.sf((qobs - qalt) / (2.0 * sqrtqalt))
            if not (onesided or onesideddiscovery):
                palt_2 = palt_2 + norm.sf(sqrtqobs + sqrtqalt)
            palt = np.where(qobs > qalt, palt_2, palt)
        return palt


class RatioFrequentistCalculator(_RatioProfileMixin, FrequentistCalculator):
    """hepstats' frequentist calculator; toy generation/fitting that also works with only the POI floating.

    Toys are drawn with hepstats' default sampler (``model.create_sampler`` + ``resample``), which for a
    :class:`RatioPDF` is weighted resampling of its reference sample. Differences to hepstats'
    ``generate_and_fit_toys``: no profile fit when no nuisance parameter floats (zfit raises on it),
    every toy fit starts at the generating POI value nudged inside its limits, no printing or progress
    bar. Toys whose fit does not converge are replaced (and counted, with hepstats' warning above 15 %).
    """

    def generate_and_fit_toys(self, ntoys: int, poigen: POI, poieval: POIarray):
        minimizer = self.minimizer
        param = poigen.parameter
        was_floating = param.floating
        param.set_value(poigen.value)
        if any(p.floating for p in self.loss.get_params() if p is not param):
            param.floating = False
            try:  # generate at the profile point, as hepstats does
                minimizer.minimize(loss=self.loss)
            finally:
                param.floating = was_floating
        toys_loss = self.toys_loss(poigen.name)
        samplers = toys_loss.data
        start = _inside_limits(param, poigen.value)
        try:  # add to an earlier result for this POI: evaluate at all of its POI values
            toysresult = self.get_toyresult(poigen, poieval)
        except KeyError:
            toysresult = ToyResult(poigen, poieval)
            self.add_toyresult(toysresult)
        poieval = toysresult.poieval

        bestfit = np.empty(ntoys)
        nll_bestfit = np.empty(ntoys)
        nlls = {p: np.empty(ntoys) for p in poieval}
        nfailures = 0
        max_trials = 2 * ntoys + 10
        samples = self.sample(
            sampler=samplers, ntoys=max_trials, poi=poigen, constraints=toys_loss.constraints
        )
        i = ntrials = 0
        while i < ntoys:
            if ntrials >= max_trials:
                raise RuntimeError(f"{nfailures} of {ntrials} toy fits failed at {poigen}; giving up")
            ntrials += 1
            constraint_values = next(samples)
            with _temporary_values(constraint_values):
                param.set_value(start)
                try:
                    minimum = minimizer.minimize(loss=toys_loss)
                    converged = bool(minimum.converged)
                except RuntimeError:
                    converged = False
                if not converged:
                    nfailures += 1
                    if nfailures > 0.15 * ntrials and ntrials > 10:
                        warnings.warn(
                            f"{nfailures} out of {ntrials} toy fits failed or did not converge.",
                            FitFailuresWarning,
                            stacklevel=2,
                        )
                    continue
                bestfit[i] = minimum.params[param]["value"]
                nll_bestfit[i] = profile_nll(minimizer, toys_loss, POI(param, bestfit[i]))
                for p in poieval:
                    nlls[p][i] = profile_nll(minimizer, toys_loss, p)
            i += 1
        param.floating = was_floating
        toysresult.add_entries(bestfit=bestfit, nll_bestfit=nll_bestfit, nlls=nlls)


class DiscoveryNP2(Discovery):
    """hepstats' :class:`~hepstats.hypotests.Discovery` with Z = Φ̄⁻¹(p) (``norm.isf``), exact at large Z.

    With the asymptotic calculator and p below the smallest float (Z ≳ 37), Z = √q0.
    """

    def result(self, printlevel: int = 0) -> tuple[float, float]:
        del printlevel
        pnull, _ = self.calculator.pvalue(self.poinull, onesideddiscovery=True)
        p = float(np.asarray(pnull).ravel()[0])
        z = float(norm.isf(p))
        if p == 0.0 and isinstance(self.calculator, AsymptoticCalculator):
            q0 = self.calculator.qobs(self.poinull, onesideddiscovery=True)
            z = float(np.sqrt(np.asarray(q0).ravel()[0]))
        return p, z


class UpperLimitNP2(UpperLimit):
    """hepstats' :class:`~hepstats.hypotests.UpperLimit` whose limits survive numpy ≥ 2.

    Same interpolation as hepstats (cubic spline through p − α, first root); the root array is indexed
    instead of passed to ``float`` (which numpy 2 refuses for 1-element arrays, and hepstats then
    reported ``None``). CLs = p_null / p_alt is computed without a division warning when toys give
    p_alt = 0 (CLs is then inf or nan for that point, as in hepstats).
    """

    def pvalues(self, CLs: bool = True) -> dict[str, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            return super().pvalues(CLs)

    def upperlimit(
        self, alpha: float = 0.05, CLs: bool = True, printlevel: int = 0
    ) -> dict[str, float | None]:
        del printlevel
        poinull = self.poinull
        bestfit = self.calculator.bestfit.params[poinull.parameter]["value"]
        above = poinull.values >= bestfit
        observed_key = "cls" if CLs else "clsb"
        all_pvalues = self.pvalues(CLs)
        limits: dict[str, float | None] = {}
        for key in [observed_key, "expected", "expected_p1", "expected_m1", "expected_p2", "expected_m2"]:
            pvalues = np.asarray(all_pvalues[key], dtype=np.float64)
            values = poinull.values
            name = key
            if key == observed_key:
                name = "observed"
                pvalues, values = pvalues[above], values[above]
            if len(values) < 4:
                raise POIRangeError(
                    f"only {len(values)} scan points above the best fit for the {name} limit; "
                    "scan more values of the POI"
                )
            if min(pvalues) > alpha:
                if name in ("expected", "observed"):
                    raise POIRangeError(
                        f"the minimum of the scanned p-values is {min(pvalues)}, above alpha = {alpha}; "
                        "increase the maximum POI value"
                    )
                limits[name] = None
                continue
            roots = np.atleast_1d(interpolate.sproot(interpolate.splrep(values, pvalues - alpha, s=0)))
            limits[name] = float(roots[0]) if roots.size else None
        return limits


def make_calculator(
    loss_or_result,
    minimizer,
    *,
    calculator: str = "asymptotic",
    ntoys: int = 100,
    ntoysalt: int | None = None,
    reference: np.ndarray | None = None,
    calibrate: bool = True,
):
    """An :class:`UnbinnedAsymptoticCalculator` or a :class:`RatioFrequentistCalculator`.

    ``ntoys`` toys per null-hypothesis point and ``ntoysalt`` (default ``ntoys``) for the alternative.
    """
    if calculator == "asymptotic":
        return UnbinnedAsymptoticCalculator(
            loss_or_result, minimizer, reference=reference, calibrate=calibrate
        )
    if calculator == "frequentist":
        if int(ntoys) < 1:
            raise InputError(f"ntoys must be ≥ 1, got {ntoys}")
        return RatioFrequentistCalculator(
            loss_or_result, minimizer, ntoysnull=int(ntoys), ntoysalt=int(ntoysalt or ntoys)
        )
    raise InputError(f"calculator must be one of {CALCULATORS}, got {calculator!r}")


# --------------------------------------------------------------------------------------------------
# state handling
# --------------------------------------------------------------------------------------------------
def _inside_limits(param, value: float) -> float:
    """``value`` moved at least ten step sizes inside the parameter's limits (Minuit stalls on a limit)."""
    lo, hi = float(param.lower), float(param.upper)
    step = float(param.stepsize) if param.stepsize is not None else 1e-3 * (hi - lo)
    margin = min(10 * step, 0.01 * (hi - lo))
    return float(np.clip(value, lo + margin, hi - margin))


@contextlib.contextmanager
def _temporary_values(values: dict) -> Iterator[None]:
    old = {p: float(p.value()) for p in values}
    for p, v in values.items():
        p.set_value(v)
    try:
        yield
    finally:
        for p, v in old.items():
            p.set_value(v)


@contextlib.contextmanager
def _hypotest_state(
    fitter: SignalFitter, theta: Sequence[float] | None, *, fix_theta: bool, minimizer=None
) -> Iterator[None]:
    """Fix (or free) θ, float μ; restore values, floating flags and the minimizer's verbosity on exit."""
    params = fitter.params
    saved = {n: (float(p.value()), bool(p.floating)) for n, p in params.items()}
    minimizers = {id(m): (m, m.verbosity) for m in (fitter.minimizer, minimizer) if m is not None}
    try:
        if theta is not None:
            if len(theta) != 2:
                raise InputError(f"theta must be (mX, mY), got {theta!r}")
            fitter.set_values({"mx": float(theta[0]), "my": float(theta[1])})
        if float(fitter.mu.lower) > 0.0:
            raise InputError(f"μ = 0 must be inside the μ limits, got lower limit {float(fitter.mu.lower)}")
        fitter.mx.floating = fitter.my.floating = not fix_theta
        fitter.mu.floating = True
        fitter.mu.set_value(_inside_limits(fitter.mu, float(fitter.mu.value())))
        yield
    finally:
        for m, verbosity in minimizers.values():
            m.verbosity = verbosity
        for n, (v, fl) in saved.items():
            params[n].set_value(v)
            params[n].floating = fl


def _best_fit(fitter: SignalFitter, minimizer=None):
    """zfit FitResult of the floating parameters from their current values (input for hepstats)."""
    return (minimizer or fitter.minimizer).minimize(fitter.loss)


def _check_options(calculator: str, ntoys: int, alpha: float | None = None, two_sided: bool = False) -> None:
    if calculator not in CALCULATORS:
        raise InputError(f"calculator must be one of {CALCULATORS}, got {calculator!r}")
    if calculator == "frequentist" and int(ntoys) < 1:
        raise InputError(f"ntoys must be ≥ 1, got {ntoys}")
    if alpha is not None and not 0.0 < alpha < (1.0 if two_sided else 0.5):
        raise InputError(f"alpha must be in (0, {1.0 if two_sided else 0.5}), got {alpha}")


# --------------------------------------------------------------------------------------------------
# our own (hepstats-free) numbers at fixed θ
# --------------------------------------------------------------------------------------------------
def _nll_at(fitter: SignalFitter, mu: float) -> float:
    fitter.mu.set_value(float(mu))
    return float(fitter.loss.value())


def _fixed_theta_minimum(fitter: SignalFitter) -> tuple[float, float]:
    """(μ̂, NLL(μ̂)) of a fit with only μ floating (Minuit, then a check of the μ = 0 limit)."""
    fitter.mu.set_value(_inside_limits(fitter.mu, float(fitter.mu.value())))
    result = fitter.minimizer.minimize(fitter.loss, params=[fitter.mu])
    mu_hat, nll_hat = float(result.params[fitter.mu]["value"]), float(result.fmin)
    lo = float(fitter.mu.lower)
    nll_lo = _nll_at(fitter, lo)  # Minuit stops short of a limit; the boundary may be lower
    if nll_lo < nll_hat:
        mu_hat, nll_hat = lo, nll_lo
    fitter.mu.set_value(mu_hat)
    return mu_hat, nll_hat


def _q_root(fitter: SignalFitter, mu_hat: float, nll_hat: float, level: float, *, upwards: bool) -> float:
    """μ on the ``upwards`` (or downwards) side of μ̂ where 2 (NLL(μ) − NLL(μ̂)) = level (or the limit)."""
    edge = float(fitter.mu.upper) if upwards else float(fitter.mu.lower)

    def f(mu):
        return 2.0 * (_nll_at(fitter, mu) - nll_hat) - level

    if f(edge) <= 0.0:
        return edge
    if mu_hat == edge:
        return edge
    a, b = sorted((mu_hat, edge))
    return float(optimize.brentq(f, a, b, xtol=1e-12, rtol=1e-10))


def profile_q0(fitter: SignalFitter, *, theta: Sequence[float] | None = None) -> tuple[float, float]:
    """Our own discovery statistic at fixed θ: q0 = 2 (NLL(μ = 0) − NLL(μ̂)), Z = √q0 (0 if μ̂ ≤ 0).

    NLL(μ = 0) of the ratio PDF is exactly 0 (Λ_WS = 1) plus the mass penalty, which is constant at
    fixed θ. ``theta`` defaults to the fitter's current (mX, mY).
    """
    with _hypotest_state(fitter, theta, fix_theta=True):
        mu_hat, nll_hat = _fixed_theta_minimum(fitter)
        q0 = max(0.0, 2.0 * (_nll_at(fitter, 0.0) - nll_hat)) if mu_hat > 0 else 0.0
    return q0, math.sqrt(q0)


def _asimov_q_background(fitter: SignalFitter, reference: np.ndarray, calibrate: bool):
    """q_A(μ) = 2 (NLL_A(μ) − NLL_A(0)) on the background-only unbinned Asimov set, in numpy."""
    mx, my = float(fitter.mx.value()), float(fitter.my.value())
    lr = fitter.ratio_model.log_ratio_numpy(reference, mx, my)
    v = calibrated_reference_weights(lr) if calibrate else np.full(len(lr), 1.0 / len(lr))
    n = float(fitter.data.nevents)
    lam_m1 = np.expm1(np.minimum(lr, 600.0))

    def q_a(mu: float) -> float:
        return -2.0 * n * float(np.sum(v * np.log1p(mu * lam_m1)))

    return q_a


def profile_upper_limit(
    fitter: SignalFitter,
    *,
    alpha: float = 0.05,
    theta: Sequence[float] | None = None,
    cls: bool = False,
    reference: np.ndarray | None = None,
    calibrate: bool = True,
) -> float:
    """Our own asymptotic one-sided upper limit on μ at fixed θ from the profile of q_μ.

    ``cls=False``: the CLs+b limit, q_μ = 2 (NLL(μ) − NLL(μ̂)) = Φ⁻¹(1 − α)² above μ̂ (q_μ = 0 below;
    the likelihood is scanned directly, no hepstats). ``cls=True``: the asymptotic CLs limit
    Φ̄(√q_μ) / Φ(√q_μ,A − √q_μ) = α, with q_μ,A from the background-only unbinned Asimov set
    (the same construction as :func:`unbinned_asimov_data`, computed here in numpy).
    """
    if not 0.0 < alpha < 0.5:
        raise InputError(f"alpha must be in (0, 0.5), got {alpha}")
    with _hypotest_state(fitter, theta, fix_theta=True):
        mu_hat, nll_hat = _fixed_theta_minimum(fitter)
        z = float(norm.isf(alpha))
        clsb_limit = _q_root(fitter, mu_hat, nll_hat, z * z, upwards=True)
        if not cls:
            return clsb_limit
        ref = reference if reference is not None else fitter.pdf.reference
        if ref is None:
            raise InputError("the CLs limit needs a background reference sample (reference=...)")
        q_a = _asimov_q_background(fitter, ref, calibrate)

        def f(mu: float) -> float:
            q = max(0.0, 2.0 * (_nll_at(fitter, mu) - nll_hat)) if mu > mu_hat else 0.0
            return float(np.log(norm.sf(np.sqrt(q))) - norm.logcdf(np.sqrt(q_a(mu)) - np.sqrt(q))) - np.log(
                alpha
            )

        hi = _q_root(fitter, mu_hat, nll_hat, (z + 4.0) ** 2, upwards=True)
        return float(optimize.brentq(f, clsb_limit, hi, xtol=1e-12, rtol=1e-10))


# --------------------------------------------------------------------------------------------------
# hepstats adapters
# --------------------------------------------------------------------------------------------------
def _default_scan(fitter: SignalFitter, kind: str, alpha: float, n: int) -> np.ndarray:
    """POI values covering the limit/interval and (for limits) the expected ±2σ bands, at fixed θ."""
    mu_hat, nll_hat = _fixed_theta_minimum(fitter)
    lo = float(fitter.mu.lower)
    if kind == "upper":
        z = float(norm.isf(alpha))
        hi = _q_root(fitter, mu_hat, nll_hat, (z + 3.0) ** 2, upwards=True)
        start = max(lo, 0.0)
    else:
        z = float(norm.isf(alpha / 2))
        level = (z + 2.0) ** 2
        hi = _q_root(fitter, mu_hat, nll_hat, level, upwards=True)
        start = _q_root(fitter, mu_hat, nll_hat, level, upwards=False)
    return np.linspace(start, hi, n)


def discovery(
    fitter: SignalFitter,
    *,
    calculator: str = "asymptotic",
    ntoys: int = 100,
    theta: Sequence[float] | None = None,
    minimizer=None,
) -> tuple[float, float]:
    """Discovery test of μ = 0 with hepstats :class:`~hepstats.hypotests.Discovery`: (p-value, Z).

    Parameters
    ----------
    fitter : SignalFitter
        Its loss is used; μ's lower limit must be ≤ 0.
    calculator : {"asymptotic", "frequentist"}
        Asymptotic formulae (Z = √q0 for μ̂ > 0), or ``ntoys`` pseudo-experiments under μ = 0 resampled
        from the PDF's reference (p = fraction of toys with q0 ≥ q0_obs, so Z = inf if there is none;
        seed them with ``zfit.settings.set_seed``).
    theta : (mX, mY), optional
        Fix θ there: the local, well-defined test. ``None`` floats θ from the fitter's current values
        (run :meth:`SignalFitter.fit_multistart` first): the asymptotic p-value is then the local one
        at θ̂ and ignores the look-elsewhere effect (see the module docstring); toys then fit θ too.
    minimizer : zfit minimizer, optional
        Default: ``fitter.minimizer``. For many small toy fits ``zfit.minimize.Minuit(gradient=True)``
        (Minuit's numerical gradient) can be faster than the TensorFlow gradient.
    """
    _check_options(calculator, ntoys)
    minimizer = minimizer or fitter.minimizer
    with _hypotest_state(fitter, theta, fix_theta=theta is not None, minimizer=minimizer):
        calc = make_calculator(_best_fit(fitter, minimizer), minimizer, calculator=calculator, ntoys=ntoys)
        return DiscoveryNP2(calc, POI(fitter.mu, 0.0)).result()


def upper_limit(
    fitter: SignalFitter,
    *,
    alpha: float = 0.05,
    calculator: str = "asymptotic",
    scan: Sequence[float] | None = None,
    theta: Sequence[float] | None = None,
    cls: bool = True,
    qtilde: bool = False,
    ntoys: int = 100,
    n_scan: int = 30,
    reference: np.ndarray | None = None,
    calibrate: bool = True,
    minimizer=None,
) -> dict[str, float | None]:
    """CLs (or CLs+b) upper limit on μ at fixed θ with hepstats :class:`~hepstats.hypotests.UpperLimit`.

    Returns hepstats' dictionary: ``observed``, ``expected`` and the bands ``expected_p1``/``_m1``/
    ``_p2``/``_m2`` (``None`` where the scan does not reach them). The alternative is μ = 0; with the
    asymptotic calculator its Asimov set is the unbinned, weighted reference sample
    (:class:`UnbinnedAsymptoticCalculator`).

    Parameters
    ----------
    alpha : float
        1 − confidence level (0.05 for 95 % CL).
    calculator : {"asymptotic", "frequentist"}
        The frequentist calculator draws ``ntoys`` toys at *every* scan point plus ``ntoys`` under
        μ = 0, so give it a short ``scan`` around the limit.
    scan : sequence of float, optional
        μ values to scan. Default: ``n_scan`` points from max(0, μ_low) to where q_μ reaches
        (Φ⁻¹(1 − α) + 3)², enough for the observed limit and the ±2σ bands.
    theta : (mX, mY), optional
        θ at which the limit is set (default: the fitter's current values); θ is held fixed.
    cls : bool
        CLs (default) or CLs+b.
    qtilde : bool
        hepstats' q̃ statistic (only differs from q when μ̂ < 0 is allowed by μ's limits).
    reference, calibrate :
        Asimov reference sample (default: the PDF's) and its tilt, see :func:`unbinned_asimov_data`.
    minimizer : zfit minimizer, optional
        Default: ``fitter.minimizer``.
    """
    _check_options(calculator, ntoys, alpha)
    minimizer = minimizer or fitter.minimizer
    with _hypotest_state(fitter, theta, fix_theta=True, minimizer=minimizer):
        values = _default_scan(fitter, "upper", alpha, n_scan) if scan is None else np.asarray(scan, float)
        calc = make_calculator(
            _best_fit(fitter, minimizer),
            minimizer,
            calculator=calculator,
            ntoys=ntoys,
            reference=reference,
            calibrate=calibrate,
        )
        test = UpperLimitNP2(calc, POIarray(fitter.mu, values), POI(fitter.mu, 0.0), qtilde=qtilde)
        return test.upperlimit(alpha=alpha, CLs=cls)


def confidence_interval(
    fitter: SignalFitter,
    *,
    alpha: float = 0.32,
    calculator: str = "asymptotic",
    scan: Sequence[float] | None = None,
    theta: Sequence[float] | None = None,
    qtilde: bool = False,
    ntoys: int = 100,
    n_scan: int = 30,
    minimizer=None,
) -> dict[str, float]:
    """Two-sided (1 − α) interval on μ at fixed θ with hepstats :class:`~hepstats.hypotests.ConfidenceInterval`.

    Returns ``{"observed": μ̂, "lower": ..., "upper": ...}``. Asymptotically this is the
    2ΔNLL = Φ⁻¹(1 − α/2)² interval (≈ MINOS for α = 0.3173; hepstats' default α = 0.32 is slightly
    narrower). Default scan: ``n_scan`` points where q_μ ≤ (Φ⁻¹(1 − α/2) + 2)²; the frequentist
    calculator needs ``ntoys`` toys per scan point. ``theta`` defaults to the fitter's current values.
    """
    _check_options(calculator, ntoys, alpha, two_sided=True)
    minimizer = minimizer or fitter.minimizer
    with _hypotest_state(fitter, theta, fix_theta=True, minimizer=minimizer):
        values = _default_scan(fitter, "interval", alpha, n_scan) if scan is None else np.asarray(scan, float)
        calc = make_calculator(_best_fit(fitter, minimizer), minimizer, calculator=calculator, ntoys=ntoys)
        bands = ConfidenceInterval(calc, POIarray(fitter.mu, values), qtilde=qtilde).interval(
            alpha=alpha, printlevel=0
        )
        return {k: float(v) for k, v in bands.items()}
