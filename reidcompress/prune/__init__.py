"""Structural pruning of ReID networks: criteria and strategies on torch-pruning's dependency graph."""

from reidcompress.prune.api import load_prune_data, prune_checkpoint, prune_model, prune_with_settings
from reidcompress.prune.options import PruneOptions
from reidcompress.prune.registry import MethodSpec, get_method, list_methods, register_method
from reidcompress.prune.training import PruneData

__all__ = [
    "prune_model",
    "prune_checkpoint",
    "prune_with_settings",
    "load_prune_data",
    "PruneOptions",
    "PruneData",
    "MethodSpec",
    "register_method",
    "get_method",
    "list_methods",
]
