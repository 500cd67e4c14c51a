"""Parameter and multiply-accumulate (MAC) counts of networks, measured by forward hooks."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from medistill.errors import InputError

__all__ = ["count_macs", "count_parameters"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (shared parameters counted once).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The count.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _layer_macs(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    if isinstance(module, _CONV_TS):
        kvol = math.prod(module.kernel_size)
        return inputs[0].numel() * kvol * module.out_channels // module.groups
    if isinstance(module, _CONVS):
        kvol = math.prod(module.kernel_size)
        return output.numel() * kvol * module.in_channels // module.groups
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _as_shapes(input_shapes: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    items = list(input_shapes)
    if items and all(isinstance(s, int) for s in items):
        items = [items]
    try:
        shapes = [tuple(int(n) for n in s) for s in items]
    except TypeError as err:
        raise InputError(
            "count_macs(): 'input_shapes' must be a shape or a list of shapes, "
            f"got {input_shapes!r}"
        ) from err
    if not shapes or any(not s or min(s) < 1 for s in shapes):
        raise InputError(
            f"count_macs(): 'input_shapes' must be non-empty shapes of positive sizes, "
            f"got {input_shapes!r}"
        )
    return shapes


def count_macs(
    model: nn.Module,
    input_shapes: Sequence[int] | Sequence[Sequence[int]],
    device: str | torch.device | None = "meta",
) -> int:
    """Multiply-accumulate operations of one forward pass, counted by forward hooks.

    Counted layers (everything else, e.g. activations, interpolation, warping, is free):
    convolutions, ``output elements x kernel volume x in_channels / groups``; transposed
    convolutions, ``input elements x kernel volume x out_channels / groups``; linear layers,
    ``output elements x in_features``. Biases are not counted. The count covers the whole
    batch of the given shapes.

    Args:
        model: the network; its ``forward`` takes one tensor per shape.
        input_shapes: one shape such as ``(1, 2, 128, 128, 128)``, or a list of shapes
            (e.g. fixed and moving images).
        device: ``"meta"`` (default) runs the model with its parameters and buffers replaced
            by meta tensors (``torch.func.functional_call``): only shapes are computed, so even
            a 128^3 teacher costs no time or memory, and the model is not copied. ``None``
            runs the model as it is, with zero inputs on the device of its first parameter.

    Returns:
        The number of MACs (divide by 1e9 for GMAC).

    Raises:
        InputError: on malformed shapes.
    """
    shapes = _as_shapes(input_shapes)
    if device is None:
        first = next(itertools.chain(model.parameters(), model.buffers()), None)
        dev = first.device if first is not None else torch.device("cpu")
        state = None
    else:
        dev = torch.device(device)
        named = itertools.chain(model.named_parameters(), model.named_buffers())
        state = {name: t.detach().to(dev) for name, t in named}
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += _layer_macs(module, inputs, output)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (*_CONVS, *_CONV_TS, nn.Linear))
    ]
    was_training = model.training
    try:
        model.eval()
        args = tuple(torch.zeros(s, device=dev) for s in shapes)
        with torch.no_grad():
            if state is None:
                model(*args)
            else:
                functional_call(model, state, args)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
