"""Optimisation registration: a per-pair instance optimiser, the CPU teacher worth distilling.

No training: a centre-of-mass start, a 12-parameter (or rigid) affine in world space on global
NCC / MSE / mutual information, then a dense displacement or a stationary velocity field
(scaling and squaring) on LNCC with a diffusion or bending penalty, multi-level, Adam; batched
over pairs, deterministic. Optional privileged soft Dice on label maps for training pairs.

- :func:`register_optimise`: images on their own grids -> :class:`Registration` (fixed grid).
- :func:`optimise`: the batched core on tensors already on one working grid.
- :class:`OptimiseConfig`: every setting; presets in ``medistill/configs/optimise``.
"""

from medistill.optimise.apply import optimiser_grid, refined_field, register_optimise, world_affine
from medistill.optimise.config import OptimiseConfig, load_optimise_config, presets, validate
from medistill.optimise.core import OptimiseResult, optimise

__all__ = [
    "OptimiseConfig",
    "OptimiseResult",
    "load_optimise_config",
    "optimise",
    "optimiser_grid",
    "refined_field",
    "presets",
    "register_optimise",
    "validate",
    "world_affine",
]
