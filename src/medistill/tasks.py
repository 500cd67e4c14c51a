"""The task registry: for each task its roles, config class, presets, training and loading.

``medistill train ROLE`` finds the task of ``ROLE`` here (:func:`task_of_role`), loads its config
and runs it (:func:`run_task`); :func:`load` reads any task's checkpoint into one
:class:`LoadedModel`. A new task is one :class:`Task` entry, not another branch in each command.
Task modules are imported only when a task is used.

Every checkpoint carries its format ``version`` (``medistill.train.loop.CHECKPOINT_VERSION``)
and an ``io`` contract (working shape, input normalisation, output units; checkpoints written
before 2026-11-30 by recon and label transfer lack it), as MONAI bundles keep their
``network_data_format``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from medistill.errors import InputError
from medistill.typing import PathLike

__all__ = [
    "TASKS",
    "EvaluateRequest",
    "evaluate",
    "run_demo",
    "LoadedModel",
    "Task",
    "load",
    "load_task_config",
    "run_task",
    "task_of_role",
]


@dataclass
class LoadedModel:
    """A network read from a checkpoint of any task, in eval mode on the CPU.

    Attributes:
        task: ``registration``, ``recon`` or ``labeltransfer``.
        role: the trained role (``student``, ``recon-teacher``, ``ltnet`` ...).
        network: the network (``nn.Module``).
        config: the task's config dataclass the checkpoint was trained with.
        checkpoint: the checkpoint's contents (weights, meta).
        extra: the task loader's own result (e.g. recon's mask), when it has more.
    """

    task: str
    role: str
    network: nn.Module
    config: Any
    checkpoint: dict[str, Any]
    extra: Any = None

    @property
    def io(self) -> dict[str, Any]:
        """The checkpoint's I/O contract (empty for checkpoints written before it existed)."""
        return dict(self.checkpoint.get("io", {}))


@dataclass(frozen=True)
class EvaluateRequest:
    """What ``medistill evaluate`` was given for a checkpoint (``None`` / ``False``: not given).

    Each task's evaluator reads the fields it knows; :func:`evaluate` refuses a given field that
    the checkpoint's task does not take (``Task.evaluate_options``).
    """

    pairs: Path | None = None
    labels: list[int] | None = None
    affine_only: bool = False
    images: list[Path] | None = None
    acceleration: float | None = None
    images_csv: Path | None = None
    atlas: Path | None = None
    atlas_labels: Path | None = None

    def given(self) -> list[str]:
        """Names of the fields that were given."""
        return [f.name for f in fields(self) if getattr(self, f.name) not in (None, False, [])]


def option_name(field_name: str) -> str:
    """The command-line spelling of an :class:`EvaluateRequest` field (``--images-csv``)."""
    return "--" + field_name.replace("_", "-")


@dataclass(frozen=True)
class Task:
    """One task: where its pieces live (``module:attribute`` names, imported when used)."""

    name: str
    roles: tuple[str, ...]
    config_class: str
    presets: str
    train: str
    loader: str
    done: Callable[[str, dict[str, Any]], str]
    demo: str = ""
    demo_line: Callable[[dict[str, Any]], str] = lambda row: str(row.get("model"))
    evaluate: str = ""
    evaluate_options: tuple[str, ...] = ()  # EvaluateRequest fields; the required one first

    def resolve(self, name: str) -> Any:
        module, _, attr = getattr(self, name).partition(":")
        return getattr(importlib.import_module(module), attr)


def _registration_line(row: dict[str, Any]) -> str:
    fold, seconds = row.get("folding_pct"), row.get("seconds_per_pair")
    return (
        f"{row['model']:18s} Dice {row['dice_mean']:.3f}"
        + (f"  folding {fold:.3f} %" if fold is not None else "")
        + (f"  {seconds:.2f} s/pair" if seconds else "")
    )


def _recon_line(row: dict[str, Any]) -> str:
    line = f"{row['model']:28s} PSNR {row['psnr_mean']:6.2f}  SSIM {row['ssim_mean']:.4f}  "
    if "psnr_inverted_mean" in row:
        line += f"inverted contrast PSNR {row['psnr_inverted_mean']:6.2f}  "
    return line + f"{row.get('ms_per_slice', float('nan')):7.1f} ms"


def _labeltransfer_line(row: dict[str, Any]) -> str:
    line = f"{row['model']:28s} Dice {row['dice_mean']:.3f}"
    if row.get("collapsed"):
        line += f"  (G_F collapsed: field {row['fwd_length_vox']:.2f} voxels)"
    return line


def _registration_roles() -> tuple[str, ...]:
    return ("teacher", "student", "voxelmorph")


def _recon_roles() -> tuple[str, ...]:
    return ("recon-teacher", "recon-student", "sr-teacher", "sr-student")


