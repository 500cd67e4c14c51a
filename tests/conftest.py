"""Shared fixtures: small synthetic images with known affines, and the optional real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medistill.io import Image
from tests.utils import oblique_affine

SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; the test is skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def blob_image() -> Image:
    """A 3-D image (20x24x16, oblique LIA affine) with a bright ellipsoid in the middle."""
    shape = (20, 24, 16)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    centre = (np.asarray(shape) - 1) / 2
    r = np.sqrt((((idx - centre) / (np.asarray(shape) / 3.0)) ** 2).sum(-1))
    data = np.clip(1.0 - r, 0, None).astype(np.float32)
    return Image(data, oblique_affine(), source="blob")
