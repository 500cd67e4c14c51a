"""seeding.stream: one generator per (seed, *keys), reproducible and independent."""

from __future__ import annotations

import numpy as np
import torch

from medistill.seeding import stream


def _draw(gen: torch.Generator) -> torch.Tensor:
    return torch.rand(8, generator=gen)


def test_same_keys_same_stream_other_keys_other_stream():
    assert torch.equal(_draw(stream(3, "pairs", 5)), _draw(stream(3, "pairs", 5)))
    draws = [_draw(stream(s, k, i)) for s in (0, 1) for k in ("pairs", "subjects") for i in (0, 1)]
    assert len({tuple(d.tolist()) for d in draws}) == len(draws)


def test_integer_keys_match_the_embedded_subjects_formula():
    # embedded data was drawn from SeedSequence([seed, split stream, index]) before seeding.py
    state = np.random.SeedSequence([4, 1, 7]).generate_state(2)
    expected = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    assert torch.equal(_draw(stream(4, 1, 7)), _draw(expected))


def test_negative_seeds_are_accepted():
    assert torch.equal(_draw(stream(-1, 2)), _draw(stream(-1, 2)))
