"""CPU latency of registration networks, measured in one run on the same inputs and threads."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from medistill.report import cpu_threads, time_call


def time_forward(
    model: nn.Module | Callable[[Tensor, Tensor], object],
    shape: tuple[int, ...],
    *,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Median and minimum seconds of one inference forward pass on ``(1, 1, *shape)`` inputs
    (:func:`medistill.report.time_call`); ``model`` is a network or any ``(fixed, moving)``
    callable (e.g. an onnxruntime field)."""
    gen = torch.Generator().manual_seed(seed)
    fixed = torch.rand(1, 1, *shape, generator=gen)
    moving = torch.rand(1, 1, *shape, generator=gen)
    if isinstance(model, nn.Module):
        model.eval()
    with torch.inference_mode():
        latency = time_call(lambda: model(fixed, moving), repeats=repeats, warmup=warmup)
    return latency.as_dict()


def latency_table(
    models: dict[str, nn.Module],
    sizes: list[int],
    *,
    threads: int = 2,
    repeats: int = 5,
    reference: str | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """Latency of each model at each cubic size with ``threads`` CPU threads.

    Returns ``{name: {size: {"median_s", "min_s", "speedup"}}}`` where ``speedup`` is the
    reference model's median divided by this model's (reference default: the first model).
    """
    with cpu_threads(threads):
        result: dict[str, dict[int, dict[str, float]]] = {name: {} for name in models}
        for size in sizes:
            shape = (size,) * 3
            for name, model in models.items():
                result[name][size] = time_forward(model, shape, repeats=repeats)
            ref = reference or next(iter(models))
            for name in models:
                result[name][size]["speedup"] = (
                    result[ref][size]["median_s"] / result[name][size]["median_s"]
                )
    return result


def format_latency(table: dict[str, dict[int, dict[str, float]]], reference: str) -> str:
    """Text table of :func:`latency_table` with speed-ups against ``reference``."""
    sizes = sorted(next(iter(table.values())).keys())
    head = f"{'network':44s}" + "".join(f" {f'{s}^3 s':>9s} {'x faster':>9s}" for s in sizes)
    lines = [head, "-" * len(head)]
    for name, row in table.items():
        cells = "".join(f" {row[s]['median_s']:9.3f} {row[s]['speedup']:9.1f}" for s in sizes)
        lines.append(f"{name:44s}{cells}")
    lines.append(f"(median of repeated forward passes; 'x faster' = {reference} / network)")
    return "\n".join(lines)
