"""Real-image feature cache: ``<cache_dir>/<backbone>/<class>-<hash>.npz`` (docs/architecture.md ``evaluate``).

The hash covers the class's real images (keys, lineages and PNG bytes, so any change to the shards is a
miss) and the backbone's identity (weights digest, resize mode). Re-running ``evaluate`` after only the
generated images changed reuses every real feature. Same pattern as the ``dataset_stats.npz`` of
lucidrains/denoising-diffusion-pytorch, with features rather than statistics so that taxa below the class level
and the paired probe distance can be computed from the same file.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from taxadiffusion.core.files import atomic_path
from taxadiffusion.core.names import readable

log = logging.getLogger(__name__)



class FeatureCache:
    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0

    def path(self, backbone: str, cls: str, data_hash: str, backbone_id: str) -> Path:
        key = hashlib.sha256(f"{data_hash}|{backbone_id}".encode()).hexdigest()[:16]
        return self.dir / readable(backbone) / f"{readable(cls)}-{key}.npz"  # key: hash of the data

    def features(
        self, backbone: str, backbone_id: str, cls: str, data_hash: str, keys: Sequence[str],
        compute: Callable[[], np.ndarray],
    ) -> np.ndarray:
        """Cached features of one class's real images (rows in ``keys`` order), computed on a miss."""
        path = self.path(backbone, cls, data_hash, backbone_id)
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    cached_keys, cached = list(z["keys"]), z["features"]
            except Exception as exc:  # truncated / bit-flipped (BadZipFile, CRC, ValueError ...): recompute
                log.warning("cache: %s does not load (%s: %s); recomputing it", path, type(exc).__name__, exc)
                cached_keys, cached = None, None
            if cached_keys == list(keys):
                self.hits += 1
                log.info("cache hit: %s/%s (%d real images) %s", backbone, cls, len(keys), path)
                return cached
        self.misses += 1
        log.info("cache miss: %s/%s (%d real images), computing", backbone, cls, len(keys))
        feats = np.asarray(compute())
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # np.savez on a file object keeps the temporary name
                np.savez(f, features=feats, keys=np.asarray(list(keys), dtype=str))
        return feats
