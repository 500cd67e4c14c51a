"""Helpers for tests: synthetic geometry with known answers, running the CLI under torchrun, a
stand-in step context for calling a task's ``training_step`` directly."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

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


def torchrun_cli(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """Run ``medistill ARGS`` under ``torchrun --standalone`` with ``processes`` CPU processes
    (one thread each); returns the finished process with its text output."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "medistill.cli.main", *map(str, args)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )


class RecordingContext:
    """A stand-in for the training loop's ``StepContext`` that keeps each optimiser's loss
    (``losses[name]``, not detached) instead of stepping, so that a test can call a task's
    ``training_step`` and inspect or back-propagate what it would have optimised."""

    def __init__(self, modules):
        self.modules = modules
        self.losses = {}

    def autocast(self):
        return contextlib.nullcontext()

    def optimize(self, name, loss):
        self.losses[name] = loss
        return {"grad_norm": 0.0}
