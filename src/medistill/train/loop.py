"""The one training loop shared by every task: Lightning Fabric underneath for devices, precision
and DDP; ours on top for deterministic batches, atomic checkpoints, exact resume and progress.

A task implements :class:`TrainTask`: it names its modules and optimizers, makes the batch of a
given step from a seed (so a resumed run sees exactly the batches it would have seen), and runs one
step (forward, backward through ``fabric.backward``, optimizer steps), returning named losses.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from medistill.errors import InputError
from medistill.io.atomic import atomic_path
from medistill.typing import PathLike

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "medistill-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass
class LoopConfig:
    """Settings of the loop itself (the task's model and loss settings live in the task config).

    Attributes:
        steps: optimisation steps in total (a resumed run continues up to this number).
        batch_size: samples per step and process.
        lr: Adam learning rate.
        lr_decay_steps: steps at which the learning rate is halved (RCN-style step decay).
        checkpoint_every: write ``last.pt`` every this many steps (and at the end).
        log_every: append to ``log.jsonl`` every this many steps.
        seed: base seed; batch ``s`` of rank ``r`` is made from ``(seed, s, r)`` alone.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"auto"`` (bf16 autocast on CPU only where a short
            measurement shows it faster; on CUDA bf16-mixed when supported).
        channels_last: ``True``, ``False`` or ``"auto"`` (measured like precision).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        threads: CPU threads for PyTorch (0 keeps the default).
        progress: show a progress bar with the losses and it/s.
        deterministic: ask PyTorch for deterministic algorithms (CPU runs are reproducible).
        grad_clip: clip the gradient norm of each optimizer's parameters to this (0: no clipping).
            Steps whose loss or gradients are not finite are skipped in any case (and counted).
        val_every: validate every this many steps (a multiple of ``checkpoint_every``; 0: never)
            on the task's validation data (tasks that have a ``validate`` method); the best
            weights so far are kept in ``best.pt`` and exported as the run's model.
        patience: stop early after this many validations in a row without improvement
            (0: never stop early).
        init: a checkpoint whose weights start a new run (fine-tuning): every module of the
            run with a module of that name in the checkpoint takes its weights (shapes must
            match); optimisers, step and random state start fresh. Not used by ``--resume``,
            which continues from the run's own ``last.pt``.
    """

    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-4
    lr_decay_steps: tuple[int, ...] = ()
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    precision: str = "32"
    channels_last: Any = False
    device: str = "auto"
    threads: int = 0
    progress: bool = True
    deterministic: bool = True
    grad_clip: float = 0.0
    val_every: int = 0
    patience: int = 0
    init: str = ""

    def __post_init__(self) -> None:
        """Refuse values no run can use, when the config is loaded (before anything is written)."""
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"config: loop.{name} must be an integer >= 1, got {value!r}")
        # lr 0 is allowed: it freezes the weights (a run that only evaluates or re-exports)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise InputError(f"config: loop.lr must be a finite number >= 0, got {self.lr!r}")
        if not isinstance(self.threads, int) or self.threads < 0:
            raise InputError(f"config: loop.threads must be an integer >= 0, got {self.threads!r}")
        if not (isinstance(self.grad_clip, (int, float)) and self.grad_clip >= 0):
            raise InputError(f"config: loop.grad_clip must be >= 0, got {self.grad_clip!r}")
        for name in ("val_every", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"config: loop.{name} must be an integer >= 0, got {value!r}")
        if self.val_every and self.val_every % self.checkpoint_every:
            raise InputError(
                f"config: loop.val_every ({self.val_every}) must be a multiple of "
                f"loop.checkpoint_every ({self.checkpoint_every}), so that a resumed run "
                "validates at the same steps"
            )
        if self.patience and not self.val_every:
            raise InputError("config: loop.patience needs loop.val_every > 0")


def init_weights(modules: dict[str, nn.Module], path: PathLike) -> list[str]:
    """Load the weights of checkpoint ``path`` into the modules of the same name (``loop.init``).

    Returns:
        The names of the modules loaded.

    Raises:
        InputError: no such checkpoint, no module in common, or weights of other shapes.
    """
    try:
        state = load_checkpoint(path)
    except InputError as err:
        raise InputError(f"loop.init: {err}") from None
    saved = state.get("modules", {})
    names = [name for name in modules if name in saved]
    if not names:
        raise InputError(
            f"loop.init: {path} holds modules {sorted(saved)}, none of this run's {sorted(modules)}"
        )
    for name in names:
        try:
            modules[name].load_state_dict(saved[name])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[-1].strip()
            raise InputError(f"loop.init: {path}: module {name!r} differs: {first}") from None
    log.info("weights of %s from %s", ", ".join(names), path)
    return names


class TrainTask(Protocol):
    """What a task gives the loop."""

    def modules(self) -> dict[str, nn.Module]:
        """Named trainable modules (saved in checkpoints under these names)."""

    def optimizers(
        self, modules: dict[str, nn.Module], lr: float
    ) -> dict[str, torch.optim.Optimizer]:
        """Named optimizers over the (Fabric-wrapped) modules."""

    def make_batch(self, step: int, rank: int, generator: torch.Generator) -> dict[str, Any]:
        """The batch of ``step`` for process ``rank``; must depend only on these and the seed."""

    def training_step(self, batch: dict[str, Any], step: int, ctx: StepContext) -> dict[str, float]:
        """One optimisation step; returns named scalar losses for the log."""

    # Optional: ``validate(modules) -> float``, a score on held-out validation data where higher
    # is better (e.g. PSNR, Dice), computed the same on every process; used by ``val_every``.


@dataclass
class StepContext:
    """What a task's ``training_step`` may use."""

    fabric: Any
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    autocast: Callable[[], Any]
    channels_last: bool

    grad_clip: float = 0.0
    skipped: int = 0

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        self.fabric.backward(loss, **kwargs)

    def optimize(self, name: str, loss: torch.Tensor) -> dict[str, float]:
        """``zero_grad``, backward, finite check, optional clipping and step of optimizer ``name``.

        A step whose loss or gradient norm is not finite changes nothing (counted in ``skipped``).
        Returns ``{"grad_norm": ...}`` for the log.
        """
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss.detach()).all():
            self.skipped += 1
            log.warning(
                "step skipped: %s loss is not finite (%d skipped so far)", name, self.skipped
            )
            return {"grad_norm": float("nan")}
        self.backward(loss)
        params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros(())
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            self.skipped += 1
            log.warning(
                "step skipped: %s gradients are not finite (%d skipped)", name, self.skipped
            )
            return {"grad_norm": float("nan")}
        opt.step()
        return {"grad_norm": float(norm)}


