"""Deformable registration by distillation (LDR + ALDK): configs, pair sources, training
(teacher, student, ALDK), the teacher-flow cache, applying and evaluating checkpoints, demo."""

from medistill.registration.apply import Registration, register_images
from medistill.registration.config import (
    DataConfig,
    DistillConfig,
    LossConfig,
    ModelConfig,
    RegistrationConfig,
    presets,
)
from medistill.registration.flowcache import FlowCache, build_flow_cache
from medistill.registration.model import build_model, export_model, load_model
from medistill.registration.training import RegistrationTask, train

__all__ = [
    "DataConfig",
    "DistillConfig",
    "FlowCache",
    "LossConfig",
    "ModelConfig",
    "Registration",
    "RegistrationConfig",
    "RegistrationTask",
    "build_flow_cache",
    "build_model",
    "export_model",
    "load_model",
    "presets",
    "register_images",
    "train",
]
