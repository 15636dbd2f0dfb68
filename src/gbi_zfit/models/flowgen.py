"""The flow generator of the SR background for GBI-PAWS: conditional normalizing flows on jet-symmetrised features.

GBI-PAWS trains its classifier on a generated SR background, so every percent the generator is off in a
signal-like corner reappears as a fake signal on the full data set (DESIGN.md §6). This generator is an
ensemble of conditional autoregressive flows p(x | mjj) (:class:`~gbi_zfit.models.flows.BackgroundFlowEnsemble`,
TFP bijectors) for the PAWS features, trained on all sideband events by maximum likelihood.

Why flows and why symmetrised: the observed jets are ordered by mass (J1 the heavier), so the density of
the PAWS features has a hard edge at mJ1 = mJ2, which smooth models blur. The generator is therefore
trained on events whose two jets are swapped at random (a fixed coin per event), i.e. on the symmetric
density p_sym(a, b) = [p(a, b) + p(b, a)] / 2 of an *unordered* pair, which has no edge. Ordering a sample
of p_sym gives exactly the ordered density p(x) = 2 p_sym(x) on mJ1 ≥ mJ2, which :meth:`FlowGenerator.log_prob`
returns (exactly: log[q(x) + q(x̃)], x̃ with the jets exchanged). Unlike the CFM (:mod:`gbi_zfit.models.cfm`) the flow has an exact density: log-likelihood
comparisons of generators, and sideband validation windows, use it.

Examples
--------
>>> from gbi_zfit.data.benchmark import LHCOSim
>>> from gbi_zfit.data.regions import DEFAULT_SR
>>> sb = DEFAULT_SR.sidebands(LHCOSim().sample_background(100_000, seed=1))
>>> gen = FlowGenerator.train_sidebands(sb, GeneratorConfig.preset("test"), seed=2)
>>> x = gen.sample([3500.0, 3600.0], seed=3)  # (2, 6) PAWS features, mJ1 ≥ mJ2
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from ..data.events import Events, get_feature_set
from ..data.regions import DEFAULT_SR, SignalRegion
from ..errors import ConfigError, InputError
from ..parallel import Executor, spawn_seeds
from .cfm import SRBackgroundSample, _order_jets, _split_input, sample_sr_background_with
from .flows import BackgroundFlowEnsemble, FlowConfig

__all__ = ["REFERENCE_TEMPERATURES", "FlowGenerator", "GeneratorConfig", "swap_jets"]

_PAWS = get_feature_set("paws")
# column permutation that exchanges the two jets of the PAWS features
_SWAP = np.array([1, 0, 3, 2, 5, 4])
#: Temperatures of the tempered flows that draw the weighted κ reference (:meth:`FlowGenerator.sample_sr_reference`):
#: half the events from the flow itself, half from a base 1.5× wider (MC error of log κ at (600, 550) GeV
#: 0.11 → 0.03 with 1M events; a third component at 1.8 gains nothing more).
REFERENCE_TEMPERATURES = (1.0, 1.5)
# events per sampling call (bounded memory for multi-million references)
_SAMPLE_CHUNK = 262_144


def swap_jets(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """PAWS features with the two jets exchanged where ``mask`` is true (a copy)."""
    x = np.array(x, dtype=np.float64, copy=True)
    x[mask] = x[mask][:, _SWAP]
    return x


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Settings of the flow generator: the flow of each member, the ensemble size, the training subset.

    Attributes
    ----------
    flow : FlowConfig
        Architecture and training of one member (:class:`~gbi_zfit.models.flows.FlowConfig`).
    n_members : int
        Flows averaged in density space (sampling draws a member per event).
    max_events : int or None
        Train on at most this many sideband events (``None``: all of them).
    """

    flow: FlowConfig = dataclasses.field(default_factory=FlowConfig)
    n_members: int = 1
    max_events: int | None = None

    def __post_init__(self):
        if isinstance(self.flow, Mapping):
            object.__setattr__(self, "flow", FlowConfig.from_dict(self.flow))
        if self.n_members < 1:
            raise ConfigError(f"n_members must be ≥ 1, got {self.n_members}")
        if self.max_events is not None and self.max_events < 100:
            raise ConfigError(f"max_events must be ≥ 100 or None, got {self.max_events}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GeneratorConfig:
        """Named settings; keyword arguments override (``epochs`` sets the flow's ``max_epochs``).

        ``"standard"`` and ``"quick"``: one MAF of 6 layers × (128, 128) on all sideband events, ≤ 16
        epochs (≈ 10 min on 2 CPU cores at 1M background); ``"paper"``: three such members, ≤ 40 epochs;
        ``"test"``: seconds.
        """
        base = {
            "flow": "maf",
            "n_layers": 6,
            "hidden_units": (128, 128),
            "batch_size": 2048,
            "learning_rate": 2e-3,
            "validation_fraction": 0.1,
            "lr_decay_patience": 2,
            "patience": 4,
        }
        presets: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
            "standard": ({**base, "max_epochs": 16}, {"n_members": 1}),
            "quick": ({**base, "max_epochs": 16}, {"n_members": 1}),
            "paper": ({**base, "max_epochs": 40, "patience": 6}, {"n_members": 3}),
            "test": (
                {**base, "n_layers": 2, "hidden_units": (16, 16), "max_epochs": 3, "patience": 2},
                {"n_members": 1, "max_events": 4000},
            ),
        }
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
        flow_kw, kw = presets[name]
        if "epochs" in overrides:
            flow_kw = {**flow_kw, "max_epochs": int(overrides.pop("epochs"))}
        flow_fields = {f.name for f in dataclasses.fields(FlowConfig)}
        flow_kw = {**flow_kw, **{k: overrides.pop(k) for k in list(overrides) if k in flow_fields}}
        return cls(flow=FlowConfig(**flow_kw), **{**kw, **overrides})

    # the CLI prints these like the CFM's
    @property
    def epochs(self) -> int:
        return self.flow.max_epochs

    def to_dict(self) -> dict[str, Any]:
        return {"flow": self.flow.to_dict(), "n_members": self.n_members, "max_events": self.max_events}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorConfig:
        return cls(
            flow=FlowConfig.from_dict(d["flow"]),
            n_members=int(d["n_members"]),
            max_events=d.get("max_events"),
        )

    def describe(self) -> str:
        f = self.flow
        return (
            f"{self.n_members} × {f.flow.upper()} {f.n_layers} layers × {list(f.hidden_units)}, "
            f"≤ {f.max_epochs} epochs"
        )


