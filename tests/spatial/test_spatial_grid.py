"""The affine sampling grid (torch affine_grid route) against explicit voxel grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize(
    ("dst", "src"), [((5, 7, 6), (9, 4, 8)), ((6, 1, 5), (3, 8, 1)), ((8, 9), (5, 11))]
)
def test_affine_sampling_grid_equals_the_explicit_voxel_grid(dst, src):
    """The affine_grid route gives the same normalised coordinates as mapping every voxel index
    by the affine and converting with voxel_to_normalized (size-1 axes and 2-D included)."""
    from medistill.spatial.grid import affine_sampling_grid, identity_grid, voxel_to_normalized

    nd = len(dst)
    rng = np.random.default_rng(nd + sum(dst))
    m = np.eye(nd + 1)
    m[:nd, :nd] = rng.normal(size=(nd, nd))
    m[:nd, nd] = rng.normal(size=nd) * 3
    idx = identity_grid(dst, dtype=torch.float64)  # (nd, *dst)
    mapped = torch.einsum("ij,j...->i...", torch.as_tensor(m[:nd, :nd]), idx)
    mapped = mapped + torch.as_tensor(m[:nd, nd]).view(nd, *[1] * nd)
    expected = voxel_to_normalized(mapped.movedim(0, -1), src)[None]
    got = affine_sampling_grid(m, dst, src, dtype=torch.float64)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=1e-9)
