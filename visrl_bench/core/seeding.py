"""Randomness keyed by what it is for, not by the order things run in."""

from __future__ import annotations

import hashlib
import random


def seeded_random(*parts: object) -> random.Random:
    """A generator determined by `parts` joined with ":" (e.g. a purpose, the run's seed, a sample id), so a
    sample's random draw is the same whether a run is resumed, sharded or filtered."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