def save_checkpoint(path: PathLike, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file + rename): nothing lost on failure."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def export_checkpoint(state: dict[str, Any], path: PathLike, module: str) -> None:
    """Write a slim inference checkpoint of a training ``state``: everything but the optimizer
    and RNG states, and of the modules only ``module`` (e.g. no critic or discriminator)."""
    slim = {k: v for k, v in state.items() if k not in ("optimizers", "rng")}
    slim["modules"] = {module: state["modules"][module]}
    save_checkpoint(path, slim)


@contextlib.contextmanager
def checkpoint_contents(path: PathLike, what: str = "a usable network") -> Iterator[None]:
    """Turn what goes wrong while building a network from a loaded checkpoint (missing keys,
    weights of other shapes, a config of another form) into one :class:`InputError` line:
    ``"PATH: checkpoint does not hold WHAT (first words of the error)"``."""
    try:
        yield
    except (KeyError, RuntimeError, TypeError, AttributeError) as err:
        first = " ".join(str(err).split())[:160]
        raise InputError(f"{Path(path)}: checkpoint does not hold {what} ({first})") from err


def load_checkpoint(path: PathLike, *, task: str | None = None) -> dict[str, Any]:
    """Read a medistill checkpoint (weights only, no pickled code).

    Raises:
        InputError: missing, corrupt or foreign file, or a checkpoint of another task.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        first = " ".join(str(err).split())[:160]
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({first})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a medistill checkpoint (foreign or corrupt file)")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise InputError(
            f"{path}: checkpoint version {payload['version']} is newer than this medistill"
        )
    if task is not None and payload.get("task") != task:
        raise InputError(
            f"{path}: checkpoint is for task {payload.get('task')!r}, expected {task!r}"
        )
    _check_finite_weights(payload, path)
    return payload


def _check_finite_weights(payload: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose network weights hold NaN or Inf (a diverged run)."""
    modules = payload.get("modules")
    if not isinstance(modules, dict):
        return
    for name, state in modules.items():
        if not isinstance(state, dict):
            continue
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point():
                if not bool(torch.isfinite(value).all()):
                    raise InputError(
                        f"{path}: weight {name}.{key} holds NaN or Inf (a diverged training "
                        "run?); use an earlier checkpoint"
                    )


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_fabric(cfg: LoopConfig, precision: str) -> Any:
    """A Lightning Fabric for this process: DDP under ``torchrun`` (gloo on CPU, nccl on GPU)."""
    from lightning_fabric import Fabric
    from lightning_fabric.strategies import DDPStrategy

    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available")
    accelerator = "cuda" if use_cuda else "cpu"
    world = _world_size()
    if world > 1:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        strategy = DDPStrategy(process_group_backend="nccl" if use_cuda else "gloo")
        fabric = Fabric(
            accelerator=accelerator,
            devices=local,
            strategy=strategy,
            num_nodes=max(1, world // local),
            precision=precision,
        )
    else:
        fabric = Fabric(accelerator=accelerator, devices=1, precision=precision)
    fabric.launch()
    return fabric


def _time_steps(fn: Callable[[], None], repeats: int = 3) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def to_channels_last(module: nn.Module) -> nn.Module:
    """``module``'s 4-D / 5-D parameters and buffers in the channels-last (3-D) memory format, in
    place; values unchanged. Needed with channels-last inputs: with contiguous weights oneDNN
    reorders every convolution, and a one-channel input stays on the slow path."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            if t.dim() in formats:
                t.data = t.data.to(memory_format=formats[t.dim()])  # restrides C = 1 too
    return module


def choose_cpu_speedups(
    model: nn.Module, example: tuple[torch.Tensor, ...], *, precision: str, channels_last: Any
) -> tuple[str, bool, dict[str, float]]:
    """Resolve ``"auto"`` precision / channels-last by timing forward+backward on ``example``.

    Returns the chosen precision (``"32"`` or ``"bf16-mixed"``), channels-last flag and the
    measured seconds per step of each candidate (empty when nothing was ``"auto"``).
    """
    precisions = ["32", "bf16-mixed"] if precision == "auto" else [precision]
    layouts = [False, True] if channels_last == "auto" else [bool(channels_last)]
    if len(precisions) == 1 and len(layouts) == 1:
        return precisions[0], layouts[0], {}
    timings: dict[str, float] = {}
    memory_format = torch.channels_last_3d if example[0].dim() == 5 else torch.channels_last
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for prec in precisions:
        for layout in layouts:
            inputs = tuple(
                x.contiguous(memory_format=memory_format) if layout else x for x in example
            )
            model.to(memory_format=memory_format if layout else torch.contiguous_format)

            def step(inputs: tuple[torch.Tensor, ...] = inputs, prec: str = prec) -> None:
                model.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16-mixed"):
                    out = model(*inputs)
                    out = getattr(out, "disp", out)
                out.float().square().mean().backward()

            timings[f"{prec}/{'channels_last' if layout else 'contiguous'}"] = _time_steps(step)
    model.load_state_dict(state)
    model.zero_grad(set_to_none=True)
    best = min(timings, key=timings.get)
    prec, layout = best.split("/")
    model.to(memory_format=memory_format if layout == "channels_last" else torch.contiguous_format)
    return prec, layout == "channels_last", timings


class Trainer:
    """Runs a :class:`TrainTask`: checkpoints every N steps, exact resume, log and progress bar.

    Files in ``out_dir``: ``last.pt`` (full state for ``--resume``), ``log.jsonl`` (one JSON object
    per logged step: step, losses, seconds, it/s).
    """

    def __init__(self, cfg: LoopConfig, out_dir: PathLike, *, resume: bool = False) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.fabric: Any = None
        self.state: dict[str, Any] = {}
        self.validation: dict[str, Any] = {}

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    def fit(
        self,
        task: TrainTask,
        *,
        extra_state: Callable[[], dict[str, Any]] | None = None,
        example_inputs: Callable[[], tuple[torch.Tensor, ...]] | None = None,
    ) -> dict[str, Any]:
        """Train ``task`` up to ``cfg.steps``; returns the final state dict written to ``last.pt``.

        Args:
            task: the task.
            extra_state: returns task metadata stored in every checkpoint (config, kind, ...).
            example_inputs: inputs for timing ``"auto"`` precision / channels-last on the CPU.
        """
        cfg = self.cfg
        if cfg.steps < 1:
            raise InputError(f"steps must be >= 1, got {cfg.steps}")
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        was_deterministic = torch.are_deterministic_algorithms_enabled()
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            return self._fit(task, extra_state, example_inputs)
        finally:
            torch.use_deterministic_algorithms(was_deterministic)

    def _fit(self, task, extra_state, example_inputs) -> dict[str, Any]:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        resume_state = None
        if self.resume:
            if not self.last_path.exists():
                raise InputError(f"--resume: no checkpoint {self.last_path} to resume from")
            resume_state = load_checkpoint(self.last_path)
        elif self.last_path.exists():
            raise InputError(
                f"{self.out_dir} already holds a run (last.pt); pass --resume or use another --out"
            )
        modules = task.modules()
        precision, channels_last, timings = self._decide_speedups(
            modules, example_inputs, resume_state
        )
        if channels_last:  # weights too: channels-last inputs alone make oneDNN reorder
            for module in modules.values():
                to_channels_last(module)
        fabric = make_fabric(cfg, precision)
        self.fabric = fabric
        rank = fabric.global_rank
        if resume_state is not None:
            for name, module in modules.items():
                module.load_state_dict(resume_state["modules"][name])
        elif cfg.init:
            init_weights(modules, cfg.init)
        optimizers = task.optimizers(modules, cfg.lr)
        wrapped: dict[str, nn.Module] = {}
        wrapped_opt: dict[str, torch.optim.Optimizer] = {}
        for name, module in modules.items():
            opt = optimizers.get(name)
            if opt is not None:
                wrapped[name], wrapped_opt[name] = fabric.setup(module, opt)
            else:
                wrapped[name] = fabric.setup_module(module)
        for name, opt in optimizers.items():
            if name not in wrapped_opt:
                wrapped_opt[name] = fabric.setup_optimizers(opt)
        start = 0
        if resume_state is not None:
            for name, opt in wrapped_opt.items():
                opt.load_state_dict(resume_state["optimizers"][name])
            start = int(resume_state["step"])
            torch.set_rng_state(
                resume_state["rng"]["torch"][rank % len(resume_state["rng"]["torch"])]
            )
            if start >= cfg.steps:
                log.info(
                    "checkpoint already at step %d >= steps %d; nothing to do", start, cfg.steps
                )
        ctx = StepContext(
            fabric=fabric,
            modules=wrapped,
            optimizers=wrapped_opt,
            autocast=fabric.autocast,
            channels_last=channels_last,
            grad_clip=cfg.grad_clip,
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"precision": precision, "channels_last": channels_last, "speed_timings": timings}
        if rank == 0 and timings:
            log.info("measured CPU step times %s -> %s", timings, meta)
        validate = getattr(task, "validate", None) if cfg.val_every else None
        if cfg.val_every and validate is None:
            raise InputError("loop.val_every: this task has no validation data")
        self.validation = dict((resume_state or {}).get("validation", {}))
        if self.validation.get("stopped"):
            log.info("run stopped early at step %d; nothing to do", start)
            start = cfg.steps
        bar = self._progress(start)
        t0 = time.perf_counter()
        losses: dict[str, float] = {}
        for step in range(start, cfg.steps):
            self._set_lr(wrapped_opt, step)
            generator = torch.Generator().manual_seed(_batch_seed(cfg.seed, step, rank))
            batch = task.make_batch(step, rank, generator)
            batch = _to_device(batch, fabric.device, channels_last)
            for module in wrapped.values():
                module.train()
            losses = task.training_step(batch, step, ctx)
            done = step + 1
            rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in list(losses.items())[:4]}, refresh=False)
                bar.update(1)
            if rank == 0 and (done % cfg.log_every == 0 or done == cfg.steps):
                self._log(
                    {
                        "step": done,
                        **losses,
                        "skipped": ctx.skipped,
                        "it_per_s": rate,
                        "seconds": time.perf_counter() - t0,
                    }
                )
            stop = False
            if validate is not None and (done % cfg.val_every == 0 or done == cfg.steps):
                stop = self._validate(done, validate, modules, extra_state)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps or stop:
                self._checkpoint(done, modules, wrapped_opt, extra_state, meta)
            if stop:
                log.info("validation: no improvement in %d checks; stopped at step %d",
                         cfg.patience, done)  # fmt: skip
                break
        if bar is not None:
            bar.close()
        if start >= cfg.steps and rank == 0 and resume_state is not None:
            self.state = resume_state
        if cfg.val_every and self.state and (self.out_dir / "best.pt").exists():
            best = load_checkpoint(self.out_dir / "best.pt")
            return {**self.state, "modules": best["modules"], "best_step": best["step"]}
        return self.state

    def _validate(self, step: int, validate, modules, extra_state) -> bool:
        """Score the weights of ``step``; keep them in ``best.pt`` when best so far; return
        whether training should stop (``patience`` checks without improvement)."""
        for module in modules.values():
            module.eval()
        with torch.no_grad():
            score = float(validate(modules))
        v = self.validation
        better = math.isfinite(score) and score > v.get("best", -math.inf)
        if better:
            v.update(best=score, best_step=step, bad=0)
            if self.fabric.global_rank == 0:
                save_checkpoint(
                    self.out_dir / "best.pt",
                    {
                        "step": step,
                        "modules": _module_states(modules),
                        "validation": dict(v),
                        **(extra_state() if extra_state else {}),
                    },
                )
        else:
            v["bad"] = int(v.get("bad", 0)) + 1
        stop = bool(self.cfg.patience) and v["bad"] >= self.cfg.patience
        v["stopped"] = stop
        if self.fabric.global_rank == 0:
            self._log({"step": step, "val_score": score, "val_best": v["best"] if "best" in v
                       else None, "val_best_step": v.get("best_step")})  # fmt: skip
        return stop

    # ------------------------------------------------------------------ helpers
    def _decide_speedups(self, modules, example_inputs, resume_state):
        cfg = self.cfg
        if resume_state is not None:
            meta = resume_state.get("meta", {})
            return meta.get("precision", "32"), bool(meta.get("channels_last", False)), {}
        on_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        precision, channels_last = cfg.precision, cfg.channels_last
        if not on_cpu:
            if precision == "auto":
                precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "32"
            return precision, channels_last is True, {}
        if (precision == "auto" or channels_last == "auto") and example_inputs is not None:
            model = next(iter(modules.values()))
            return choose_cpu_speedups(
                model, example_inputs(), precision=precision, channels_last=channels_last
            )
        return ("32" if precision == "auto" else precision), channels_last is True, {}

    def _set_lr(self, optimizers: dict[str, torch.optim.Optimizer], step: int) -> None:
        factor = 0.5 ** sum(step >= s for s in self.cfg.lr_decay_steps)
        for opt in optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor

    def _progress(self, start: int) -> Any:
        if not self.cfg.progress or self.fabric.global_rank != 0:
            return None
        from tqdm import tqdm

        return tqdm(
            total=self.cfg.steps,
            initial=start,
            desc="train",
            unit="it",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=1.0,
        )

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def _checkpoint(self, step, modules, optimizers, extra_state, meta) -> None:
        fabric = self.fabric
        rng = torch.get_rng_state()
        if fabric.world_size > 1:
            rng = fabric.all_gather(rng.to(fabric.device)).cpu()
            rng_list = [r.to(torch.uint8) for r in rng]
        else:
            rng_list = [rng]
        self.state = {
            "step": step,
            "modules": _module_states(modules),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "rng": {"torch": rng_list},
            "meta": meta,
            "validation": dict(getattr(self, "validation", {})),
            **(extra_state() if extra_state else {}),
        }
        if fabric.global_rank == 0:
            save_checkpoint(self.last_path, self.state)
        fabric.barrier()


def _module_states(modules: dict[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Every module's state dict, detached, on the CPU (what a checkpoint stores)."""
    return {k: {n: t.detach().cpu() for n, t in m.state_dict().items()} for k, m in modules.items()}


def _batch_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


def _to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            if channels_last and value.dim() in (4, 5) and value.is_floating_point():
                fmt = torch.channels_last_3d if value.dim() == 5 else torch.channels_last
                value = value.contiguous(memory_format=fmt)
        out[key] = value
    return out
