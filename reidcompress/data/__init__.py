"""Datasets on disk, transforms, P x K loaders and the synthetic Market-1501-style generator.

``datasets`` and ``synth`` need only numpy and Pillow; ``loader``, ``sampler`` and ``transforms`` import torch.
"""

from __future__ import annotations

from reidcompress.data.datasets import ImageItem, ReIDDataset, list_datasets, load_dataset, register_dataset
from reidcompress.data.synth import list_styles, synthesize

__all__ = ["ImageItem", "ReIDDataset", "list_datasets", "load_dataset", "register_dataset", "list_styles", "synthesize"]
