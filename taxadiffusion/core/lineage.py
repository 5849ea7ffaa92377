"""Lineages as strings and seeds: the one place a taxon's lineage becomes a key, and a key a seed.

A taxon is a lineage prefix down to a target level; levels below it are the literal ``"None"`` (:data:`NONE`),
as in the official generation loop (docs/method.md §3). :func:`lineage_key` joins the names with ``/``;
image ``i`` of a taxon has the seed :func:`image_seed` (a stable hash of (params.yaml ``seed``, key, i)), so
its pixels do not depend on batching or on which process draws it. The condition *text* of a lineage is
another matter (the model's input): :func:`taxadiffusion.models.conditioner.lineage_texts`.
"""

from __future__ import annotations

import hashlib

NONE = "None"  # name of a level below the target level (official code: "<level>: None")


SEED_MODULUS = 2**31 - 1  # sampling.sample also seeds a generator with seed + 1 (ddpm): stay below 2**31


def stable_int(*parts) -> int:
    """A process- and platform-independent integer hash (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def lineage_key(names) -> str:
    """``Class/Order/...`` down to the target level (the names that define the taxon)."""
    return "/".join(str(n) for n in names)


def image_seed(seed: int, key: str, index: int) -> int:
    """Seed of image ``index`` of the taxon ``key``: independent of batch size, process count, resume point."""
    return stable_int(int(seed), key, int(index)) % SEED_MODULUS
