"""The teacher-flow cache stores float16 fields per pair, is reused while the teacher and the
pairs stay the same, and is rebuilt when the teacher checkpoint changes."""

from __future__ import annotations

import numpy as np
import torch

from medistill.registration.flowcache import build_flow_cache


def _pair(i):
    g = torch.Generator().manual_seed(i)
    labels = torch.randint(0, 3, (1, 8, 8, 8), generator=g)
    return {
        "fixed": torch.rand(1, 8, 8, 8, generator=g),
        "moving": torch.rand(1, 8, 8, 8, generator=g),
        "fixed_labels": labels,
        "moving_labels": labels,
    }


def test_cache_build_reuse_and_rebuild(tmp_path):
    ckpt = tmp_path / "teacher.pt"
    ckpt.write_bytes(b"teacher v1")
    calls = []

    def teacher(fixed, moving):
        calls.append(fixed.shape[0])
        return torch.cat([fixed - moving, fixed, moving], dim=1) * 3.0

    kwargs = dict(
        teacher_checkpoint=ckpt,
        run_teacher=teacher,
        pair=_pair,
        pairs=5,
        shape=(8, 8, 8),
        source_key="toy",
        has_labels=True,
        batch_size=2,
    )
    cache = build_flow_cache(tmp_path / "cache", **kwargs)
    assert len(cache) == 5 and sum(calls) == 5
    item = cache.get(3)
    expected = _pair(3)
    np.testing.assert_allclose(item["fixed"], expected["fixed"], atol=1e-3)
    np.testing.assert_allclose(item["teacher_disp"][1], 3 * expected["fixed"][0], atol=5e-3)
    assert item["teacher_disp"].dtype == torch.float32 and cache.flows.dtype == np.float16
    assert torch.equal(item["fixed_labels"], expected["fixed_labels"])
    build_flow_cache(tmp_path / "cache", **kwargs)
    assert sum(calls) == 5  # reused: the teacher did not run again
    ckpt.write_bytes(b"teacher v2")
    build_flow_cache(tmp_path / "cache", **kwargs)
    assert sum(calls) == 10  # teacher changed: rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "teacher.pt"]
