"""Tests of medistill.spatial.warp_labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.spatial import random_smooth_disp, warp, warp_labels

VALUES = torch.tensor([0, 3, 7, 42])


def random_labels(shape, gen, dtype=torch.int64):
    idx = torch.randint(0, len(VALUES), (1, 1, *shape), generator=gen)
    return VALUES[idx].to(dtype)


@pytest.mark.parametrize("shape", [(9, 10), (6, 7, 8)])
@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.float32])
def test_identity_field_returns_labels_exactly(shape, dtype, gen, device):
    labels = random_labels(shape, gen, dtype).to(device)
    disp = torch.zeros(1, len(shape), *shape, device=device)
    out = warp_labels(labels, disp)
    assert out.dtype == dtype and out.device.type == device.type
    assert torch.equal(out, labels)


@pytest.mark.parametrize("shape", [(9, 10), (6, 7, 8)])
@pytest.mark.parametrize("shift", [-2, 1])
def test_integer_shift_equals_rolled_labels(shape, shift, gen):
    labels = random_labels(shape, gen)
    arr = labels[0, 0].numpy()
    for axis in range(len(shape)):
        disp = torch.zeros(1, len(shape), *shape)
        disp[:, axis] = float(shift)
        out = warp_labels(labels, disp)[0, 0].numpy()
        n = shape[axis]
        inside = [slice(None)] * len(shape)
        inside[axis] = slice(max(0, -shift), min(n, n - shift))
        rolled = np.roll(arr, -shift, axis=axis)
        np.testing.assert_array_equal(out[tuple(inside)], rolled[tuple(inside)])


def test_subvoxel_shift_keeps_the_nearest_label(gen):
    # constant shift 1.3: weights 0.7 on voxel x+1 and 0.3 on x+2, so one-hot argmax == nearest
    shape = (7, 8, 9)
    labels = random_labels(shape, gen)
    disp = torch.zeros(1, 3, *shape)
    disp[:, 2] = 1.3
    out = warp_labels(labels, disp)
    nearest = warp(labels, disp, mode="nearest")
    assert torch.equal(out[..., :-2], nearest[..., :-2])
    assert torch.equal(out[..., :-2], labels[..., 1:-1])


def test_soft_output_is_a_partition_of_unity(gen):
    shape = (10, 11)
    labels = random_labels(shape, gen, torch.float64)
    disp = random_smooth_disp(shape, max_disp=2.5, generator=gen, dtype=torch.float64)
    probs, values = warp_labels(labels, disp, soft=True)
    assert probs.shape == (1, 4, *shape) and probs.dtype == torch.float64
    assert torch.equal(values, VALUES.double())
    assert torch.allclose(probs.sum(1), torch.ones(1, *shape, dtype=torch.float64))
    assert (probs >= -1e-12).all()
    # soft channel i is the linear warp of the mask of value i
    mask = (labels == 7).double()
    assert torch.allclose(probs[:, 2:3], warp(mask, disp))
    hard = warp_labels(labels, disp)
    assert torch.equal(hard, values[probs.argmax(1, keepdim=True)])


def test_many_labels_chunked_argmax_matches_soft(gen):
    # more than one chunk of 8 labels
    shape = (12, 13)
    labels = torch.randint(0, 21, (2, 1, *shape), generator=gen) * 5
    disp = random_smooth_disp(shape, batch=2, max_disp=2.0, generator=gen)
    probs, values = warp_labels(labels, disp, soft=True)
    assert values.numel() == 21
    assert torch.equal(warp_labels(labels, disp), values[probs.argmax(1, keepdim=True)])


def test_values_argument_and_errors(gen):
    labels = random_labels((6, 6), gen)
    disp = torch.zeros(1, 2, 6, 6)
    probs, values = warp_labels(labels, disp, values=[0, 3], soft=True)
    assert probs.shape == (1, 2, 6, 6) and torch.equal(values, torch.tensor([0, 3]))
    with pytest.raises(InputError, match="one channel"):
        warp_labels(labels.expand(1, 2, 6, 6), disp)
    with pytest.raises(InputError, match="integer values"):
        warp_labels(labels.float() + 0.5, disp)
    with pytest.raises(InputError, match="spatial size"):
        warp_labels(labels, torch.zeros(1, 2, 6, 5))
