"""Named random streams: one generator per ``(seed, *keys)``, independent of every other.

Data that must be the same whenever it is asked for (an embedded subject, a fixed training pair,
a synthesised evaluation subject) draws from its own stream, so it depends on its seed and its
name alone, never on what was drawn before it.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

__all__ = ["stream"]


def _entropy(key: int | str) -> int:
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8"))  # stable across runs (str hash() is salted)
    return int(key) % 2**64  # SeedSequence takes non-negative integers


def stream(seed: int, *keys: int | str) -> torch.Generator:
    """A CPU generator for the stream ``(seed, *keys)``.

    The state comes from :class:`numpy.random.SeedSequence` over the seed and the keys (text keys
    by their CRC-32), so streams that differ in any key are statistically independent, unlike
    linear seed formulas such as ``seed * a + index * b`` whose streams collide.

    Args:
        seed: the run's seed.
        keys: what the stream is for, e.g. ``("pairs", 17)`` or ``(split_stream, index)``.

    Returns:
        A new ``torch.Generator`` on the CPU.
    """
    entropy = [_entropy(seed), *(_entropy(k) for k in keys)]
    state = np.random.SeedSequence(entropy).generate_state(2)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) << 32 | int(state[1]))
