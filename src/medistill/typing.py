"""Type aliases used across medistill."""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import torch

PathLike = Union[str, "os.PathLike[str]"]
ArrayLike = Union[np.ndarray, torch.Tensor]
