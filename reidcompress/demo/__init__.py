"""``reidcompress demo``: the whole path on synthetic data, on a CPU, in minutes."""

from __future__ import annotations

from reidcompress.demo.config import DemoConfig
from reidcompress.demo.pipeline import run_demo

__all__ = ["DemoConfig", "run_demo"]
