"""Type aliases used across medistill."""

from __future__ import annotations

import os
from typing import TypeAlias

import numpy as np
import torch

PathLike: TypeAlias = "str | os.PathLike[str]"
ArrayLike: TypeAlias = "np.ndarray | torch.Tensor"
