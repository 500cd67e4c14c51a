"""The losses of LT-Net (Wang et al., CVPR 2020), each a small pure function.

Notation (METHODS.md part 2): atlas image ``l`` and its one-hot labels ``l_s``; unlabelled image
``u``; forward field ``Delta_F = G_F(l, u)``, ``u_bar = l o Delta_F``, ``u_bar_s = l_s o Delta_F``;
backward field ``Delta_B = G_B(u_bar, l)``, ``l_bar = u_bar o Delta_B``, ``l_bar_s = u_bar_s o
Delta_B``. Fields are ``(B, ndim, *S)`` in voxels with the backward-warping convention of
:mod:`medistill.spatial`; label maps are one-hot (or warped one-hot) probabilities ``(B, L, *S)``.

The seed writes the voxel-wise terms as sums over the image domain; here they are means over
voxels (and over components / label channels), so that the weights ``lambda1 = 10`` and
``lambda2 = 3`` keep their meaning at every grid size. Everything is differentiable and works in
2-D and 3-D.

Reference: S. Wang et al., "LT-Net: Label transfer by learning reversible voxel-wise
correspondence for one-shot medical image segmentation", CVPR 2020, arXiv:2003.07072.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.losses import lncc_loss, smoothness_loss
from medistill.spatial import compose

__all__ = [
    "EPS",
    "GAMMA",
    "anatomy_cycle_loss",
    "charbonnier",
    "difference_cycle_loss",
    "discriminator_loss",
    "generator_gan_loss",
    "gradient_norm_loss",
    "image_cycle_loss",
    "similarity_loss",
    "smooth_loss",
    "transformation_cycle_loss",
    "transformation_cycle_residual",
]

EPS = 1e-3
"""``epsilon`` of the robust penalty ``rho`` (not given by the seed; the usual value)."""
GAMMA = 0.45
"""``gamma`` of the robust penalty ``rho`` (not given by the seed; the usual value)."""
SMOOTH_PENALTIES = ("l2", "squared")


def _check_same(fn: str, a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise InputError(
            f"{fn}(): '{names[0]}' {tuple(a.shape)} and '{names[1]}' {tuple(b.shape)} "
            "must have the same shape"
        )
    if a.dim() not in (4, 5):
        raise InputError(
            f"{fn}(): expected (B, C, *S) with 2 or 3 spatial axes, got {tuple(a.shape)}"
        )


def _check_field(fn: str, name: str, disp: Tensor) -> None:
    nd = disp.dim() - 2
    if nd not in (2, 3) or disp.shape[1] != nd:
        raise InputError(f"{fn}(): '{name}' must be a field (B, ndim, *S), got {tuple(disp.shape)}")


def charbonnier(x: Tensor, eps: float = EPS, gamma: float = GAMMA) -> Tensor:
    """The robust penalty ``rho(x) = (x^2 + eps^2)^gamma``, element-wise.

    ``rho(0) = eps^(2 gamma)`` (about 0.002 for the defaults), and ``rho`` grows like
    ``|x|^(2 gamma)`` for ``|x| >> eps`` (sub-linear for ``gamma < 0.5``, robust to outliers).

    Args:
        x: any tensor.
        eps, gamma: parameters of ``rho`` (``eps > 0``, ``gamma > 0``).

    Returns:
        A tensor of ``x``'s shape.
    """
    if eps <= 0 or gamma <= 0:
        raise InputError(f"charbonnier(): need eps > 0 and gamma > 0, got {eps}, {gamma}")
    return (x.float().square() + eps * eps).pow(gamma)


def similarity_loss(image: Tensor, warped_atlas: Tensor, window: int = 9) -> Tensor:
    """``L_sim(u, u_bar)``: local normalised cross-correlation loss (1 - mean local CC^2).

    Args:
        image: ``(B, 1, *S)`` unlabelled image ``u``.
        warped_atlas: ``(B, 1, *S)`` atlas warped to it, ``u_bar``.
        window: box size in voxels.

    Returns:
        Scalar in [0, 1] (:func:`medistill.losses.lncc_loss`).
    """
    return lncc_loss(image, warped_atlas, window=window)


def gradient_norm_loss(disp: Tensor, eps: float = EPS) -> Tensor:
    """``sum_t ||grad Delta(t)||_2`` as the seed writes it, as a mean over voxels.

    The gradient at voxel ``t`` is the ``ndim x ndim`` matrix of forward differences of every
    component along every axis (the last row/column of voxels, which has no forward neighbour,
    is left out); its Frobenius norm is taken as ``sqrt(sum of squares + eps^2)`` so that the
    loss is differentiable at zero.

    Args:
        disp: ``(B, ndim, *S)`` displacement in voxels.
        eps: smoothing of the norm at 0.

    Returns:
        Scalar (voxels per voxel); ``eps`` for a constant field, ``sqrt(a^2 + eps^2)`` for a field
        whose only non-zero derivative is ``a`` everywhere.
    """
    _check_field("gradient_norm_loss", "disp", disp)
    nd = disp.dim() - 2
    crop = (slice(None), slice(None)) + (slice(0, -1),) * nd
    total = None
    for axis in range(nd):
        d = disp.float().diff(dim=2 + axis)
        # bring every difference onto the common (S - 1) grid
        index = list(crop)
        index[2 + axis] = slice(None)
        sq = d[tuple(index)].square().sum(dim=1)
        total = sq if total is None else total + sq
    return torch.sqrt(total + eps * eps).mean()


def smooth_loss(disp: Tensor, penalty: str = "squared") -> Tensor:
    """``L_smooth`` of one field.

    Args:
        disp: ``(B, ndim, *S)`` displacement in voxels.
        penalty: ``"squared"`` (VoxelMorph's mean squared forward differences,
            :func:`medistill.losses.smoothness_loss`; the usual reading of the seed's
            ``||grad Delta||_2``) or ``"l2"`` (the norm itself, :func:`gradient_norm_loss`).

    Returns:
        Scalar.
    """
    if penalty == "l2":
        return gradient_norm_loss(disp)
    if penalty == "squared":
        return smoothness_loss(disp)
    raise InputError(f"smooth_loss(): 'penalty' must be one of {SMOOTH_PENALTIES}, got {penalty!r}")


def image_cycle_loss(atlas: Tensor, cycled_atlas: Tensor) -> Tensor:
    """``L_cyc(l, l_bar) = ||l_bar - l||_1`` (mean absolute difference).

    Args:
        atlas: ``(B, 1, *S)`` atlas image ``l``.
        cycled_atlas: ``(B, 1, *S)`` ``l_bar = (l o Delta_F) o Delta_B``.

    Returns:
        Scalar, 0 when the cycle gives the atlas back.
    """
    _check_same("image_cycle_loss", atlas, cycled_atlas, ("atlas", "cycled_atlas"))
    return (cycled_atlas.float() - atlas.float()).abs().mean()


def transformation_cycle_residual(disp_f: Tensor, disp_b: Tensor) -> Tensor:
    """``r(t) = Delta_F(t) + Delta_B(t + Delta_F(t))`` (the seed's transformation cycle).

    ``Delta_B`` is sampled at ``t + Delta_F(t)`` by linear interpolation (border padding), i.e.
    ``r = compose(Delta_B, Delta_F)``. ``r = 0`` when ``Delta_B`` undoes ``Delta_F``.

    Args:
        disp_f: ``(B, ndim, *S)`` forward field ``Delta_F`` (voxels).
        disp_b: ``(B, ndim, *S)`` backward field ``Delta_B`` (voxels).

    Returns:
        ``(B, ndim, *S)`` residual in voxels.
    """
    _check_field("transformation_cycle_residual", "disp_f", disp_f)
    _check_same("transformation_cycle_residual", disp_f, disp_b, ("disp_f", "disp_b"))
    return compose(disp_b, disp_f)


def transformation_cycle_loss(
    disp_f: Tensor, disp_b: Tensor, eps: float = EPS, gamma: float = GAMMA
) -> Tensor:
    """``L_trans = sum_t rho(Delta_F(t) + Delta_B(t + Delta_F(t)))``, mean over voxels/components.

    Args:
        disp_f, disp_b: ``(B, ndim, *S)`` forward and backward fields in voxels.
        eps, gamma: parameters of ``rho`` (:func:`charbonnier`).

    Returns:
        Scalar, ``eps^(2 gamma)`` at best (exactly inverse fields).
    """
    return charbonnier(transformation_cycle_residual(disp_f, disp_b), eps, gamma).mean()


def anatomy_cycle_loss(labels: Tensor, cycled_labels: Tensor, eps: float = 1e-6) -> Tensor:
    """``L_anatomy_cyc = 1 - 2 sum l_s l_bar_s / (sum l_s^2 + sum l_bar_s^2)`` (soft Dice).

    The seed's formula is applied to every label channel (sums over the voxels of each batch
    element) and the losses are averaged over channels and batch.

    Args:
        labels: ``(B, L, *S)`` one-hot atlas labels ``l_s`` (the channels to score).
        cycled_labels: ``(B, L, *S)`` warped one-hot probabilities ``l_bar_s``.
        eps: added to the denominator (an empty channel in both maps scores 1 - 0).

    Returns:
        Scalar in [0, 1]; 0 for identical one-hot maps, 1 for disjoint ones.
    """
    _check_same("anatomy_cycle_loss", labels, cycled_labels, ("labels", "cycled_labels"))
    a = labels.float().flatten(2)
    b = cycled_labels.float().flatten(2)
    dice = 2 * (a * b).sum(2) / (a.square().sum(2) + b.square().sum(2) + eps)
    return 1 - dice.mean()


def difference_cycle_loss(
    labels: Tensor,
    warped_labels: Tensor,
    cycled_labels: Tensor,
    eps: float = EPS,
    gamma: float = GAMMA,
) -> Tensor:
    """``L_diff_cyc = sum_t rho(|l_s - u_bar_s| - |u_bar_s - l_bar_s|)``, mean over voxels/channels.

    Args:
        labels: ``(B, L, *S)`` one-hot atlas labels ``l_s``.
        warped_labels: ``(B, L, *S)`` forward-warped probabilities ``u_bar_s``.
        cycled_labels: ``(B, L, *S)`` cycled probabilities ``l_bar_s``.
        eps, gamma: parameters of ``rho`` (:func:`charbonnier`).

    Returns:
        Scalar, ``eps^(2 gamma)`` whenever ``l_bar_s = l_s`` (whatever ``u_bar_s`` is).
    """
    fn = "difference_cycle_loss"
    _check_same(fn, labels, warped_labels, ("labels", "warped_labels"))
    _check_same(fn, labels, cycled_labels, ("labels", "cycled_labels"))
    ls, us, cs = labels.float(), warped_labels.float(), cycled_labels.float()
    return charbonnier((ls - us).abs() - (us - cs).abs(), eps, gamma).mean()


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Least-squares GAN loss of the discriminator: real ``u`` -> 1, fake ``u_bar`` -> 0.

    ``0.5 * (mean((D(u) - 1)^2) + mean(D(u_bar)^2))`` (Mao et al., ICCV 2017), the
    discriminator's side of the seed's ``min_{G_F} max_D L_GAN``.

    Args:
        real_scores: ``D(u)``, any shape (patch scores).
        fake_scores: ``D(u_bar)`` with ``u_bar`` detached from the generator.

    Returns:
        Scalar; 0 for a perfect discriminator.
    """
    return 0.5 * ((real_scores.float() - 1).square().mean() + fake_scores.float().square().mean())


def generator_gan_loss(fake_scores: Tensor) -> Tensor:
    """The generator's least-squares GAN term ``E ||D(u_bar) - 1||^2`` (the seed's fake term).

    Args:
        fake_scores: ``D(u_bar)``, any shape, differentiable w.r.t. ``G_F``.

    Returns:
        Scalar; 0 when every warped atlas is scored as real.
    """
    return (fake_scores.float() - 1).square().mean()
