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
