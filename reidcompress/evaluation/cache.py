"""On-disk cache of extracted features.

An entry is keyed by the model file's content hash, how it runs (backend, device, precision, input
size, flip), and the split's file list with sizes and modification times, so ``verify`` with several
candidates extracts the reference's gallery once and re-runs are fast. Each entry stores a checksum:
a stale or corrupt entry is detected and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reidcompress._io import atomic_path, atomic_write_text, file_sha256, json_digest

__all__ = ["FeatureCache", "default_cache_dir", "items_digest"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    if env := os.environ.get("REIDCOMPRESS_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reidcompress" / "features"


def items_digest(items: Sequence[Any]) -> str:
    """A hash of image items: paths, labels, sizes and modification times (a changed file changes it)."""
    h = hashlib.sha256()
    for it in items:
        st = os.stat(it.path)
        h.update(f"{os.path.abspath(it.path)}|{it.pid}|{it.camid}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class FeatureCache:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._model_hashes: dict[tuple[str, int, int], str] = {}

    @classmethod
    def default(cls) -> FeatureCache:
        return cls(default_cache_dir())

    def _model_hash(self, path: Path) -> str:
        st = path.stat()
        k = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        if k not in self._model_hashes:
            self._model_hashes[k] = file_sha256(path)
        return self._model_hashes[k]

    def key(self, embedder: Any, items: Sequence[Any], flip: bool) -> str | None:
        """The entry key, or None for a model with no file behind it (nothing stable to key on)."""
        source = getattr(embedder, "source_path", None)
        if source is None:
            return None
        parts = {
            "model": self._model_hash(Path(source)),
            "runtime": embedder.describe(),
            "flip": flip,
            "items": items_digest(items),
        }
        return json_digest(parts, 32)

    def _load(self, key: str, n: int) -> np.ndarray | None:
        npy, meta = self.root / f"{key}.npy", self.root / f"{key}.json"
        if not (npy.exists() and meta.exists()):
            return None
        try:
            info = json.loads(meta.read_text())
            if info["sha256"] != file_sha256(npy):
                raise ValueError("checksum mismatch")
            feats = np.load(npy, allow_pickle=False)
            if feats.shape != tuple(info["shape"]) or feats.shape[0] != n:
                raise ValueError("shape mismatch")
            return feats
        # TypeError: valid JSON of the wrong shape (null, a list, "shape": null...).
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            log.warning("feature cache entry %s is unusable (%s); rebuilding it", key, e)
            return None

    def _store(self, key: str, feats: np.ndarray) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        npy = self.root / f"{key}.npy"
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, feats, allow_pickle=False)
        # The JSON is written last: an entry without it is incomplete and ignored.
        atomic_write_text(self.root / f"{key}.json", json.dumps({"sha256": file_sha256(npy), "shape": feats.shape}))

    def get_or_compute(
        self, embedder: Any, items: Sequence[Any], compute: Callable[[], np.ndarray], flip: bool = False
    ) -> np.ndarray:
        key = self.key(embedder, items, flip)
        if key is not None and (hit := self._load(key, len(items))) is not None:
            return hit
        feats = compute()
        if key is not None:
            try:
                self._store(key, feats)
            except OSError as e:  # a read-only or full cache must not fail an evaluation
                log.warning("could not write the feature cache at %s: %s", self.root, e)
        return feats
