"""Output parity between two embedders on the same images: max abs difference and cosine."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from reidcompress.runtime.base import Embedder

__all__ = ["ParityReport", "check_parity", "compare_embeddings"]


@dataclass(frozen=True)
class ParityReport:
    images: int
    max_abs_diff: float
    mean_abs_diff: float
    min_cosine: float
    mean_cosine: float
    min_cosine_required: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.min_cosine_required

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        verdict = "ok" if self.passed else f"FAILED (needs >= {self.min_cosine_required})"
        return (
            f"parity on {self.images} images: max |diff| {self.max_abs_diff:.2e}, "
            f"min cosine {self.min_cosine:.7f} {verdict}"
        )


def compare_embeddings(a: np.ndarray, b: np.ndarray, min_cosine: float = 0.9999) -> ParityReport:
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"embedding shapes differ: {a64.shape} vs {b64.shape}")
    diff = np.abs(a64 - b64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    cos = (a64 * b64).sum(1) / np.maximum(norms, 1e-12)
    return ParityReport(
        images=len(a64),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        min_cosine_required=min_cosine,
    )


def embed_all(embedder: Embedder, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Embed in batches small enough for a static-batch model or an engine's batch profile."""
    return np.concatenate([embedder.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def check_parity(
    reference: Embedder, candidate: Embedder, images: np.ndarray, min_cosine: float = 0.9999, batch_size: int = 8
) -> ParityReport:
    return compare_embeddings(
        embed_all(reference, images, batch_size), embed_all(candidate, images, batch_size), min_cosine
    )
