"""Training LT-Net with the shared loop: the generators ``G_F``, ``G_B`` and the discriminator.

One step (batch of unlabelled images ``u``, the atlas ``l``, ``l_s``):

1. the generators run: ``Delta_F = G_F(l, u)``, ``u_bar``, ``u_bar_s``; ``Delta_B = G_B(u_bar, l)``,
   ``l_bar``, ``l_bar_s``;
2. discriminator step (GAN on): least-squares loss with ``u`` real and ``u_bar`` (detached) fake;
3. generator step (``ctx.optimize``: non-finite steps skipped, optional gradient clipping):
   ``L = gan L_GAN + sim L_sim + lambda1 cyc L_cyc + lambda2 (anatomy L_anat +
   smooth (L_smooth(Delta_F) + L_smooth(Delta_B)) + trans L_trans + diff L_diff)`` with the
   discriminator frozen; both generators are updated by one optimiser.

During the first ``loss.backward_pretrain`` steps only ``G_B`` trains: it learns to invert random
smooth fields applied to the atlas, or ``G_F``'s own fields (``loss.pretrain_source``; ``L_trans``
against the known field), so that it inverts before the cycle terms reach ``G_F``; with
``loss.pretrain_target`` it stops early once it inverts a fixed check set of fields (random ones it
never trains on, and ``G_F``'s for the probe images) to that many voxels. With ``loss.balance =
"initial"`` every term is divided by its magnitude at the first step after the pre-training (the
start of the warm-up). Every ``loop.log_every`` steps the collapse guard logs the spread of
``G_F``'s fields over a fixed probe of training images (``fwd_spread``; ``collapsed`` is 1 below
``loss.collapse_threshold``) and, with ``loss.pretrain_target``, ``G_B``'s inversion residual on a
fixed set of random fields it never trains on and on ``G_F``'s fields for the probe images (the
whole run, not only the pre-training).

During the first ``loss.cycle_start`` steps (warm-up) the cycle terms see ``Delta_F`` and
``u_bar`` without gradient: ``G_F`` learns from ``L_sim``, ``L_smooth`` and ``L_GAN`` while ``G_B``
learns to invert it; afterwards every term trains both generators (optionally ramped in over
``loss.cycle_ramp`` steps).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.labeltransfer import losses as L
from medistill.labeltransfer.config import LOSS_TERMS, LabelTransferConfig, uses_backward
from medistill.labeltransfer.data import TransferData, build_data
from medistill.labeltransfer.model import (
    CYCLE_WARPS,
    LTNetOutput,
    build_discriminator,
    build_model,
    checkpoint_meta,
    export_model,
    load_model,
    one_hot,
)
from medistill.metrics import field_spread
from medistill.spatial import warp
from medistill.spatial.bspline import random_smooth_disp
from medistill.train import StepContext, Trainer, checkpoint_contents, is_main_process
from medistill.typing import PathLike

log = logging.getLogger(__name__)

__all__ = [
    "LabelTransferTask",
    "generator_terms",
    "inversion_residual",
    "registration_generator",
    "total_loss",
    "train",
]

TERMS = LOSS_TERMS
PROBE_IMAGES = 4


def generator_terms(
    cfg: LabelTransferConfig,
    out: LTNetOutput,
    atlas: Tensor,
    atlas_onehot: Tensor,
    image: Tensor,
    channels: Tensor,
    fake_scores: Tensor | None = None,
    detach_forward: bool = False,
) -> dict[str, Tensor]:
    """The enabled LT-Net terms of one generator step (unweighted).

    Args:
        cfg: the run's config (weights decide which terms are computed).
        out: the generators' outputs.
        atlas: ``(B, 1, *S)`` atlas image ``l``.
        atlas_onehot: ``(B, L, *S)`` one-hot atlas labels ``l_s``.
        image: ``(B, 1, *S)`` unlabelled images ``u``.
        channels: ``(K,)`` indices of the label channels scored by the anatomy and difference
            cycles.
        fake_scores: discriminator scores of ``u_bar`` (needed when ``gan > 0``).
        detach_forward: the cycle terms see ``Delta_F`` and ``u_bar_s`` without gradient (they
            train ``G_B`` only; run the generators with the same flag).

    Returns:
        ``{term: scalar}`` for every term with a positive weight.
    """
    w = cfg.loss
    terms: dict[str, Tensor] = {}
    disp_f, warped = out.disp.float(), out.warped.float()
    if w.gan > 0:
        if fake_scores is None:
            raise InputError("generator_terms(): the GAN term needs 'fake_scores'")
        terms["gan"] = L.generator_gan_loss(fake_scores)
    if w.sim > 0:
        terms["sim"] = L.similarity_loss(image.float(), warped, window=w.window)
    smooth = None
    if w.smooth > 0:
        smooth = L.smooth_loss(disp_f, w.smooth_penalty)
    if out.disp_backward is None:
        if smooth is not None:
            terms["smooth"] = smooth
        return terms
    disp_b = out.disp_backward.float()
    f_disp = disp_f.detach() if detach_forward else disp_f
    f_probs = out.warped_probs.detach() if detach_forward else out.warped_probs
    if out.cycle_disp is not None:  # the cycle branch's own tap of Delta_F (loss.cycle_share)
        f_disp, f_probs = out.cycle_disp.float(), out.cycle_probs
    if smooth is not None:
        terms["smooth"] = smooth + L.smooth_loss(disp_b, w.smooth_penalty)
    if w.cyc > 0:
        terms["cyc"] = L.image_cycle_loss(atlas.float(), out.cycled.float())
    if w.trans > 0:
        terms["trans"] = L.transformation_cycle_loss(f_disp, disp_b, w.eps, w.gamma)
    labels = atlas_onehot.index_select(1, channels)
    if w.anatomy > 0:
        cycled = out.cycled_probs.float().index_select(1, channels)
        terms["anatomy"] = L.anatomy_cycle_loss(labels, cycled)
    if w.diff > 0:
        terms["diff"] = L.difference_cycle_loss(
            labels,
            f_probs.float().index_select(1, channels),
            out.cycled_probs.float().index_select(1, channels),
            w.eps,
            w.gamma,
        )
    return terms


def in_warmup(cfg: LabelTransferConfig, step: int | None) -> bool:
    """Whether ``step`` lies in the warm-up in which the cycle terms train ``G_B`` only."""
    return step is not None and step < cfg.loss.cycle_start


def cycle_factor(cfg: LabelTransferConfig, step: int | None) -> float:
    """Factor of the cycle terms at ``step``: 1 during the warm-up (they train ``G_B`` only),
    then rising linearly from 0 to 1 over ``cycle_ramp`` steps (1 at once without a ramp, and
    when ``step`` is None)."""
    if step is None or in_warmup(cfg, step):
        return 1.0
    ramp = cfg.loss.cycle_ramp
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - cfg.loss.cycle_start) / ramp)


def total_loss(
    cfg: LabelTransferConfig,
    terms: dict[str, Tensor],
    step: int | None = None,
    scales: Tensor | None = None,
) -> Tensor:
    """``gan L_GAN + sim L_sim + lambda1 cyc L_cyc + lambda2 (anatomy L_anat + smooth L_smooth +
    trans L_trans + diff L_diff)`` over the terms present; the cycle terms (``cyc``, ``anatomy``,
    ``trans``, ``diff``) times :func:`cycle_factor` at ``step``. With ``scales`` (``(7,)``, one
    per :data:`TERMS`, 0 = unset) each term is first divided by its scale."""
    w = cfg.loss
    ramp = cycle_factor(cfg, step)
    weights = {
        "gan": w.gan,
        "sim": w.sim,
        "cyc": ramp * w.lambda1 * w.cyc,
        "anatomy": ramp * w.lambda2 * w.anatomy,
        "smooth": w.lambda2 * w.smooth,
        "trans": ramp * w.lambda2 * w.trans,
        "diff": ramp * w.lambda2 * w.diff,
    }
    total = None
    for name, value in terms.items():
        if scales is not None and float(scales[TERMS.index(name)]) > 0:
            value = value / scales[TERMS.index(name)]
        part = weights[name] * value
        total = part if total is None else total + part
    if total is None:
        raise InputError("loss: every LT-Net term is switched off (all weights 0)")
    return total


class LabelTransferTask:
    """The :class:`~medistill.train.TrainTask` of LT-Net.

    Modules: ``generators`` (:class:`~medistill.labeltransfer.model.LTNet`) and, with the GAN term,
    ``discriminator``; one Adam optimiser each.
    """

    def __init__(self, cfg: LabelTransferConfig, data: TransferData) -> None:
        self.cfg = cfg
        self.data = data
        spec, start = forward_start(cfg)
        back_spec, back_start = None, None
        if cfg.model.backward_registration and uses_backward(cfg.loss):
            back_spec, back_start = registration_generator(
                cfg.model.backward_registration, cfg.model.ndim, "model.backward_registration"
            )
        source = cfg.model.forward_registration or cfg.model.forward_init
        with checkpoint_contents(source or "config", "a usable G_F"):
            self.net = build_model(cfg, spec, back_spec)
            if start is not None:
                self.net.forward_net.load_state_dict(start)
        if back_start is not None:
            with checkpoint_contents(cfg.model.backward_registration, "a usable G_B"):
                self.net.backward_net.load_state_dict(back_start)
        for which, sub in (("G_F", self.net.forward_net), ("G_B", self.net.backward_net)):
            multiple = int(getattr(sub, "size_multiple", 16)) if sub is not None else 16
            if any(s % multiple for s in cfg.data.shape):
                raise InputError(
                    f"data.shape {tuple(cfg.data.shape)}: {which} (its registration network) "
                    f"needs sizes that are multiples of {multiple}"
                )
        self.disc = build_discriminator(cfg)
        atlas = data.atlas
        self.onehot = one_hot(atlas.labels[None], atlas.values)  # (1, L, *S)
        keep = [
            i for i, v in enumerate(atlas.values.tolist()) if cfg.loss.include_background or v != 0
        ]
        if not keep:
            raise InputError("atlas labels hold no structure besides background 0")
        self.channels = torch.tensor(keep, dtype=torch.long)
        self.last_disc: dict[str, float] = {}
        probe = torch.Generator().manual_seed(cfg.data.seed + 7919)
        count = PROBE_IMAGES if len(data.images) > 1 else 0
        self.probe = (
            torch.stack([data.images.sample(probe) for _ in range(count)]).float()
            if count
            else None
        )
        w = cfg.loss
        if w.pretrain_target > 0 and w.backward_pretrain and self.probe is None:
            raise InputError(
                "loss.pretrain_target checks G_B on G_F's fields for probe images: it needs at "
                "least 2 training images"
            )
        self.pool = None  # the fixed pre-training fields of loss.pretrain_pool, drawn once
        if w.backward_pretrain and w.pretrain_pool > 0:
            self.pool = random_smooth_disp(
                tuple(cfg.data.shape), batch=w.pretrain_pool, max_disp=w.pretrain_disp,
                generator=torch.Generator().manual_seed(cfg.data.seed + 104729),
                dtype=torch.float32,
            )  # fmt: skip
        # fields G_B never trains on, for the held-out inversion check of loss.pretrain_target
        self.check_fields = None
        if w.backward_pretrain and w.pretrain_target > 0:
            self.check_fields = random_smooth_disp(
                tuple(cfg.data.shape), batch=PROBE_IMAGES, max_disp=w.pretrain_disp,
                generator=torch.Generator().manual_seed(cfg.data.seed + 1299709),
                dtype=torch.float32,
            )  # fmt: skip

    def in_pretraining(self, step: int) -> bool:
        """Whether ``step`` trains ``G_B`` alone: before ``loss.backward_pretrain`` and before
        the step at which ``loss.pretrain_target`` ended the pre-training early."""
        if step >= self.cfg.loss.backward_pretrain:
            return False
        end = getattr(self.net, "pretrain_end", None)
        return end is None or int(end) == 0 or step < int(end)

    def random_pretrain_step(self, step: int) -> bool:
        """Whether pre-training step ``step`` inverts a random field (else ``G_F``'s own)."""
        source = self.cfg.loss.pretrain_source
        return source == "random" or (source == "both" and step % 2 == 0)

    def pretrain_step(self, batch: dict[str, Any], step: int, ctx: StepContext) -> dict[str, float]:
        """``G_B`` alone learns to invert a field ``D`` applied to the atlas:
        ``L_trans(D, G_B(l, l o D))``, ``D`` a random smooth field (``batch["pretrain_field"]``)
        or ``G_F``'s field on the batch's images (no gradient); logs the residual's mean length
        in voxels."""
        net = ctx.modules["generators"]
        atlas = batch["atlas"].expand(batch["image"].shape[0], *batch["atlas"].shape[1:])
        field = batch.get("pretrain_field")
        if field is None:
            with torch.no_grad(), ctx.autocast():
                field = net.forward_net(batch["image"], atlas).float()
        with ctx.autocast():
            moved = warp(atlas, field)
            disp_b = net.backward_net(atlas, moved)
        residual = L.transformation_cycle_residual(field, disp_b.float())
        loss = L.charbonnier(residual, self.cfg.loss.eps, self.cfg.loss.gamma).mean()
        info = ctx.optimize("generators", loss)
        return {
            "pretrain_trans": float(loss.detach()),
            "inversion_residual_vox": float(residual.detach().norm(dim=1).mean()),
            "loss": float(loss.detach()),
            **info,
        }

    def guard(self, net: torch.nn.Module) -> dict[str, float]:
        """The collapse guard: spread of ``G_F``'s fields over the probe images."""
        if self.probe is None:
            return {}
        device = next(net.parameters()).device
        probe = self.probe.to(device)
        atlas = self.data.atlas.image[None].float().to(device)
        atlas = atlas.expand(len(probe), *atlas.shape[1:])
        was_training = net.training
        net.eval()
        with torch.no_grad():
            fields = net.forward_net(probe, atlas)
        spread = field_spread(fields)
        logs = {
            "fwd_spread": spread,
            "fwd_length_vox": float(fields.norm(dim=1).mean()),
            "collapsed": float(spread < self.cfg.loss.collapse_threshold),
        }
        if self.check_fields is not None and net.backward_net is not None:
            inside = atlas[:1] > 0  # the atlas's content: outside it no image shows a field
            with torch.no_grad():
                logs.update(
                    {
                        "inversion_heldout_vox": inversion_residual(
                            net.backward_net, atlas, self.check_fields.to(device), inside
                        ),
                        "inversion_forward_vox": inversion_residual(
                            net.backward_net, atlas, fields.float(), inside
                        ),
                    }
                )
        net.train(was_training)
        return logs

    # -- TrainTask
    def modules(self) -> dict[str, torch.nn.Module]:
        mods: dict[str, torch.nn.Module] = {"generators": self.net}
        if self.disc is not None:
            mods["discriminator"] = self.disc
        return mods

    def optimizers(self, modules, lr: float) -> dict[str, torch.optim.Optimizer]:
        params: list[Any] = list(modules["generators"].parameters())
        backward = self.net.backward_net
        if self.cfg.model.backward_lr > 0 and backward is not None:
            own = {id(q) for q in backward.parameters()}
            params = [
                {"params": [q for q in params if id(q) not in own]},
                {"params": list(backward.parameters()), "lr": self.cfg.model.backward_lr},
            ]
        opts = {"generators": torch.optim.Adam(params, lr=lr)}
        if "discriminator" in modules:
            opts["discriminator"] = torch.optim.Adam(
                modules["discriminator"].parameters(), lr=self.cfg.gan.lr, betas=(0.5, 0.999)
            )
        return opts

    def make_batch(self, step: int, rank: int, generator: torch.Generator) -> dict[str, Any]:
        images = [self.data.images.sample(generator) for _ in range(self.cfg.loop.batch_size)]
        batch = {
            "image": torch.stack(images).float(),
            "atlas": self.data.atlas.image[None].float(),
            "atlas_onehot": self.onehot,
            "channels": self.channels,
        }
        if self.in_pretraining(step) and self.random_pretrain_step(step):
            batch["pretrain_field"] = self.pretrain_fields(step, len(images), generator)
        return batch

    def pretrain_fields(self, step: int, count: int, generator: torch.Generator) -> Tensor:
        """``count`` random smooth fields ``(count, ndim, *S)`` for a pre-training step: fresh
        ones from ``generator``, or from the fixed pool of ``loss.pretrain_pool`` fields."""
        w = self.cfg.loss
        if self.pool is None:
            return random_smooth_disp(
                tuple(self.cfg.data.shape), batch=count, max_disp=w.pretrain_disp,
                generator=generator, dtype=torch.float32,
            )  # fmt: skip
        index = torch.arange(step * count, (step + 1) * count) % len(self.pool)
        return self.pool[index]

    def training_step(self, batch: dict[str, Any], step: int, ctx: StepContext) -> dict[str, float]:
        pretraining = self.in_pretraining(step)
        if pretraining:
            logs = self.pretrain_step(batch, step, ctx)
        else:
            logs = self._step(batch, step, ctx)
        if (step + 1) % self.cfg.loop.log_every == 0:
            logs.update(self.guard(self.net))
            target = self.cfg.loss.pretrain_target
            if pretraining and target > 0 and "inversion_heldout_vox" in logs:
                worst = max(logs["inversion_heldout_vox"], logs["inversion_forward_vox"])
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    # every rank must end the pre-training at the same step
                    shared = torch.tensor([worst], device=self.net.pretrain_end.device)
                    torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
                    worst = float(shared)
                if worst <= target:  # G_B inverts unseen fields well enough: joint training next
                    self.net.pretrain_end.fill_(step + 1)
                    logs["pretrain_end"] = float(step + 1)
                    log.info("G_B pre-training ended at step %d (residual %.3f)", step + 1, worst)
        return logs

    def _step(self, batch: dict[str, Any], step: int, ctx: StepContext) -> dict[str, float]:
        """A joint step (both generators, and the discriminator with the GAN on)."""
        net = ctx.modules["generators"]
        image, atlas, onehot = batch["image"], batch["atlas"], batch["atlas_onehot"]
        batch_size = image.shape[0]
        atlas = atlas.expand(batch_size, *atlas.shape[1:])
        onehot = onehot.expand(batch_size, *onehot.shape[1:])
        warmup = in_warmup(self.cfg, step)
        cap = getattr(self.net, "cycle_grad_scale", None)
        norms: dict[str, list] | None = None
        if cap is not None and not warmup:
            norms = {"main": [], "cycle": []}
        with ctx.autocast():
            out = net(atlas, onehot, image, warmup, float(cap) if cap is not None else 1.0, norms)
        logs: dict[str, float] = {}
        fake_scores = None
        disc = ctx.modules.get("discriminator")
        if disc is not None:
            disc.requires_grad_(True)
            with ctx.autocast():
                scores = disc(torch.cat([image, out.warped.detach().to(image.dtype)]))
            d_loss = L.discriminator_loss(scores[:batch_size], scores[batch_size:])
            d_info = ctx.optimize("discriminator", d_loss)
            logs["disc"] = float(d_loss.detach())
            logs["disc_grad_norm"] = d_info["grad_norm"]
            disc.requires_grad_(False)  # the generator step must not move the discriminator
            with ctx.autocast():
                fake_scores = disc(out.warped)
        terms = generator_terms(
            self.cfg, out, atlas, onehot, image, batch["channels"], fake_scores, warmup
        )
        scales = getattr(self.net, "balance_scales", None)
        if scales is not None and not bool((scales > 0).any()):
            # the first step after the pre-training: measure each term once (kept in the checkpoint)
            scales.copy_(balance_scales(terms))
        loss = total_loss(self.cfg, terms, step, scales)
        info = ctx.optimize("generators", loss)
        if disc is not None:
            disc.requires_grad_(True)
        if norms is not None and norms["main"] and norms["cycle"]:
            logs["cycle_grad_scale"] = float(cap)  # the factor this step used
            cap.fill_(cycle_cap(self.cfg.loss.cycle_share, norms["main"][0], norms["cycle"][0]))
        logs.update({k: float(v.detach()) for k, v in terms.items()})
        logs["loss"] = float(loss.detach())
        logs.update(info)
        return logs


def inversion_residual(
    backward_net: torch.nn.Module, atlas: Tensor, fields: Tensor, mask: Tensor | None = None
) -> float:
    """Mean length (voxels) of ``G_B``'s inversion residual on ``fields``.

    Args:
        backward_net: ``G_B``, called as ``G_B(atlas, atlas o D)``.
        atlas: ``(1 or B, 1, *S)`` atlas image.
        fields: ``(B, ndim, *S)`` displacements ``D`` in voxels.
        mask: ``(1, 1, *S)`` bool, the voxels averaged over (``None``: all). The residual at
            ``t`` belongs to the warped atlas's voxel ``t``; the guard passes the atlas's own
            non-zero voxels, a fixed region that differs from the warped atlas's content only
            near its edges for fields of a few voxels.

    Returns:
        The mean over (masked) voxels and fields of ``|D + G_B(l, l o D) o (id + D)|``; NaN
        for an empty mask (no target is met by it).
    """
    atlas = atlas.expand(fields.shape[0], *atlas.shape[1:])
    disp_b = backward_net(atlas, warp(atlas, fields)).float()
    length = L.transformation_cycle_residual(fields, disp_b).norm(dim=1, keepdim=True)
    if mask is None:
        return float(length.mean())
    mask = mask.expand_as(length)
    return float(length[mask].mean()) if bool(mask.any()) else float("nan")


def cycle_cap(share: float, main_norm: float, cycle_norm: float) -> float:
    """The factor on the cycle terms' gradient into ``Delta_F`` for the next step: at most 1, and
    small enough that the capped cycle gradient is ``share`` times the gradient of the forward
    terms (similarity, smoothness, GAN) at ``Delta_F``."""
    if not math.isfinite(cycle_norm):
        return 0.0
    if cycle_norm <= 0:
        return 1.0
    return float(min(1.0, share * main_norm / cycle_norm))


def balance_scales(terms: dict[str, Tensor]) -> Tensor:
    """The ``(len(TERMS),)`` divisors of ``loss.balance = "initial"`` from the terms of the first
    joint step: each term's magnitude, except ``smooth``, which shares ``sim``'s divisor, so that
    the forward registration keeps the similarity / smoothness trade-off it was trained with
    (normalised on its own, the small smoothness term of a trained ``G_F`` gets hundreds of times
    its weight and flattens the field: measured in 3-D, field length 2.2 -> 0.2 voxels in 40
    steps). Terms not computed stay 0 (not scaled)."""
    scales = torch.zeros(len(TERMS))
    for name, value in terms.items():
        scales[TERMS.index(name)] = float(value.detach().abs().clamp_min(1e-8))
    if "smooth" in terms and "sim" in terms:
        scales[TERMS.index("smooth")] = scales[TERMS.index("sim")]
    return scales


def forward_start(
    cfg: LabelTransferConfig,
) -> tuple[dict[str, Any] | None, dict[str, Tensor] | None]:
    """Where ``G_F`` starts: ``(spec, weights)`` with ``spec`` the registration network of
    ``G_F`` (:class:`~medistill.labeltransfer.model.RegistrationGenerator`; ``None``: a
    VoxelMorph U-Net of ``model.enc`` / ``model.dec``) and ``weights`` its state dict (``None``:
    random).

    ``model.forward_registration``: the network and weights of a registration checkpoint or
    built-in model. ``model.forward_init``: the forward generator of a label-transfer checkpoint
    (a registration-network ``G_F`` there stays one here).

    Raises:
        InputError: an unreadable checkpoint, another ``ndim``, or another U-Net architecture.
    """
    m = cfg.model
    if m.forward_registration:
        return registration_generator(m.forward_registration, m.ndim, "model.forward_registration")
    if not m.forward_init:
        return None, None
    path = m.forward_init
    net, ckpt, other = load_model(path)
    spec = ckpt.get("forward_network")
    theirs = other.model
    if spec is None and (m.ndim, tuple(m.enc), tuple(m.dec)) != (
        theirs.ndim,
        tuple(theirs.enc),
        tuple(theirs.dec),
    ):
        raise InputError(
            f"model.forward_init {path}: its generator (ndim {theirs.ndim}, enc "
            f"{list(theirs.enc)}, dec {list(theirs.dec)}) differs from this run's (ndim "
            f"{m.ndim}, enc {list(m.enc)}, dec {list(m.dec)})"
        )
    return spec, net.forward_net.state_dict()


def registration_generator(
    name: str, ndim: int, option: str
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """``(spec, weights)`` of a registration checkpoint or built-in model ``name`` as a
    :class:`~medistill.labeltransfer.model.RegistrationGenerator` (``option`` names the setting
    in messages).

    Raises:
        InputError: an unreadable checkpoint or another ``ndim``.
    """
    from medistill.builtin import resolve_model
    from medistill.train import load_checkpoint

    ckpt = load_checkpoint(resolve_model(name), task="registration")
    with checkpoint_contents(name, "a registration network"):
        model = ckpt["config"]["model"]
        spec = {"role": ckpt["role"], "model": model}
        weights = {f"net.{k}": v.float() for k, v in ckpt["modules"]["model"].items()}
    if int(model.get("ndim", 3)) != ndim:
        raise InputError(
            f"{option} {name}: a {model.get('ndim')}-D registration network for a {ndim}-D "
            "label transfer"
        )
    return spec, weights


def check_config(cfg: LabelTransferConfig) -> None:
    """Consistency checks of a config before anything is built.

    Raises:
        InputError: on a shape that does not match ``model.ndim`` or is not a multiple of 16,
            an unknown smoothness penalty, or every term switched off.
    """
    shape = tuple(cfg.data.shape)
    if cfg.model.forward_init and cfg.model.forward_registration:
        raise InputError(
            "model.forward_init and model.forward_registration both start G_F: set only one"
        )
    if cfg.model.ndim not in (2, 3):
        raise InputError(f"model.ndim must be 2 or 3, got {cfg.model.ndim}")
    if len(shape) != cfg.model.ndim:
        raise InputError(f"data.shape {shape} does not have model.ndim={cfg.model.ndim} axes")
    if any(s % 16 or s < 16 for s in shape):
        raise InputError(f"data.shape {shape}: sizes must be multiples of 16 (U-Net downsampling)")
    if cfg.loss.smooth_penalty not in L.SMOOTH_PENALTIES:
        raise InputError(
            f"loss.smooth_penalty must be one of {L.SMOOTH_PENALTIES}, "
            f"got {cfg.loss.smooth_penalty!r}"
        )
    weights = [getattr(cfg.loss, t) for t in TERMS]
    if cfg.loss.cycle_ramp < 0 or cfg.loss.cycle_start < 0:
        raise InputError(
            f"loss.cycle_start and loss.cycle_ramp must be >= 0 steps, got "
            f"{cfg.loss.cycle_start}, {cfg.loss.cycle_ramp}"
        )
    if cfg.model.cycle_warp not in CYCLE_WARPS:
        raise InputError(
            f"model.cycle_warp must be one of {CYCLE_WARPS}, got {cfg.model.cycle_warp!r}"
        )
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise InputError(f"loss weights must be >= 0 with at least one > 0, got {weights}")
    if not uses_backward(cfg.loss) and cfg.loss.sim <= 0 and cfg.loss.gan <= 0:
        raise InputError("loss: the forward generator needs loss.sim > 0 or loss.gan > 0")
    if not cfg.loss.cycle_share >= 0:
        raise InputError(f"loss.cycle_share must be >= 0 (0: off), got {cfg.loss.cycle_share}")
    if not cfg.loss.pretrain_target >= 0:
        raise InputError(
            f"loss.pretrain_target must be >= 0 voxels (0: off), got {cfg.loss.pretrain_target}"
        )
    if cfg.loss.pretrain_target > 0 and not cfg.loss.backward_pretrain:
        raise InputError("loss.pretrain_target needs loss.backward_pretrain > 0 (its upper bound)")
    if not cfg.model.backward_lr >= 0:
        raise InputError(
            f"model.backward_lr must be >= 0 (0: loop.lr), got {cfg.model.backward_lr}"
        )
    if cfg.loss.pretrain_pool < 0:
        raise InputError(f"loss.pretrain_pool must be >= 0, got {cfg.loss.pretrain_pool}")
    if cfg.loss.backward_pretrain < 0 or cfg.loss.pretrain_disp < 0:
        raise InputError(
            "loss.backward_pretrain (steps) and loss.pretrain_disp (voxels) must be >= 0, got "
            f"{cfg.loss.backward_pretrain}, {cfg.loss.pretrain_disp}"
        )
    if cfg.loss.backward_pretrain and not uses_backward(cfg.loss):
        raise InputError("loss.backward_pretrain trains G_B: switch on a cycle term too")
    if cfg.loss.backward_pretrain > cfg.loop.steps:
        raise InputError(
            f"loss.backward_pretrain ({cfg.loss.backward_pretrain}) must be at most loop.steps "
            f"({cfg.loop.steps})"
        )


def train(
    cfg: LabelTransferConfig,
    out: PathLike,
    *,
    resume: bool = False,
    data: TransferData | None = None,
) -> dict[str, Any]:
    """Train LT-Net into ``out``.

    Writes ``out/last.pt`` (resumable state), ``out/model.pt`` (slim inference checkpoint with the
    atlas), ``out/config.yaml`` and ``out/log.jsonl``. Returns the final state.

    Args:
        cfg: the run's config.
        out: run folder.
        resume: continue from ``out/last.pt``.
        data: atlas and unlabelled images (default: built from ``cfg.data``).
    """
    from medistill.train import save_config

    check_config(cfg)
    out = Path(out)
    data = data if data is not None else build_data(cfg.data)
    if tuple(data.atlas.image.shape[1:]) != tuple(cfg.data.shape):
        raise InputError(
            f"atlas grid {tuple(data.atlas.image.shape[1:])} differs from data.shape "
            f"{tuple(cfg.data.shape)}"
        )
    torch.manual_seed(cfg.loop.seed)  # the initial weights depend on the seed alone
    task = LabelTransferTask(cfg, data)
    main_process = is_main_process()
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        log.info("label transfer data: %s", data.description)
    shape = (1, 1, *cfg.data.shape)
    state = Trainer(cfg.loop, out, resume=resume).fit(
        task,
        extra_state=lambda: checkpoint_meta(cfg, task.net, data.atlas),
        example_inputs=lambda: (torch.rand(shape), task.onehot, torch.rand(shape)),
    )
    if state and main_process:
        export_model(state, out / "model.pt")
    return state
