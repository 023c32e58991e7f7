"""Per-layer sensitivity to pruning, and the per-layer rates it implies for a FLOPs target.

``analysis`` runs the measurements (resumable through ``store``), ``profile`` reads a saved analysis
back as accuracy costs for ``prune --sensitivity``, ``plot`` draws it.
"""

from reidcompress.prune.sensitivity.analysis import DEFAULT_RATES, analyse_sensitivity, check_rates
from reidcompress.prune.sensitivity.plot import plot_sensitivity
from reidcompress.prune.sensitivity.profile import FORMAT, METRICS, SensitivityProfile

__all__ = [
    "DEFAULT_RATES",
    "FORMAT",
    "METRICS",
    "SensitivityProfile",
    "analyse_sensitivity",
    "check_rates",
    "plot_sensitivity",
]
