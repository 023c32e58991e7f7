"""The reidcompress metadata stored in an ONNX model's ``metadata_props``, and its I/O names.

Export writes it (input size, normalisation, provenance, precision); ONNX Runtime, TensorRT builds,
``verify`` and ``bench`` read it back. Keys carry ``META_PREFIX``; structured values are JSON.
"""

from __future__ import annotations

import json
import os
from typing import Any

import onnx

from reidcompress._io import require_file
from reidcompress.errors import CheckpointError

__all__ = ["INPUT", "OUTPUT", "META_PREFIX", "JSON_KEYS", "encode_metadata", "decode_metadata", "read_metadata"]

INPUT, OUTPUT = "images", "embeddings"
META_PREFIX = "reidcompress."
JSON_KEYS = frozenset({"input_size", "mean", "std", "pruning", "config"})


def encode_metadata(values: dict[str, Any]) -> dict[str, str]:
    """Prefixed string properties: strings stay as they are, everything else becomes JSON."""
    return {META_PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """The reidcompress entries of ``props`` without their prefix, JSON values decoded."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if not key.startswith(META_PREFIX):
            continue
        name = key.removeprefix(META_PREFIX)
        try:
            out[name] = json.loads(value) if name in JSON_KEYS else value
        except json.JSONDecodeError:
            out[name] = value
    return out


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The reidcompress metadata of an exported ONNX model, JSON values decoded."""
    p = require_file(path, "ONNX model")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several unrelated types
        raise CheckpointError(f"{p}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None
    return decode_metadata({m.key: m.value for m in proto.metadata_props})