class FlowGenerator(BackgroundFlowEnsemble):
    """Generator of the PAWS features given mjj: flows trained on jet-symmetrised sideband events.

    Build it with :meth:`train_sidebands` (or :meth:`load`). Densities and samples are of the *ordered*
    features (mJ1 ≥ mJ2), as in data; the members model the symmetric density of an unordered pair.
    """

    kind = "flow_generator"
    kind_version = 1

    @classmethod
    def train_sidebands(
        cls,
        sideband: Events | tuple[np.ndarray, np.ndarray],
        config: GeneratorConfig | None = None,
        *,
        seed: int | np.random.SeedSequence | None = 0,
        signal_region: SignalRegion | None = DEFAULT_SR,
        executor: Executor | None = None,
        progress: bool = False,
        store: Any = None,
    ) -> FlowGenerator:
        """Train on sideband events (``Events`` or ``(features (n, 6), mjj (n,))``).

        Seeds: ``spawn_seeds(seed, 3)`` → (subset, jet swaps, flow training). The jets of every event are
        swapped with probability ½ (a fixed coin per event) before training.

        Raises
        ------
        InputError
            Events in the signal region, NaN/inf, too few events, events outside the feature domains.
        """
        cfg = config or GeneratorConfig()
        x, mjj = _split_input(sideband, _PAWS)
        s_subset, s_swap, s_train = spawn_seeds(seed, 3)
        if cfg.max_events is not None and len(x) > cfg.max_events:
            keep = np.sort(np.random.default_rng(s_subset).permutation(len(x))[: cfg.max_events])
            x, mjj = x[keep], mjj[keep]
        coin = np.random.default_rng(s_swap).random(len(x)) < 0.5
        t0 = time.perf_counter()
        ens = BackgroundFlowEnsemble.train(
            swap_jets(x, coin),
            mjj,
            config=cfg.flow,
            n_members=cfg.n_members,
            seed=int(s_train.generate_state(1)[0]),
            feature_set=_PAWS,
            signal_region=signal_region,
            executor=executor,
            progress=progress,
            store=store,
        )
        info = {
            **ens.info,
            "generator_config": cfg.to_dict(),
            "train_time_s": time.perf_counter() - t0,
            "jet_symmetrised": True,
        }
        return cls(
            ens.members,
            ens.preprocessing,
            ens.config,
            feature_set=_PAWS,
            mjj_range=ens.mjj_range,
            signal_region=signal_region,
            histories=ens.histories,
            seed=ens.seed,
            info=info,
        )

    # -- what the CLI and the CFM share --------------------------------------------------------------
    @property
    def history(self):
        """Training history of the first member (epochs, best epoch, losses)."""
        return self.histories[0] if self.histories else None

    @property
    def metadata(self) -> dict[str, Any]:
        """Provenance and anything else saved with the model (the ensemble's ``info``)."""
        return self.info

    @property
    def generator_config(self) -> GeneratorConfig:
        d = self.info.get("generator_config")
        return (
            GeneratorConfig.from_dict(d) if d else GeneratorConfig(flow=self.config, n_members=self.n_members)
        )

    def describe(self) -> str:
        return self.generator_config.describe()

    # -- densities of ordered features ---------------------------------------------------------------
    def log_prob(self, x: Any, mjj: Any) -> tf.Tensor:
        """log p(x | mjj) of *ordered* PAWS features: log[q(x) + q(x̃)] where mJ1 ≥ mJ2, else −inf.

        q is the members' density of an unordered pair and x̃ is x with the jets exchanged: the exact
        density of the ordered samples that :meth:`sample` returns (= log 2 + log q(x) for a symmetric q).
        """
        x = tf.convert_to_tensor(x, tf.float64)
        lp = tf.math.reduce_logsumexp(
            tf.stack([super().log_prob(x, mjj), super().log_prob(tf.gather(x, _SWAP, axis=1), mjj)]), axis=0
        )
        return tf.where(x[:, 0] >= x[:, 1], lp, tf.constant(-np.inf, tf.float64))

    def log_prob_marginal(self, x: Any, mjj_nodes: Any, log_weights: Any) -> tf.Tensor:
        """log Σ_q w_q p(x | mjj_q) of ordered features (see :meth:`log_prob`)."""
        x = tf.convert_to_tensor(x, tf.float64)
        base = super()
        lp = tf.math.reduce_logsumexp(
            tf.stack(
                [
                    base.log_prob_marginal(x, mjj_nodes, log_weights),
                    base.log_prob_marginal(tf.gather(x, _SWAP, axis=1), mjj_nodes, log_weights),
                ]
            ),
            axis=0,
        )
        return tf.where(x[:, 0] >= x[:, 1], lp, tf.constant(-np.inf, tf.float64))

    # -- sampling --------------------------------------------------------------------------------------
    def sample(self, mjj: Any, *, seed: int | np.random.SeedSequence | None = None) -> np.ndarray:  # type: ignore[override]
        """Draw ordered PAWS features, one event per entry of ``mjj`` (GeV); returns (n, 6).

        Works in chunks, so multi-million samples need bounded memory; the result depends on the seed only.
        """
        try:
            m = np.asarray(mjj, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError(f"mjj must be numbers in GeV, got {type(mjj).__name__}") from None
        if m.size == 0:
            raise InputError("mjj must be a non-empty array (one value per event)")
        if not np.all(np.isfinite(m) & (m > 0)):
            raise InputError("mjj must be finite and > 0 GeV")
        chunks = range(0, len(m), _SAMPLE_CHUNK)
        seeds = spawn_seeds(seed, len(chunks) + 1)
        base = super()
        x = np.concatenate(
            [
                base.sample(len(m[i : i + _SAMPLE_CHUNK]), m[i : i + _SAMPLE_CHUNK], s)
                for i, s in zip(chunks, seeds[:-1], strict=True)
            ]
        )
        # a flow's inverse can overflow far out in a tail: redraw those (rare) events
        for s in spawn_seeds(seeds[-1], 5):
            bad = ~np.isfinite(x).all(axis=1)
            if not bad.any():
                break
            x[bad] = base.sample(int(bad.sum()), m[bad], s)
        if not np.isfinite(x).all():
            raise InputError(
                "the generator keeps producing non-finite events; retrain it (lower learning rate)"
            )
        return _order_jets(x, _PAWS)

    def sample_sr_reference(
        self,
        mjj_fit,
        n: int,
        *,
        temperatures: tuple[float, ...] = REFERENCE_TEMPERATURES,
        seed: int | np.random.SeedSequence | None = None,
    ) -> tuple[SRBackgroundSample, np.ndarray]:
        """Weighted SR background sample for κ(θ): (sample, log weights), E_w[h] = E_gen[h].

        mjj from the sideband fit in the SR, features from tempered flows
        (:meth:`~gbi_zfit.models.flows.BackgroundFlowEnsemble.sample_tempered`): more events in the
        signal-like tails, hence a smaller
        Monte Carlo error of κ(θ) = 1 / E_gen[odds] for the same size. Events whose tempered draw
        overflows (non-finite features; rare) are dropped, so the sample can hold a few fewer than ``n``.
        """
        if not float(n).is_integer() or n < 1:
            raise InputError(f"the reference needs n ≥ 1 events, got {n!r}")
        s_mjj, s_x = spawn_seeds(seed, 2)
        mjj = mjj_fit.sample_sr(int(n), seed=s_mjj)
        chunks = range(0, len(mjj), _SAMPLE_CHUNK)
        xs, lws = [], []
        base = super()
        for i, s in zip(chunks, spawn_seeds(s_x, len(chunks)), strict=True):
            x, lw = base.sample_tempered(mjj[i : i + _SAMPLE_CHUNK], temperatures, seed=s)
            xs.append(x)
            lws.append(lw)
        x, lw = np.concatenate(xs), np.concatenate(lws)
        ok = np.isfinite(x).all(axis=1) & np.isfinite(lw)
        sample = SRBackgroundSample(mjj[ok], _order_jets(x[ok], _PAWS), _PAWS.names)
        return sample, lw[ok]

    def sample_sr_background(
        self,
        mjj_fit,
        *,
        factor: float = 3.0,
        n: int | None = None,
        seed: int | np.random.SeedSequence | None = None,
    ) -> SRBackgroundSample:
        """SR background sample: mjj from the sideband p(mjj) fit in the SR, features from the flows.

        Parameters
        ----------
        mjj_fit : MjjFitResult
            The sideband fit (:func:`~gbi_zfit.data.mjj.fit_sidebands`); its ``n_sr`` is the expected SR
            background count.
        factor : float
            Sample ``round(factor · n_sr)`` events (default 3, as in the paper) unless ``n`` is given.
        """
        return sample_sr_background_with(
            lambda mjj, s: self.sample(mjj, seed=s), mjj_fit, _PAWS.names, factor=factor, n=n, seed=seed
        )
