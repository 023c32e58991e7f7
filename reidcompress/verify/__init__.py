"""Release verification: accuracy and output parity against a reference, and latency on this device."""

from __future__ import annotations

from reidcompress.verify.api import Check, ModelReport, Tolerances, VerifyResult, network_id, verify
from reidcompress.verify.latency import LatencyStats, embedder_latency, measure

__all__ = [
    "Check",
    "LatencyStats",
    "ModelReport",
    "Tolerances",
    "VerifyResult",
    "embedder_latency",
    "measure",
    "network_id",
    "verify",
]
