"""Registration networks (2-D and 3-D) of the LDR + ALDK distillation, and model profiling.

Teacher (RCN): :class:`AffineStem` + :class:`VTN` cascades (:func:`build_teacher`). Student (LDR):
:class:`SmallAffineStem` + :class:`LDRStudent` or :class:`LDRStudentFast` cascades
(:func:`build_student`). :class:`Cascade` composes the stages; :class:`FieldCritic` is the ALDK
discriminator on displacement fields; :class:`VoxelMorph` is a baseline. Every network maps
``(fixed, moving)`` images ``(B, C, *S)`` to a displacement ``(B, ndim, *S)`` in voxels with the
backward convention of :mod:`medistill.spatial` (``warp(moving, u)`` aligns with ``fixed``).
"""

from medistill.nets.affine import (
    AffineStem,
    SmallAffineStem,
    affine_det_loss,
    affine_ortho_loss,
)
from medistill.nets.cascade import (
    DOWNSAMPLES,
    REGISTRATION_ROLES,
    STUDENT_VARIANTS,
    Cascade,
    CascadeOutput,
    build_registration_network,
    build_student,
    build_teacher,
)
from medistill.nets.complexity import count_macs, count_parameters
from medistill.nets.critic import FieldCritic
from medistill.nets.ldr import LDRStudent, LDRStudentFast
from medistill.nets.voxelmorph import VoxelMorph
from medistill.nets.vtn import VTN, VTNEncoder

__all__ = [
    "DOWNSAMPLES",
    "REGISTRATION_ROLES",
    "STUDENT_VARIANTS",
    "VTN",
    "AffineStem",
    "Cascade",
    "CascadeOutput",
    "build_registration_network",
    "FieldCritic",
    "LDRStudent",
    "LDRStudentFast",
    "SmallAffineStem",
    "VTNEncoder",
    "VoxelMorph",
    "affine_det_loss",
    "affine_ortho_loss",
    "build_student",
    "build_teacher",
    "count_macs",
    "count_parameters",
]
