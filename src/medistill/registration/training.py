"""Training registration networks with the shared loop: the RCN teacher, the LDR student (without
distillation, with L1 flow distillation, or with ALDK) and the VoxelMorph-style baseline."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from medistill.errors import InputError
from medistill.losses import correlation_loss, flow_l1_loss, smoothness_loss
from medistill.nets import DOWNSAMPLES, FieldCritic, affine_det_loss, affine_ortho_loss
from medistill.registration.aldk import adversarial_student_term, coarse_field, critic_loss
from medistill.registration.config import RegistrationConfig
from medistill.registration.flowcache import FlowCache, build_flow_cache
from medistill.registration.model import (
    build_model,
    checkpoint_meta,
    export_model,
    load_model,
    size_multiple,
)
from medistill.registration.pairs import PairSource, build_pair_source
from medistill.train import StepContext, Trainer, is_main_process, rank, world_size
from medistill.typing import PathLike

log = logging.getLogger(__name__)
DISTILL_MODES = ("none", "l1", "aldk", "l1_aldk")
FIELD_L1_MODES = ("l1", "l1_aldk")
ADVERSARIAL_MODES = ("aldk", "l1_aldk")


class RegistrationTask:
    """The :class:`~medistill.train.TrainTask` of registration.

    Teacher / VoxelMorph: random pairs from the source, loss ``1 - corr + smooth + affine``.
    Student: the fixed pair set (indices ``0..pairs-1``; from the teacher-flow cache when
    distilling), loss per ``distill.mode``:

    - ``none``: ``l_rec = 1 - corr + smooth * sum_k smooth(u_k) + affine terms``;
    - ``l1``: ``l_rec + l1_weight * |phi_s - phi_t|``;
    - ``aldk``: ``gamma * l_rec + (1 - gamma) * mean((D(phi_s) - D(phi_t))^2)``, and every
      ``critic_every`` student steps one critic step on the WGAN-GP loss;
    - ``l1_aldk``: ALDK on top of field regression, ``gamma * (l_rec + l1_weight *
      |phi_s - phi_t|) + (1 - gamma) * mean((D(phi_s) - D(phi_t))^2)``, the critic as in ``aldk``.
    """

    def __init__(
        self,
        cfg: RegistrationConfig,
        role: str,
        source: PairSource,
        cache: FlowCache | None = None,
    ) -> None:
        self.cfg = cfg
        self.role = role
        self.source = source
        self.cache = cache
        self.model = build_model(cfg.model, role)
        self.mode = cfg.distill.mode if role == "student" else "none"
        self.critic = FieldCritic(cfg.model.ndim) if self.mode in ADVERSARIAL_MODES else None

    # -- TrainTask
    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"model": self.model}
        if self.critic is not None:
            mods["critic"] = self.critic
        return mods

    def optimizers(self, modules, lr: float) -> dict[str, torch.optim.Optimizer]:
        opts = {"model": torch.optim.Adam(modules["model"].parameters(), lr=lr)}
        if "critic" in modules:
            opts["critic"] = torch.optim.Adam(
                modules["critic"].parameters(), lr=self.cfg.distill.critic_lr, betas=(0.5, 0.9)
            )
        return opts

    def make_batch(self, step: int, rank: int, generator: torch.Generator) -> dict[str, Any]:
        b = self.cfg.loop.batch_size
        if self.role == "student":
            count = len(self.cache) if self.cache is not None else self.cfg.data.pairs
            idx = torch.randint(count, (b,), generator=generator).tolist()
            items = [self.cache.get(i) if self.cache else self.source.pair(i) for i in idx]
        else:
            items = [self.source.sample(generator) for _ in range(b)]
        keys = ("fixed", "moving", "teacher_disp")
        return {k: torch.stack([it[k] for it in items]) for k in keys if k in items[0]}

    def training_step(self, batch: dict[str, Any], step: int, ctx: StepContext) -> dict[str, float]:
        cfg = self.cfg
        model = ctx.modules["model"]
        fixed, moving = batch["fixed"], batch["moving"]
        with ctx.autocast():
            out = model(fixed, moving)
        disp = out.disp.float()
        l_sim = correlation_loss(fixed, out.warped.float())
        l_smooth = sum((smoothness_loss(u.float()) for u in out.increments), l_sim.new_zeros(()))
        l_rec = l_sim + cfg.loss.smooth * l_smooth
        logs: dict[str, float] = {"sim": float(l_sim.detach()), "smooth": float(l_smooth.detach())}
        if out.affine is not None:
            a = out.affine[0].float()
            l_det, l_ortho = affine_det_loss(a), affine_ortho_loss(a)
            l_rec = l_rec + cfg.loss.affine_det * l_det + cfg.loss.affine_ortho * l_ortho
            logs["affine_det"], logs["affine_ortho"] = (
                float(l_det.detach()),
                float(l_ortho.detach()),
            )
        if self.mode in FIELD_L1_MODES:
            l1 = flow_l1_loss(disp, batch["teacher_disp"])
            l_rec = l_rec + cfg.distill.l1_weight * l1
            logs["flow_l1"] = float(l1.detach())
        loss = l_rec
        if self.mode in ADVERSARIAL_MODES:
            critic = ctx.modules["critic"]
            factor = cfg.distill.critic_downsample
            teacher = coarse_field(batch["teacher_disp"], factor)
            student = coarse_field(disp, factor)
            if step % max(1, cfg.distill.critic_every) == 0:
                critic.requires_grad_(True)
                c_loss, c_logs = critic_loss(
                    critic, teacher, student, beta=cfg.distill.beta, gp_lambda=cfg.distill.gp_lambda
                )
                ctx.optimize("critic", c_loss)
                self.last_critic_logs = c_logs
            logs.update(getattr(self, "last_critic_logs", {}))
            critic.requires_grad_(False)  # the student step must not move the critic
            adv = adversarial_student_term(
                critic, teacher, student, per_element=cfg.distill.adv_per_element
            )
            gamma = cfg.distill.gamma
            loss = gamma * l_rec + (1 - gamma) * adv
            logs["adv"] = float(adv.detach())
        logs.update(ctx.optimize("model", loss))
        logs["loss"] = float(loss.detach())
        return logs


def _check(cfg: RegistrationConfig, role: str) -> None:
    shape = tuple(cfg.data.shape)
    if len(shape) != cfg.model.ndim:
        raise InputError(f"data.shape {shape} does not have model.ndim={cfg.model.ndim} axes")
    if cfg.model.student_downsample not in DOWNSAMPLES:
        raise InputError(
            f"model.student_downsample must be one of {DOWNSAMPLES}, "
            f"got {cfg.model.student_downsample!r}"
        )
    multiple = size_multiple(role, cfg.model)
    if any(s % multiple for s in shape):
        raise InputError(
            f"data.shape {shape}: the {role} needs sizes that are multiples of {multiple}"
        )
    if cfg.distill.mode not in DISTILL_MODES:
        raise InputError(f"distill.mode must be one of {DISTILL_MODES}, got {cfg.distill.mode!r}")


def teacher_flow_cache(cfg: RegistrationConfig, source: PairSource, out: Path) -> FlowCache:
    """Build or reuse the teacher-flow cache of ``cfg.distill.teacher`` over the fixed pair set:
    a trained network's checkpoint, ``optimise`` (the per-pair optimiser with
    ``distill.teacher_config`` / ``teacher_set``, given the pairs' labels for its privileged
    terms) or ``ants`` (antspyx SyN, optional extra ``medistill[ants]``)."""
    d = cfg.distill
    if not d.teacher:
        raise InputError(
            f"distill.mode {d.mode!r} needs distill.teacher (a checkpoint, 'optimise' or 'ants')"
        )
    folder = Path(d.cache) if d.cache else out / "flow_cache"
    if d.teacher_batch < 1:
        raise InputError(f"distill.teacher_batch must be >= 1, got {d.teacher_batch}")
    common = {
        "pair": source.pair,
        "pairs": cfg.data.pairs,
        "shape": tuple(cfg.data.shape),
        "source_key": source.describe(),
        "has_labels": source.has_labels,
        "progress": cfg.loop.progress,
        "build": is_main_process(),
        "batch_size": d.teacher_batch,
        "rank": rank(),
        "world": world_size(),
        "run_id": os.environ.get("TORCHELASTIC_RUN_ID", ""),
    }
    if d.teacher == "optimise":
        from medistill.optimise import load_optimise_config, optimise
        from medistill.optimise.apply import resolve_device
        from medistill.train import to_dict

        ocfg = load_optimise_config(d.teacher_config, d.teacher_set)
        device = resolve_device(ocfg.device)

        def run(fixed, moving, fixed_labels=None, moving_labels=None):
            labels = {}
            if fixed_labels is not None:
                labels = {
                    "fixed_labels": fixed_labels.to(device),
                    "moving_labels": moving_labels.to(device),
                }
            return optimise(fixed.to(device), moving.to(device), ocfg, **labels).disp

        settings = to_dict(ocfg)
        settings.pop("device")
        return build_flow_cache(
            folder,
            teacher_key="optimise " + json.dumps(settings, sort_keys=True),
            run_teacher=run,
            teacher_labels=ocfg.privileged.dice_weight > 0,
            **common,
        )
    if d.teacher == "ants":
        from medistill.registration.ants_teacher import ants_fields, require_ants

        ants = require_ants()
        if len(cfg.data.shape) != 3:
            raise InputError("distill.teacher 'ants' registers 3-D pairs only")
        return build_flow_cache(
            folder,
            teacher_key=f"ants SyN antspyx {getattr(ants, '__version__', '?')}",
            run_teacher=lambda f, m: ants_fields(f, m, transform="SyN"),
            **common,
        )
    teacher, _, tcfg = load_model(d.teacher)
    if tuple(tcfg.data.shape) != tuple(cfg.data.shape):
        raise InputError(
            f"teacher was trained on a {tuple(tcfg.data.shape)} grid, student config asks for "
            f"{tuple(cfg.data.shape)}"
        )
    return build_flow_cache(
        folder,
        teacher_checkpoint=d.teacher,
        run_teacher=lambda f, m: teacher(f, m).disp,
        **common,
    )


def train(
    role: str, cfg: RegistrationConfig, out: PathLike, *, resume: bool = False
) -> dict[str, Any]:
    """Train ``role`` (``teacher``, ``student``, ``voxelmorph``) into ``out``.

    Writes ``out/last.pt`` (resumable state), ``out/model.pt`` (slim inference checkpoint),
    ``out/config.yaml`` and ``out/log.jsonl``. Returns the final state.
    """
    from medistill.train import save_config

    out = Path(out)
    _check(cfg, role)
    source = build_pair_source(cfg.data)
    if cfg.data.source == "labelmaps":
        held = "" if cfg.data.holdout else " (data.holdout false: every map)"
        log.info("training pairs from %d label maps of %s%s", source.count, cfg.data.path, held)
    cache = None
    if role == "student" and cfg.distill.mode != "none":
        cache = teacher_flow_cache(cfg, source, out)
    torch.manual_seed(cfg.loop.seed)  # the initial weights (and critic) depend on the seed alone
    task = RegistrationTask(cfg, role, source, cache)
    main_process = is_main_process()
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    shape = (1, 1, *cfg.data.shape)
    state = Trainer(cfg.loop, out, resume=resume).fit(
        task,
        extra_state=lambda: checkpoint_meta(cfg, role, task.model),
        example_inputs=lambda: (torch.rand(shape), torch.rand(shape)),
    )
    if state and main_process:
        export_model(state, out / "model.pt")
    return state
