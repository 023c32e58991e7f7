"""What an exported graph takes as input: ``unit`` or ``normalized`` crops (``export --input``).

``unit`` (the default): RGB float in [0, 1]; the graph normalises with the model's mean and std.
``normalized``: RGB float already ImageNet-normalised, ``(x - mean) / std``, as trackers feed their
ReID networks (boxmot's ONNX backend, fast-reid's deploy code); dropping a ``unit`` graph into them
normalises twice (fast-reid #147). The choice is recorded in the ONNX metadata (``input_format``)
and the engine sidecar, and every runtime backend feeds the graph accordingly, so ``evaluate``,
``verify`` and ``bench`` always pass [0, 1] images to ``Embedder.embed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from reidcompress.errors import InputError

__all__ = ["INPUT_FORMATS", "INPUT_FORMAT_KEY", "check_input_format", "input_description", "graph_input"]

INPUT_FORMATS = ("unit", "normalized")
INPUT_FORMAT_KEY = "input_format"


def check_input_format(value: str) -> str:
    if value not in INPUT_FORMATS:
        raise InputError(f"`input_format` must be one of {', '.join(INPUT_FORMATS)}, got {value!r}")
    return value


def input_description(value: str) -> str:
    """The human-readable ``input`` metadata entry."""
    if value == "normalized":
        return "RGB float32 NCHW, ImageNet-normalised: (x - mean) / std with x in [0, 1], mean/std below"
    return "RGB float32 in [0, 1], NCHW; normalisation is inside the graph"


def graph_input(images: np.ndarray, metadata: Mapping[str, Any]) -> np.ndarray:
    """What the graph described by ``metadata`` takes for RGB ``images`` in [0, 1] (N, 3, H, W).

    Models exported before the option have no ``input_format`` entry: they take [0, 1] images.
    """
    if metadata.get(INPUT_FORMAT_KEY, "unit") != "normalized":
        return images
    mean = np.asarray(metadata["mean"], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(metadata["std"], dtype=np.float32).reshape(1, 3, 1, 1)
    return ((np.asarray(images, dtype=np.float32) - mean) / std).astype(np.float32)
