"""Ratio models Λ(x | θ) and density models used by the zfit PDFs.

Light names are imported here; the TensorFlow-Probability flows and the Keras models (CFM generator,
classifier ensemble) load on first use (``gbi_zfit.models.BackgroundFlowEnsemble``,
``gbi_zfit.models.ClassifierEnsemble``), so importing the package stays cheap.
"""

from __future__ import annotations

from .._util import lazy_getattr
from .base import RatioModel
from .oracle import OracleRatio
from .persistence import LoadedBundle, load_bundle, read_sidecar, save_bundle, verify_bundle

_LAZY = {
    "BackgroundFlowEnsemble": "gbi_zfit.models.flows",
    "ConditionalFlow": "gbi_zfit.models.flows",
    "FlowConfig": "gbi_zfit.models.flows",
    "FlowPreprocessing": "gbi_zfit.models.flows",
    "TrainingHistory": "gbi_zfit.models.training",
    "CFMConfig": "gbi_zfit.models.cfm",
    "CFMGenerator": "gbi_zfit.models.cfm",
    "train_cfm": "gbi_zfit.models.cfm",
    "ClassifierConfig": "gbi_zfit.models.classifier",
    "ClassifierEnsemble": "gbi_zfit.models.classifier",
    "train_classifier_ensemble": "gbi_zfit.models.classifier",
    "FeatureTransform": "gbi_zfit.models.preprocessing",
    "EventDensity": "gbi_zfit.models.ranode",
    "ExactBackgroundDensity": "gbi_zfit.models.ranode",
    "ExactSignalDensity": "gbi_zfit.models.ranode",
    "FlowBackgroundDensity": "gbi_zfit.models.ranode",
    "SignalFlowEnsemble": "gbi_zfit.models.ranode",
    "default_signal_flow_config": "gbi_zfit.models.ranode",
    "train_signal_flows": "gbi_zfit.models.ranode",
}

__all__ = [
    "BackgroundFlowEnsemble",
    "CFMConfig",
    "CFMGenerator",
    "ClassifierConfig",
    "ClassifierEnsemble",
    "ConditionalFlow",
    "EventDensity",
    "ExactBackgroundDensity",
    "ExactSignalDensity",
    "FeatureTransform",
    "FlowBackgroundDensity",
    "FlowConfig",
    "FlowPreprocessing",
    "LoadedBundle",
    "OracleRatio",
    "RatioModel",
    "SignalFlowEnsemble",
    "TrainingHistory",
    "default_signal_flow_config",
    "load_bundle",
    "read_sidecar",
    "save_bundle",
    "train_cfm",
    "train_classifier_ensemble",
    "train_signal_flows",
    "verify_bundle",
]


__getattr__ = lazy_getattr(globals(), _LAZY)
