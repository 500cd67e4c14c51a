"""ONNX export of registration networks and running them with onnxruntime (optional extra
``medistill[onnx]``).

The exported graph has a fixed working shape: inputs ``fixed`` and ``moving`` ``(1, 1, *S)``
float32 (intensities in [0, 1] on the working grid, as :mod:`medistill.spatial.native` prepares
them), output ``disp`` ``(1, ndim, *S)`` in working-grid voxels (``warped(x) = moving(x +
disp(x))``). Opset 20 (3-D ``GridSample``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from medistill.errors import InputError
from medistill.typing import PathLike

__all__ = ["OPSET", "OnnxField", "export_network", "export_onnx", "require_onnxruntime"]

OPSET = 20


def require_onnxruntime():
    """The ``onnxruntime`` module, or one clear error naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as err:
        raise InputError(
            "the ONNX engine needs onnxruntime, which is not installed: "
            "pip install 'medistill[onnx]'"
        ) from err
    return onnxruntime


class _DispOnly(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, fixed: Tensor, moving: Tensor) -> Tensor:
        return self.network(fixed, moving).disp


def export_network(
    network: nn.Module, shape: tuple[int, ...], path: PathLike, *, opset: int = OPSET
) -> Path:
    """Export a registration network for inputs ``(1, 1, *shape)`` (written atomically).

    Raises:
        InputError: the export fails (one line).
    """
    from medistill.io.atomic import atomic_path

    example = (torch.rand(1, 1, *shape), torch.rand(1, 1, *shape))
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # constants traced from the fixed shape are what a fixed-shape export wants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                _DispOnly(network).eval(),
                example,
                str(tmp),
                input_names=["fixed", "moving"],
                output_names=["disp"],
                opset_version=opset,
                dynamo=False,
            )
        except Exception as err:  # noqa: BLE001 - the exporter raises many kinds
            first = " ".join(str(err).split())[:160]
            raise InputError(f"ONNX export failed ({first})") from err
    return path


def export_onnx(checkpoint: PathLike, path: PathLike, *, opset: int = OPSET) -> Path:
    """Export a registration checkpoint to ONNX at its working shape (written atomically).

    Raises:
        InputError: not a registration checkpoint, or the export fails (one line).
    """
    from medistill.registration.model import load_model

    net, _, cfg = load_model(checkpoint)
    try:
        return export_network(net, tuple(cfg.data.shape), path, opset=opset)
    except InputError as err:
        raise InputError(f"{checkpoint}: {err}") from err


class OnnxField:
    """A field function ``(fixed, moving) -> disp`` that runs an exported network with
    onnxruntime on the CPU with ``threads`` threads; ``shape`` is the graph's working shape."""

    def __init__(self, path: PathLike, *, threads: int = 2) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # noqa: BLE001 - onnxruntime's own error types
            first = " ".join(str(err).split())[:160]
            raise InputError(f"{path}: not a usable ONNX model ({first})") from err
        names = [i.name for i in self.session.get_inputs()]
        if names != ["fixed", "moving"]:
            raise InputError(f"{path}: not a medistill registration export (inputs {names})")
        dims = self.session.get_inputs()[0].shape
        if not all(isinstance(d, int) for d in dims):
            raise InputError(f"{path}: the ONNX model has no fixed working shape ({dims})")
        self.shape = tuple(int(d) for d in dims[2:])

    def __call__(self, fixed: Tensor, moving: Tensor) -> Tensor:
        feeds = {
            "fixed": np.ascontiguousarray(fixed.detach().cpu().numpy(), dtype=np.float32),
            "moving": np.ascontiguousarray(moving.detach().cpu().numpy(), dtype=np.float32),
        }
        return torch.from_numpy(self.session.run(["disp"], feeds)[0])