TASKS: dict[str, Task] = {
    "registration": Task(
        name="registration",
        roles=_registration_roles(),
        config_class="medistill.registration.config:RegistrationConfig",
        presets="medistill.registration.config:presets",
        train="medistill.registration.training:train",
        loader="medistill.registration.model:load_model",
        done=lambda role, state: role,
        demo="medistill.registration.demo:run_demo",
        demo_line=_registration_line,
        evaluate="medistill.registration.evaluate:evaluate_request",
        evaluate_options=("pairs", "labels", "affine_only"),
    ),
    "recon": Task(
        name="recon",
        roles=_recon_roles(),
        config_class="medistill.recon.config:ReconConfig",
        presets="medistill.recon.config:presets",
        train="medistill.recon.training:train",
        loader="medistill.recon.model:load_model",
        done=lambda role, state: role,
        demo="medistill.recon.demo:run_demo",
        demo_line=_recon_line,
        evaluate="medistill.recon.inference:evaluate_request",
        evaluate_options=("images", "acceleration"),
    ),
    "labeltransfer": Task(
        name="labeltransfer",
        roles=("labeltransfer",),
        config_class="medistill.labeltransfer.config:LabelTransferConfig",
        presets="medistill.labeltransfer.config:presets",
        train="medistill.labeltransfer.training:train",
        loader="medistill.labeltransfer.model:load_model",
        done=lambda role, state: f"label transfer ({state.get('role')})",
        demo="medistill.labeltransfer.demo:run_demo",
        demo_line=_labeltransfer_line,
        evaluate="medistill.labeltransfer.evaluate:evaluate_request",
        evaluate_options=("images_csv", "atlas", "atlas_labels", "labels"),
    ),
}


def task_of_role(role: str) -> Task:
    """The task that trains ``role``.

    Raises:
        InputError: an unknown role (the message lists every role).
    """
    for task in TASKS.values():
        if role in task.roles:
            return task
    known = ", ".join(r for t in TASKS.values() for r in t.roles)
    raise InputError(f"train: unknown model {role!r}; expected one of {known}")


def load_task_config(task: Task, config: PathLike | None, overrides: list[str] | None) -> Any:
    """The task's config from a preset name or YAML file, with ``section.key=value`` overrides."""
    from medistill.train import load_config

    return load_config(
        task.resolve("config_class"),
        config,
        presets=task.resolve("presets")(),
        overrides=list(overrides or []),
    )


def run_task(
    task: Task, role: str, cfg: Any, out: PathLike, *, resume: bool = False
) -> dict[str, Any]:
    """Train ``role`` of ``task`` with ``cfg`` into ``out`` (resumable); returns the final state.

    Raises:
        InputError: ``resume`` without a ``last.pt`` in ``out``, or ``out`` not usable as a
            folder; both before anything is written.
    """
    from medistill.io.validate import check_output_folder

    train = task.resolve("train")
    out = check_output_folder(out)
    if resume and not (out / "last.pt").is_file():
        raise InputError(f"--resume: no checkpoint {out / 'last.pt'} to resume from")
    if task.name == "labeltransfer":
        return train(cfg, out, resume=resume)
    return train(role, cfg, out, resume=resume)


def load(path: PathLike) -> LoadedModel:
    """Any task's checkpoint as a :class:`LoadedModel` (the task is read from the file).

    Raises:
        InputError: missing, corrupt or foreign file, an unknown task, or weights that do not
            fit the network the checkpoint's config describes.
    """
    from medistill.train import load_checkpoint

    name = load_checkpoint(path).get("task")
    if name not in TASKS:
        raise InputError(f"{path}: checkpoint of unknown task {name!r}")
    result = TASKS[name].resolve("loader")(path)
    if isinstance(result, tuple):  # registration, label transfer: (network, checkpoint, config)
        network, ckpt, cfg = result
        return LoadedModel(name, str(ckpt.get("role")), network, cfg, ckpt)
    ckpt = load_checkpoint(path, task=name)  # recon: a ReconModel with the network inside
    return LoadedModel(name, result.role, result.net, result.config, ckpt, extra=result)


def evaluate(model: PathLike, request: EvaluateRequest, out: PathLike) -> dict[str, Any]:
    """Evaluate a checkpoint of any task with its task's evaluator; returns the summary.

    Raises:
        InputError: a checkpoint of an unknown task, an option its task does not take (before
            any work), or what the task's evaluator refuses.
    """
    from medistill.train import load_checkpoint

    name = load_checkpoint(model).get("task")
    task = TASKS.get(name)
    if task is None or not task.evaluate:
        raise InputError(f"{model}: evaluate does not know checkpoints of task {name!r}")
    given = request.given()
    foreign = [f for f in given if f not in task.evaluate_options]
    if foreign and task.evaluate_options[0] in given:  # else the evaluator names what is missing
        takes = ", ".join(option_name(f) for f in task.evaluate_options)
        raise InputError(
            f"evaluate: {option_name(foreign[0])} does not apply to a {name} checkpoint "
            f"({model}); it takes {takes}"
        )
    return task.resolve("evaluate")(model, request, out)


def run_demo(name: str, out: PathLike, *, config: str = "demo", overrides: list[str] | None = None,
             echo: Callable[[str], Any] = print) -> dict[str, Any]:  # fmt: skip
    """Run task ``name``'s demo into ``out`` and echo one line per model and the report's path.

    Raises:
        InputError: an unknown task.
    """
    from pathlib import Path

    if name not in TASKS or not TASKS[name].demo:
        known = ", ".join(n for n, t in TASKS.items() if t.demo)
        raise InputError(f"demo: unknown task {name!r}; available: {known}")
    task = TASKS[name]
    summary = task.resolve("demo")(Path(out), config=config, overrides=list(overrides or []))
    for row in summary["rows"]:
        echo(task.demo_line(row))
    echo(f"report: {Path(out) / 'report.html'} (total {summary['timings_s']['total']:.0f} s)")
    return summary
