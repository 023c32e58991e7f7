"""reidcompress: prune, fine-tune, export and verify person re-identification networks."""

from __future__ import annotations

__version__ = "0.1.0"

from reidcompress.errors import ReidCompressError  # noqa: E402

__all__ = ["__version__", "ReidCompressError"]
