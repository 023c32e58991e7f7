"""Text forms of option values, shared by the ``reidcompress`` commands and the survey tools' command lines."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reidcompress.errors import InputError

__all__ = ["parse_size", "parse_floats", "parse_ints", "parse_assignments", "name_options"]

_PARAMETER = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def parse_size(text: str) -> tuple[int, int]:
    """'256x128' -> (256, 128) as (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"size must look like HEIGHTxWIDTH (e.g. 256x128), got {text!r}") from None
    if h < 16 or w < 16:
        raise InputError(f"size must be at least 16x16, got {text!r}")
    return h, w


def parse_floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from None


def parse_ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None


def parse_assignments(items: Sequence[str] | None, what: str = "a setting") -> dict[str, Any]:
    """``["gamma=0.5", "soft_margin=true"]`` -> ``{"gamma": 0.5, "soft_margin": True}`` (JSON values, else text)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip().replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip().replace("-", "_")] = value
    return out


def name_options(message: str, options: Mapping[str, str]) -> str:
    """A library message in a command's words: each `parameter` it names becomes that command's option.

    Library errors name the function parameters at fault in backticks (``rate must be in [0, 1)`` with
    ``rate`` quoted); ``options`` maps the parameter names a command has to its flags (``rate`` -> ``--rate``).
    Names the command does not have keep their quotes.
    """
    return _PARAMETER.sub(lambda m: options.get(m.group(1), m.group(0)), message)
