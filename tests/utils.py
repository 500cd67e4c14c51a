"""Helpers for tests: synthetic geometry with known answers."""

from __future__ import annotations

import numpy as np


def oblique_affine(spacing=(2.0, 1.5, 3.0), angle=0.3, origin=(10.0, -20.0, 5.0)) -> np.ndarray:
    """A LIA-like affine with a rotation about the third world axis and anisotropic voxels."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    lia = np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ lia @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine
