"""Registration training from a folder of label maps never reads the held-out maps."""

from __future__ import annotations

import numpy as np

from medistill.data import split_label_maps
from medistill.io import Image, save
from medistill.registration.pairs import load_label_maps


def test_label_map_training_uses_only_the_training_split(tmp_path):
    for k in range(8):
        data = np.zeros((12, 12, 12), dtype=np.int16)
        data[3:9, 3:9, 3:9] = 2 + k  # each map's label value names the map
        save(Image(data, np.eye(4), True, f"m{k}"), tmp_path / f"map_{k:02d}.nii.gz")
    train, held = split_label_maps(tmp_path)
    assert len(train) == 3 and len(held) == 5
    maps = load_label_maps(tmp_path, (8, 8, 8))
    seen = sorted({int(v) for m in maps for v in np.unique(m.numpy()) if v})
    assert seen == [2, 3, 4]  # maps 0..2 only; the last five are held out
    # a folder of training maps only, read whole on request (and as training reads data.path)
    every = load_label_maps(tmp_path, (8, 8, 8), holdout=False)
    assert sorted({int(v) for m in every for v in np.unique(m.numpy()) if v}) == list(range(2, 10))
    from medistill.registration.config import DataConfig
    from medistill.registration.pairs import build_pair_source

    cfg = DataConfig(source="labelmaps", path=str(tmp_path), shape=(8, 8, 8), holdout=False)
    assert build_pair_source(cfg).count == 8
    assert build_pair_source(DataConfig(**{**cfg.__dict__, "holdout": True})).count == 3


def test_affine_augmentation_moves_only_the_moving_image():
    import torch

    from medistill.registration.config import DataConfig
    from medistill.registration.pairs import build_pair_source

    base = DataConfig(source="embedded", shape=(24, 24, 24), subjects=3, augment_disp=0.0)
    plain = build_pair_source(base).pair(0)
    moved_src = build_pair_source(
        DataConfig(**{**base.__dict__, "augment_affine": (10.0, 3.0, 0.05)})
    )
    moved = moved_src.pair(0)
    assert torch.equal(plain["fixed"], moved["fixed"])
    assert not torch.allclose(plain["moving"], moved["moving"])
    values = set(torch.unique(moved["moving_labels"]).tolist())
    assert values <= set(torch.unique(plain["moving_labels"]).tolist())
    assert moved_src.describe() != build_pair_source(base).describe()
    # the same index is the same pair every time (the flow cache names pairs by index)
    assert torch.equal(moved_src.pair(0)["moving"], moved["moving"])
    import pytest

    from medistill.errors import InputError

    with pytest.raises(InputError, match="augment_affine"):
        build_pair_source(DataConfig(**{**base.__dict__, "augment_affine": (-1.0, 0.0, 0.0)}))
