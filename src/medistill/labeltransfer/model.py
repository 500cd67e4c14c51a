"""LT-Net networks: forward and backward generators, the image discriminator, checkpoints.

``G_F(l, u)`` predicts the forward field ``Delta_F`` that warps the atlas ``l`` onto the image ``u``
(``u_bar = l o Delta_F``); ``G_B(u_bar, l)`` predicts the backward field ``Delta_B`` that warps
``u_bar`` back onto the atlas (``l_bar = u_bar o Delta_B``). Both are VoxelMorph-style U-Nets
(:class:`medistill.nets.VoxelMorph`, whose call is ``net(fixed, moving)``), so
``G_F(l, u) = VoxelMorph(fixed=u, moving=l)`` and ``G_B(u_bar, l) = VoxelMorph(fixed=l,
moving=u_bar)``. Only ``G_F`` is needed to segment a new image. ``G_F`` may instead be a
registration network (:class:`RegistrationGenerator`: e.g. the built-in distilled student),
``model.forward_registration``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from medistill.errors import InputError
from medistill.labeltransfer.config import LOSS_TERMS, LabelTransferConfig, role_of, uses_backward
from medistill.nets import Cascade, VoxelMorph, build_registration_network, count_parameters
from medistill.spatial import compose, warp
from medistill.train import (
    checkpoint_contents,
    export_checkpoint,
    from_dict,
    load_checkpoint,
    to_dict,
)
from medistill.typing import PathLike

__all__ = [
    "TASK",
    "Atlas",
    "ImageDiscriminator",
    "LTNet",
    "LTNetOutput",
    "RegistrationGenerator",
    "build_model",
    "checkpoint_meta",
    "export_model",
    "load_model",
    "one_hot",
    "transfer_network",
]

TASK = "labeltransfer"
LEAKY_SLOPE = 0.2
CYCLE_WARPS = ("composed", "sequential")


def one_hot(labels: Tensor, values: Tensor) -> Tensor:
    """One-hot encoding of a label map over the given label values.

    Args:
        labels: ``(B, 1, *S)`` integer label map.
        values: ``(L,)`` label values, one channel each (voxels with other values are all-zero).

    Returns:
        ``(B, L, *S)`` float32, ``out[:, i] = (labels == values[i])``.
    """
    view = (1, -1) + (1,) * (labels.dim() - 2)
    return (labels == values.to(labels.device, labels.dtype).view(view)).float()


class LTNetOutput(NamedTuple):
    """What :class:`LTNet` returns (backward entries are ``None`` without ``G_B``).

    Attributes:
        disp: ``(B, ndim, *S)`` forward field ``Delta_F`` (voxels): atlas -> image.
        warped: ``(B, 1, *S)`` ``u_bar``, the atlas warped onto the image.
        warped_probs: ``(B, L, *S)`` ``u_bar_s``, the atlas one-hot labels warped linearly.
        disp_backward: ``(B, ndim, *S)`` backward field ``Delta_B``: ``u_bar`` -> atlas.
        cycled: ``(B, 1, *S)`` ``l_bar = u_bar o Delta_B`` (see ``cycle_warp`` of :class:`LTNet`).
        cycled_probs: ``(B, L, *S)`` ``l_bar_s = u_bar_s o Delta_B``.
        cycle_disp, cycle_probs: the ``Delta_F`` and ``u_bar_s`` the cycle branch used, when it
            used its own gradient tap (``grad_norms`` of :meth:`LTNet.forward`); else ``None``.
    """

    disp: Tensor
    warped: Tensor
    warped_probs: Tensor | None
    disp_backward: Tensor | None
    cycled: Tensor | None
    cycled_probs: Tensor | None
    cycle_disp: Tensor | None = None
    cycle_probs: Tensor | None = None


class GradTap(torch.autograd.Function):
    """Identity forward; backward records the norm of the incoming gradient in ``store`` (a
    list) and passes the gradient on multiplied by ``scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float, store: list) -> Tensor:  # noqa: D102
        ctx.scale, ctx.store = scale, store
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        ctx.store.append(float(grad.detach().float().norm()))
        return grad * ctx.scale, None, None


