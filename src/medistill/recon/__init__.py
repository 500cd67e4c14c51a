"""MRI reconstruction and restoration by knowledge distillation (KD-MRI).

k-space tools (:mod:`~medistill.recon.kspace`, :mod:`~medistill.recon.masks`), DC-CNN and VDSR
teachers and students that expose their attention features (:mod:`~medistill.recon.dccnn`,
:mod:`~medistill.recon.vdsr`), the distillation losses (:mod:`~medistill.recon.distill`), slices
for training (:mod:`~medistill.recon.data`), training with the shared loop
(:mod:`~medistill.recon.training`), inference and evaluation (:mod:`~medistill.recon.inference`)
and the demo (:mod:`~medistill.recon.demo`).
"""

from medistill.recon.config import ReconConfig, presets
from medistill.recon.data import SliceSet, embedded_set, read_fastmri, read_slice_set
from medistill.recon.dccnn import DCCNN, ConvBlock, NetOutput, data_consistency
from medistill.recon.distill import attention_loss, attention_map, imitation_loss
from medistill.recon.inference import (
    evaluate,
    latency_ms,
    load_kspace,
    reconstruct_image,
    reconstruct_kspace,
    zero_filled,
)
from medistill.recon.kspace import (
    LAYOUTS,
    Layout,
    change_layout,
    fft2,
    ifft2,
    mask_layout,
    rss,
    simulate,
    sr_degrade,
    sr_mask,
)
from medistill.recon.masks import (
    MASK_KINDS,
    acceleration_of,
    check_mask,
    load_mask,
    make_mask,
    save_mask,
)
from medistill.recon.model import ROLES, ReconModel, build_model, load_model
from medistill.recon.training import DISTILL_KINDS, ReconTask, train
from medistill.recon.vdsr import VDSR

__all__ = [
    "ConvBlock",
    "DCCNN",
    "DISTILL_KINDS",
    "LAYOUTS",
    "Layout",
    "MASK_KINDS",
    "NetOutput",
    "ROLES",
    "ReconConfig",
    "ReconModel",
    "ReconTask",
    "SliceSet",
    "VDSR",
    "acceleration_of",
    "attention_loss",
    "attention_map",
    "build_model",
    "change_layout",
    "check_mask",
    "data_consistency",
    "embedded_set",
    "evaluate",
    "fft2",
    "ifft2",
    "imitation_loss",
    "latency_ms",
    "paired_latency",
    "load_kspace",
    "load_mask",
    "load_model",
    "make_mask",
    "mask_layout",
    "presets",
    "read_fastmri",
    "read_slice_set",
    "reconstruct_image",
    "reconstruct_kspace",
    "rss",
    "save_mask",
    "simulate",
    "sr_degrade",
    "sr_mask",
    "train",
    "zero_filled",
]
