"""Training DC-CNN (reconstruction) and VDSR (super-resolution) teachers and students with the
shared loop, including KD-MRI's three-step distillation.

- Step 1, teacher: ``L1(x_T, x)``.
- Step 2, student ``mode = "at"``: attention transfer only, ``sum_j d(Q_S^j, Q_T^j)``.
- Step 3, student ``mode = "imitation"`` with ``distill.init`` = the step-2 checkpoint:
  ``alpha L1(x_S, x) + (1 - alpha) L1(x_S, x_T)``.
- ``mode = "kd"`` runs steps 2 and 3 in one call (``out/at`` then ``out``).
- Baselines: ``mode = "none"`` (student with L1 alone), ``"at"`` alone, ``"imitation"`` from
  scratch.

Batches: ``batch_size`` training slices drawn uniformly from the step's generator, augmented
(``data.augment``: :mod:`medistill.recon.augment`, same generator); recon inputs are simulated from
those targets with the run's fixed mask (zero-filled magnitude, k-space, mask), SR inputs by
keeping the central k-space block.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from medistill.errors import InputError
from medistill.recon.augment import augment_slices
from medistill.recon.config import DataConfig, ReconConfig
from medistill.recon.data import SliceSet, embedded_set, read_slice_set
from medistill.recon.dccnn import set_attention_layer
from medistill.recon.distill import (
    AT_DISTANCES,
    attention_loss,
    cascade_imitation_loss,
    imitation_loss,
)
from medistill.recon.kspace import simulate, sr_degrade
from medistill.recon.masks import MASK_KINDS
from medistill.recon.model import (
    ReconModel,
    build_model,
    check_role,
    checkpoint_meta,
    export_model,
    is_sr,
    load_model,
    mask_tensor,
    run_mask,
    teacher_role,
)
from medistill.recon.pooled import pooled_set
from medistill.train import StepContext, Trainer, is_main_process
from medistill.typing import PathLike

log = logging.getLogger(__name__)

DISTILL_KINDS: tuple[str, ...] = ("none", "at", "imitation", "kd")

__all__ = ["DISTILL_KINDS", "ReconTask", "check_config", "train", "training_slices"]


def training_slices(cfg: DataConfig) -> SliceSet:
    """The training slices of a run: the embedded train split, the files of ``cfg.paths``, or the
    train split of the ``pooled`` subjects (:func:`medistill.recon.pooled.pooled_set`)."""
    if cfg.source == "pooled":
        return pooled_set(cfg, "train")
    if cfg.source == "embedded":
        return embedded_set(cfg.slices, cfg.size, seed=cfg.seed, split="train")
    if cfg.source == "files":
        if not cfg.paths:
            raise InputError("data.source 'files' needs data.paths (files or folders)")
        return read_slice_set(
            cfg.paths, cfg.size, min_area=cfg.min_area, max_slices=cfg.slices or None
        )
    raise InputError(f"data.source must be 'embedded', 'files' or 'pooled', got {cfg.source!r}")


def validation_slices(cfg: DataConfig, limit: int = 64) -> SliceSet | None:
    """The validation slices of a run: the ``val`` split of the ``pooled`` subjects (at most
    ``limit`` slices, evenly spread); ``None`` for the other sources (no subject split)."""
    if cfg.source != "pooled":
        return None
    val = pooled_set(cfg, "val")
    if len(val.images) > limit:
        keep = np.linspace(0, len(val.images) - 1, limit).round().astype(int)
        val = dataclasses.replace(val, images=val.images[keep])
    return val


class ReconTask:
    """The :class:`~medistill.train.TrainTask` of reconstruction / super-resolution.

    Args:
        cfg: the run's config.
        role: one of :data:`medistill.recon.model.ROLES`.
        slices: training slices ``(N, S, S)``.
        kind: distillation kind of a student (``none``, ``at``, ``imitation``); teachers ``none``.
        teacher: the trained teacher (``at`` / ``imitation``), frozen.
        init: weights to start from (step 3 starts from step 2's).
        val_slices: validation slices (``loop.val_every``: mean PSNR on them, higher is better).
    """

    def __init__(
        self,
        cfg: ReconConfig,
        role: str,
        slices: SliceSet,
        *,
        kind: str = "none",
        teacher: ReconModel | None = None,
        init: dict[str, torch.Tensor] | None = None,
        val_slices: SliceSet | None = None,
    ) -> None:
        self.cfg = cfg
        self.role = check_role(role)
        self.sr = is_sr(role)
        self.kind = kind
        if kind in ("at", "imitation") and teacher is None:
            raise InputError(f"distill.mode {kind!r} needs a teacher checkpoint (distill.teacher)")
        self.teacher = teacher.net if teacher is not None else None
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
        self.images = torch.from_numpy(np.ascontiguousarray(slices.images, dtype=np.float32))
        size = self.images.shape[-1]
        self.mask = None if self.sr else run_mask(cfg.mask, (size, size))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.loop.seed)  # the initial weights depend on the seed alone
            self.model = build_model(cfg.model, role)
        if init is not None:
            self.model.load_state_dict(init)
        if kind == "at":  # which activations attention transfer pairs (weights untouched)
            t_layer, s_layer = cfg.distill.at_layers
            set_attention_layer(self.teacher, t_layer)
            set_attention_layer(self.model, s_layer)
        self.val_images = (
            None
            if val_slices is None
            else torch.from_numpy(np.ascontiguousarray(val_slices.images, dtype=np.float32))
        )
        if self.val_images is None:
            self.validate = None  # type: ignore[assignment]  # the loop then refuses val_every

    def validate(self, modules: dict[str, torch.nn.Module]) -> float:
        """Mean PSNR (dB, data range = each slice's maximum) of the network on the validation
        slices, simulated with the run's mask (recon) or degradation (SR); no augmentation."""
        model = modules["model"]
        device = next(model.parameters()).device
        target = self.val_images.unsqueeze(1).to(device)
        if self.sr:
            inputs: tuple[torch.Tensor, ...] = (sr_degrade(target, self.cfg.sr.factor),)
        else:
            m = mask_tensor(self.mask).to(device)
            sim = simulate(target, m, "centered")
            inputs = (sim.zero_filled, sim.kspace, m)
        scores = []
        for i in range(0, len(target), 8):
            out = model(*(x[i : i + 8] if x.shape[0] == len(target) else x for x in inputs))
            pred, ref = out.image.float(), target[i : i + 8]
            mse = ((pred - ref) ** 2).flatten(1).mean(1).clamp_min(1e-12)
            peak = ref.flatten(1).amax(1).clamp_min(1e-12)
            scores.append(10 * torch.log10(peak**2 / mse))
        return float(torch.cat(scores).mean())

    # -- TrainTask
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def optimizers(self, modules, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"model": torch.optim.Adam(modules["model"].parameters(), lr=lr)}

    def make_batch(self, step: int, rank: int, generator: torch.Generator) -> dict[str, Any]:
        """Batch of ``step``: ``target`` ``(B, 1, S, S)`` (augmented when ``data.augment``) and the
        network inputs simulated from it (``input``; recon also ``kspace`` (complex) and ``mask``
        ``(1, 1, 1, S)``)."""
        idx = torch.randint(len(self.images), (self.cfg.loop.batch_size,), generator=generator)
        # augmentation acts on the target image, before k-space is simulated from it
        target = augment_slices(self.images[idx].unsqueeze(1), self.cfg.data, generator)
        if self.sr:
            return {"target": target, "input": sr_degrade(target, self.cfg.sr.factor)}
        m = mask_tensor(self.mask)
        sim = simulate(target, m, "centered")
        return {"target": target, "input": sim.zero_filled, "kspace": sim.kspace, "mask": m}

    def net_inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """The positional network inputs of a batch."""
        if self.sr:
            return (batch["input"],)
        return batch["input"], batch["kspace"], batch["mask"]

    def training_step(self, batch: dict[str, Any], step: int, ctx: StepContext) -> dict[str, float]:
        model, opt = ctx.modules["model"], ctx.optimizers["model"]
        inputs = self.net_inputs(batch)
        target = batch["target"]
        with ctx.autocast():
            out = model(*inputs)
        logs: dict[str, float] = {}
        if self.kind == "none":
            loss = F.l1_loss(out.image.float(), target)
        else:
            teacher = self.teacher
            if next(teacher.parameters()).device != target.device:
                teacher.to(target.device)
            with torch.no_grad(), ctx.autocast():
                t_out = teacher(*inputs)
            if self.kind == "at":
                loss = attention_loss(
                    out.features, t_out.features, distance=self.cfg.distill.at_distance
                )
                logs["l1_target"] = float(F.l1_loss(out.image.float(), target).detach())
            else:
                loss, rec, imit = imitation_loss(
                    out.image, target, t_out.image, self.cfg.distill.alpha
                )
                logs["l1_target"] = float(rec.detach())
                logs["l1_teacher"] = float(imit.detach())
                weight = self.cfg.distill.cascade_imitation
                if weight > 0:
                    stages = cascade_imitation_loss(out.stages, t_out.stages)
                    loss = loss + weight * stages
                    logs["l1_teacher_cascades"] = float(stages.detach())
        opt.zero_grad(set_to_none=True)
        ctx.backward(loss)
        opt.step()
        logs["loss"] = float(loss.detach())
        return logs


def check_config(cfg: ReconConfig, role: str) -> None:
    """Reject settings that cannot work, with one-line messages."""
    check_role(role)
    if cfg.distill.mode not in DISTILL_KINDS:
        raise InputError(
            f"distill.mode must be one of {', '.join(DISTILL_KINDS)}, got {cfg.distill.mode!r}"
        )
    if cfg.distill.at_distance not in AT_DISTANCES:
        raise InputError(
            f"distill.at_distance must be one of {', '.join(AT_DISTANCES)}, "
            f"got {cfg.distill.at_distance!r}"
        )
    _check_at_layers(cfg, role)
    if not 0.0 <= cfg.distill.alpha <= 1.0:
        raise InputError(f"distill.alpha must be in [0, 1], got {cfg.distill.alpha}")
    for name, least in (("channels", 1), ("student_channels", 0)):
        value = getattr(cfg.model, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InputError(f"model.{name} must be an integer >= {least}, got {value!r}")
    weight = cfg.distill.cascade_imitation
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
        raise InputError(f"distill.cascade_imitation must be a number >= 0, got {weight!r}")
    if weight > 0 and is_sr(role):
        raise InputError("distill.cascade_imitation needs a DC-CNN (recon) student, not VDSR")
    if cfg.mask.kind not in MASK_KINDS:
        raise InputError(f"mask.kind must be one of {', '.join(MASK_KINDS)}, got {cfg.mask.kind!r}")
    if cfg.mask.acceleration < 1:
        raise InputError(f"mask.acceleration must be >= 1, got {cfg.mask.acceleration}")
    if cfg.sr.factor < 1:
        raise InputError(f"sr.factor must be >= 1, got {cfg.sr.factor}")
    cfg.data.validate()
    if cfg.data.size < 16:
        raise InputError(f"data.size must be >= 16, got {cfg.data.size}")
    if cfg.data.source == "embedded" and cfg.data.slices < 1:
        raise InputError(f"data.slices must be >= 1 for embedded data, got {cfg.data.slices}")
    student = role.endswith("student")
    if student and cfg.distill.mode != "none" and not cfg.distill.teacher:
        raise InputError(f"distill.mode {cfg.distill.mode!r} needs distill.teacher (a checkpoint)")


def _check_at_layers(cfg: ReconConfig, role: str) -> None:
    """``distill.at_layers`` must name hidden layers of the teacher's and the student's blocks."""
    layers = tuple(cfg.distill.at_layers)
    ok = len(layers) == 2 and all(
        not isinstance(v, bool) and isinstance(v, int) and v >= 0 for v in layers
    )
    if not ok:
        raise InputError(
            f"distill.at_layers must be [teacher, student] layer numbers >= 0, got {layers!r}"
        )
    m = cfg.model
    if is_sr(role):
        convs = (m.sr_teacher_convs, m.sr_student_convs)
    else:
        convs = (m.teacher_convs, m.student_convs)
    for who, layer, n in zip(("teacher", "student"), layers, convs, strict=True):
        if layer > n - 1:
            raise InputError(
                f"distill.at_layers: the {who} has {n} convolutions per block, so its layer "
                f"must be 0 (default) or 1..{n - 1}, got {layer}"
            )


def _load_teacher(cfg: ReconConfig, role: str, mask: np.ndarray | None) -> ReconModel:
    teacher = load_model(cfg.distill.teacher)
    want = teacher_role(role)
    if teacher.role != want:
        raise InputError(
            f"{cfg.distill.teacher}: a {role} needs a {want} checkpoint, got a {teacher.role}"
        )
    if mask is not None and (
        teacher.mask is None
        or teacher.mask.shape != mask.shape
        or not np.array_equal(teacher.mask, mask)
    ):
        raise InputError(
            f"{cfg.distill.teacher}: the teacher was trained with another undersampling mask "
            f"(acceleration {teacher.config.mask.acceleration:g}, size {teacher.config.data.size})"
        )
    if is_sr(role) and teacher.config.sr.factor != cfg.sr.factor:
        raise InputError(
            f"{cfg.distill.teacher}: the teacher was trained for SR factor "
            f"{teacher.config.sr.factor:g}, this run asks for {cfg.sr.factor:g}"
        )
    n_t, n_s = teacher.config.model.cascades, cfg.model.cascades
    if cfg.distill.cascade_imitation > 0 and n_t != n_s:
        raise InputError(
            f"distill.cascade_imitation: the teacher {cfg.distill.teacher} has {n_t} cascades, "
            f"the student {n_s}; the term needs as many in both"
        )
    return teacher


def _load_init(path: str, role: str) -> dict[str, torch.Tensor]:
    init = load_model(path)
    if init.role != role:
        raise InputError(f"distill.init {path}: expected a {role} checkpoint, got a {init.role}")
    return init.net.state_dict()


def _fit(
    cfg: ReconConfig,
    role: str,
    slices: SliceSet,
    out: Path,
    *,
    kind: str,
    resume: bool,
    init: str = "",
) -> dict[str, Any]:
    from medistill.train import save_config

    if kind == "at" and cfg.loop.val_every:
        # attention transfer alone does not train the output image: its PSNR cannot choose
        # weights or stop the stage (the imitation stage that follows is validated)
        log.info("recon: the attention-transfer stage is not validated (loop.val_every ignored)")
        cfg = copy.deepcopy(cfg)
        cfg.loop.val_every = 0
        cfg.loop.patience = 0
    size = slices.size
    mask = None if is_sr(role) else run_mask(cfg.mask, (size, size))
    teacher = None
    if role.endswith("student") and kind in ("at", "imitation"):
        teacher = _load_teacher(cfg, role, mask)
    state_init = _load_init(init, role) if init else None
    val = validation_slices(cfg.data) if cfg.loop.val_every else None
    if cfg.loop.val_every and val is None:
        raise InputError(
            "loop.val_every needs validation subjects: use data.source 'pooled' (split by subject)"
        )
    task = ReconTask(cfg, role, slices, kind=kind, teacher=teacher, init=state_init, val_slices=val)
    main_process = is_main_process()
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    state = Trainer(cfg.loop, out, resume=resume).fit(
        task,
        extra_state=lambda: checkpoint_meta(cfg, role, task.model, mask),
    )
    if state and main_process:
        export_model(state, out / "model.pt")
    return state


def train(role: str, cfg: ReconConfig, out: PathLike, *, resume: bool = False) -> dict[str, Any]:
    """Train ``role`` into ``out``; students distil per ``cfg.distill.mode``.

    Writes ``out/last.pt`` (resumable state), ``out/model.pt`` (slim inference checkpoint),
    ``out/config.yaml`` and ``out/log.jsonl``. ``mode = "kd"`` first trains the attention stage in
    ``out/at`` (``distill.at_steps`` steps, the learning rate halved at the same fractions of them
    as ``loop.lr_decay_steps`` are of ``loop.steps``), then the imitation stage in ``out``
    starting from ``out/at/model.pt``.

    Args:
        role: ``recon-teacher``, ``recon-student``, ``sr-teacher`` or ``sr-student``.
        cfg: the run's config.
        out: run folder.
        resume: continue from ``out/last.pt`` (and ``out/at/last.pt`` for ``kd``).

    Returns:
        The final training state (as written to ``last.pt``).

    Raises:
        InputError: invalid settings, unreadable data, or a teacher that does not fit.
    """
    out = Path(out)
    check_config(cfg, role)
    slices = training_slices(cfg.data)
    kind = cfg.distill.mode if role.endswith("student") else "none"
    if kind != "kd":
        return _fit(cfg, role, slices, out, kind=kind, resume=resume, init=cfg.distill.init)
    at_cfg = copy.deepcopy(cfg)
    at_cfg.distill.mode = "at"
    if cfg.distill.at_steps > 0 and cfg.distill.at_steps != cfg.loop.steps:
        # the attention stage keeps the schedule's shape: decays at the same fractions of its
        # own steps (decay steps meant for loop.steps could lie beyond a shorter stage)
        at_cfg.loop.steps = cfg.distill.at_steps
        at_cfg.loop.lr_decay_steps = tuple(
            max(1, round(d * cfg.distill.at_steps / cfg.loop.steps))
            for d in cfg.loop.lr_decay_steps
        )
    at_out = out / "at"
    # the attention stage is resumed whenever it exists, so that a resumed kd run finishes it
    at_resume = (at_out / "last.pt").exists()
    _fit(at_cfg, role, slices, at_out, kind="at", resume=at_resume, init=cfg.distill.init)
    return _fit(
        cfg, role, slices, out, kind="imitation", resume=resume, init=str(at_out / "model.pt")
    )