class RegistrationGenerator(nn.Module):
    """A registration network (:class:`~medistill.nets.Cascade`: affine stem and cascades) used
    as LT-Net's ``G_F`` or ``G_B``: ``forward(fixed, moving)`` returns its composed displacement
    (voxels, affine included), as a VoxelMorph generator would.

    Args:
        spec: ``{"role": teacher | student | voxelmorph, "model": <the registration config's
            model section>}`` (:func:`medistill.nets.build_registration_network`); kept as
            :attr:`spec` so that checkpoints can rebuild the network.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        if not isinstance(spec, dict) or "role" not in spec or "model" not in spec:
            raise InputError(
                f"RegistrationGenerator(): 'spec' needs 'role' and 'model', got {spec!r}"
            )
        self.spec = {"role": str(spec["role"]), "model": dict(spec["model"])}
        self.net = build_registration_network(self.spec["model"], self.spec["role"])

    @property
    def size_multiple(self) -> int:
        """Every spatial input size must be a multiple of this."""
        return self.net.size_multiple

    def forward(self, fixed: Tensor, moving: Tensor) -> Tensor:
        """``(B, 1, *S)`` fixed and moving -> ``(B, ndim, *S)`` displacement in voxels."""
        return self.net(fixed, moving).disp


class LTNet(nn.Module):
    """The two generators of LT-Net.

    Args:
        ndim: 2 or 3.
        enc, dec: widths of each VoxelMorph U-Net (see :class:`~medistill.nets.VoxelMorph`).
        backward: build the backward generator ``G_B`` (without it: forward-only registration).
        forward_spec: a :class:`RegistrationGenerator` spec: ``G_F`` is that registration
            network instead of a VoxelMorph U-Net of ``enc`` / ``dec``.
        backward_spec: the same for ``G_B``.
        cycle_warp: ``"composed"``: ``l_bar = l o compose(Delta_F, Delta_B)`` (the atlas
            interpolated once, like :class:`~medistill.nets.Cascade` does); ``"sequential"``:
            ``l_bar = (l o Delta_F) o Delta_B`` (interpolated twice). Equal up to interpolation.
    """

    def __init__(
        self,
        ndim: int = 3,
        enc: Sequence[int] = (16, 32, 32, 32),
        dec: Sequence[int] = (32, 32, 32, 32, 32, 16, 16),
        backward: bool = True,
        cycle_warp: str = "composed",
        forward_spec: dict[str, Any] | None = None,
        backward_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if cycle_warp not in CYCLE_WARPS:
            raise InputError(
                f"LTNet(): 'cycle_warp' must be one of {CYCLE_WARPS}, got {cycle_warp!r}"
            )
        self.cycle_warp = cycle_warp
        self.ndim = int(ndim)
        self.forward_net: nn.Module = (
            RegistrationGenerator(forward_spec)
            if forward_spec
            else VoxelMorph(ndim, enc=enc, dec=dec)
        )
        self.backward_net: nn.Module | None = None
        if backward:
            self.backward_net = (
                RegistrationGenerator(backward_spec)
                if backward_spec
                else VoxelMorph(ndim, enc=enc, dec=dec)
            )

    def forward(
        self,
        atlas: Tensor,
        atlas_onehot: Tensor | None,
        image: Tensor,
        detach_forward: bool = False,
        cycle_grad: float = 1.0,
        grad_norms: dict[str, list] | None = None,
    ) -> LTNetOutput:
        """Run the forward (and backward) correspondence.

        Args:
            atlas: ``(B, 1, *S)`` atlas image ``l`` (batch 1 is expanded to the image batch).
            atlas_onehot: ``(B, L, *S)`` one-hot atlas labels ``l_s``, or ``None`` (no label
                outputs). Warping it linearly is :func:`~medistill.spatial.warp_labels` with
                ``soft=True``.
            image: ``(B, 1, *S)`` unlabelled image ``u``; sizes multiples of 16.
            detach_forward: the backward branch (``Delta_B``, ``l_bar``, ``l_bar_s``) sees
                ``Delta_F`` and ``u_bar`` without gradient, so losses on it train ``G_B`` only.
            cycle_grad: with ``grad_norms``: the factor on the gradient that the backward branch
                sends into ``Delta_F`` (the cycle cap of ``loss.cycle_share``).
            grad_norms: ``{"main": [], "cycle": []}`` to tap ``Delta_F`` twice: once for the
                forward outputs (similarity, smoothness, GAN) and once for the backward branch,
                which then warps the atlas from its own tap; the backward pass appends the norm
                of each gradient reaching ``Delta_F`` (before ``cycle_grad``).

        Returns:
            :class:`LTNetOutput`.
        """
        batch = image.shape[0]
        if atlas.shape[0] != batch:
            atlas = atlas.expand(batch, *atlas.shape[1:])
        if atlas_onehot is not None and atlas_onehot.shape[0] != batch:
            atlas_onehot = atlas_onehot.expand(batch, *atlas_onehot.shape[1:])
        disp_f = self.forward_net(image, atlas)  # G_F(l, u)
        source = disp_f
        tapped = grad_norms is not None and self.backward_net is not None and not detach_forward
        if tapped:
            disp_f = GradTap.apply(source, 1.0, grad_norms["main"])
        warped = warp(atlas, disp_f)
        warped_probs = warp(atlas_onehot, disp_f) if atlas_onehot is not None else None
        if self.backward_net is None:
            return LTNetOutput(disp_f, warped, warped_probs, None, None, None)
        f_disp, f_warped, f_probs = disp_f, warped, warped_probs
        if detach_forward:
            f_disp, f_warped = disp_f.detach(), warped.detach()
            f_probs = warped_probs.detach() if warped_probs is not None else None
        elif tapped:
            f_disp = GradTap.apply(source, float(cycle_grad), grad_norms["cycle"])
            f_warped = warp(atlas, f_disp)
            f_probs = warp(atlas_onehot, f_disp) if atlas_onehot is not None else None
        disp_b = self.backward_net(atlas, f_warped)  # G_B(u_bar, l)
        if self.cycle_warp == "composed":
            # warp(warp(m, F), B) = warp(m, compose(F, B)): one interpolation of the atlas
            total = compose(f_disp, disp_b)
            cycled = warp(atlas, total)
            cycled_probs = warp(atlas_onehot, total) if atlas_onehot is not None else None
        else:
            cycled = warp(f_warped, disp_b)
            cycled_probs = warp(f_probs, disp_b) if f_probs is not None else None
        if tapped:
            return LTNetOutput(
                disp_f, warped, warped_probs, disp_b, cycled, cycled_probs, f_disp, f_probs
            )
        return LTNetOutput(disp_f, warped, warped_probs, disp_b, cycled, cycled_probs)


class ImageDiscriminator(nn.Module):
    """A small patch discriminator on images (least-squares GAN; no sigmoid, no normalisation).

    Convolutions with 4x4(x4) kernels, stride 2, padding 1, of ``widths`` channels, each followed
    by LeakyReLU 0.2, then a 3x3(x3) convolution to one channel: one score per patch.

    Args:
        ndim: 2 or 3.
        widths: widths of the stride-2 convolutions.
        in_channels: image channels.
    """

    def __init__(
        self, ndim: int = 3, widths: Sequence[int] = (8, 16, 32), in_channels: int = 1
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise InputError(f"ImageDiscriminator(): 'ndim' must be 2 or 3, got {ndim!r}")
        widths = tuple(int(w) for w in widths)
        if not widths or any(w < 1 for w in widths):
            raise InputError(f"ImageDiscriminator(): 'widths' must be positive ints, got {widths}")
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        layers: list[nn.Module] = []
        cin = int(in_channels)
        for width in widths:
            layers += [conv(cin, width, 4, stride=2, padding=1), nn.LeakyReLU(LEAKY_SLOPE)]
            cin = width
        layers.append(conv(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.ndim = ndim
        self.min_size = 2 ** len(widths)

    def forward(self, image: Tensor) -> Tensor:
        """Score ``image``.

        Args:
            image: ``(B, C, *S)``, every size ``>= min_size``.

        Returns:
            ``(B, 1, *S / 2^len(widths))`` patch scores (unbounded; 1 = real, 0 = warped atlas).
        """
        if image.dim() != self.ndim + 2 or min(image.shape[2:]) < self.min_size:
            raise InputError(
                f"ImageDiscriminator.forward(): 'image' must be (B, C, *S) with {self.ndim} "
                f"spatial sizes >= {self.min_size}, got {tuple(image.shape)}"
            )
        return self.net(image)


def build_model(
    cfg: LabelTransferConfig,
    forward_spec: dict[str, Any] | None = None,
    backward_spec: dict[str, Any] | None = None,
) -> LTNet:
    """The generators a config describes (``G_B`` only when a backward term is on; ``G_F`` /
    ``G_B`` the registration network of ``forward_spec`` / ``backward_spec`` when given, see
    :class:`RegistrationGenerator`)."""
    m = cfg.model
    net = LTNet(
        m.ndim,
        m.enc,
        m.dec,
        backward=uses_backward(cfg.loss),
        cycle_warp=m.cycle_warp,
        forward_spec=forward_spec,
        backward_spec=backward_spec,
    )
    if cfg.loss.balance != "none":
        # each term's magnitude at the first step after G_B's pre-training (0 = not yet
        # measured); a buffer, so it is saved with the weights and restored on --resume
        net.register_buffer("balance_scales", torch.zeros(len(LOSS_TERMS)))
    if cfg.loss.cycle_share > 0 and net.backward_net is not None:
        # the factor on the cycle terms' gradient into Delta_F (0 until first measured)
        net.register_buffer("cycle_grad_scale", torch.zeros(()))
    if cfg.loss.pretrain_target > 0 and net.backward_net is not None:
        # the step at which G_B's pre-training ended early (0: not ended)
        net.register_buffer("pretrain_end", torch.zeros((), dtype=torch.long))
    return net


def build_discriminator(cfg: LabelTransferConfig) -> ImageDiscriminator | None:
    """The image discriminator, or ``None`` when the GAN term is off."""
    if cfg.loss.gan <= 0:
        return None
    return ImageDiscriminator(cfg.model.ndim, cfg.gan.widths)


def transfer_network(net: LTNet) -> Cascade:
    """``G_F`` as a :class:`~medistill.nets.Cascade` ``(fixed=image, moving=atlas) -> disp``, so
    :func:`medistill.registration.apply.register_images` can run it on native grids."""
    return Cascade([net.forward_net])


class Atlas(NamedTuple):
    """The labelled atlas on the working grid the network was trained on.

    Attributes:
        image: ``(1, *S)`` float32 intensities in [0, 1].
        labels: ``(1, *S)`` int64 label map.
        affine: ``(4, 4)`` voxel-to-world matrix of the working grid (mm, RAS).
        values: ``(L,)`` label values (background 0 included when present).
    """

    image: Tensor
    labels: Tensor
    affine: np.ndarray
    values: Tensor


def checkpoint_meta(cfg: LabelTransferConfig, net: nn.Module, atlas: Atlas) -> dict[str, Any]:
    """What a label-transfer checkpoint stores besides weights (the atlas included; and the
    architecture of ``G_F`` / ``G_B`` when it is a :class:`RegistrationGenerator`)."""
    meta = {
        "task": TASK,
        "role": role_of(cfg),
        "config": to_dict(cfg),
        "params": count_parameters(net),
        "io": {
            "working_shape": list(cfg.data.shape),
            "grid": "isotropic RAS grid around the image's content (WorkingGrid.around)",
            "inputs": "atlas, image: (B, 1, *working_shape) float32, intensities clipped to "
            "their 0.5 / 99.5 percentiles and scaled to [0, 1]; atlas labels one-hot "
            "(B, L, *working_shape) in the order of atlas.values",
            "output": "forward displacement (B, ndim, *working_shape) in working-grid voxels, "
            "channel k along axis k; warped_atlas(x) = atlas(x + disp(x)); labels warped "
            "linearly on one-hot, then argmax",
        },
        "atlas": {
            "image": atlas.image.detach().cpu().float(),
            "labels": atlas.labels.detach().cpu().to(torch.int32),
            "affine": torch.as_tensor(np.asarray(atlas.affine, dtype=np.float64)),
            "values": atlas.values.detach().cpu().long(),
        },
    }
    forward = getattr(net, "forward_net", None)
    if isinstance(forward, RegistrationGenerator):
        meta["forward_network"] = forward.spec
    backward = getattr(net, "backward_net", None)
    if isinstance(backward, RegistrationGenerator):
        meta["backward_network"] = backward.spec
    return meta


def export_model(state: dict[str, Any], path: PathLike) -> None:
    """Write a slim inference checkpoint (generators, config, atlas; no optimiser state)."""
    export_checkpoint(state, path, "generators")


def load_model(path: PathLike) -> tuple[LTNet, dict[str, Any], LabelTransferConfig]:
    """LT-Net generators from a checkpoint, in eval mode on the CPU.

    Raises:
        InputError: missing, corrupt or foreign file, another task's checkpoint, or weights that
            do not fit the network the checkpoint's config describes.
    """
    ckpt = load_checkpoint(path, task=TASK)
    with checkpoint_contents(path, "usable LT-Net generators"):
        cfg = from_dict(LabelTransferConfig, ckpt["config"])
        net = build_model(cfg, ckpt.get("forward_network"), ckpt.get("backward_network"))
        net.load_state_dict(ckpt["modules"]["generators"])
    net.eval()
    return net, ckpt, cfg


def checkpoint_atlas(ckpt: dict[str, Any], path: PathLike = "checkpoint") -> Atlas:
    """The atlas stored in a label-transfer checkpoint.

    Raises:
        InputError: the checkpoint holds no atlas.
    """
    stored = ckpt.get("atlas")
    if not isinstance(stored, dict) or "image" not in stored:
        raise InputError(f"{path}: checkpoint holds no atlas; pass --atlas and --atlas-labels")
    return Atlas(
        image=stored["image"].float(),
        labels=stored["labels"].long(),
        affine=stored["affine"].numpy().astype(np.float64),
        values=stored["values"].long(),
    )
