"""Which process of a (``torchrun``) distributed run this is."""

from __future__ import annotations

import os

__all__ = ["is_main_process", "rank", "world_size"]


def rank() -> int:
    """This process's rank (``RANK`` set by ``torchrun``; 0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of processes (``WORLD_SIZE`` set by ``torchrun``; 1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in the process that writes shared outputs (rank 0)."""
    return rank() == 0
