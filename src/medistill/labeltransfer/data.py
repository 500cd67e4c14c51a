"""The one labelled atlas and the unlabelled images of LT-Net training, on a working grid.

Sources (:class:`~medistill.labeltransfer.config.DataConfig`):

- ``embedded``: the MNI152 template with its tissue labels on the working grid of
  :func:`medistill.data.embedded_subjects` (the undeformed, un-augmented subject) is the atlas;
  embedded training subjects are the unlabelled images (their labels are never used).
- ``labelmaps``: FreeSurfer-style label maps (e.g. the SynthSeg training maps); map
  ``atlas_index`` gives the atlas (a T1-like image synthesised once, and its labels), the other
  maps but the last ``heldout`` give unlabelled images, synthesised afresh at every draw; the
  held-out maps give labelled evaluation subjects.
- ``images``: real unlabelled images (folder or CSV) and an atlas image with its label map.

2-D runs use the middle axial plane (last array axis) of 3-D grids of size ``(H, W, H)``.
Every draw is a function of a :class:`torch.Generator`, so training batches are reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from medistill.data.synthesis import TISSUE_MEANS, random_deform, synth_t1_like
from medistill.errors import InputError
from medistill.io import Image, WorkingGrid, check_same_grid, load, normalize_percentile, save
from medistill.labeltransfer.config import DataConfig
from medistill.labeltransfer.model import Atlas
from medistill.seeding import stream

__all__ = [
    "LABEL_MODES",
    "SOURCES",
    "TISSUE_MEANS",
    "ImagePool",
    "MixedImages",
    "SynthImages",
    "TransferData",
    "atlas_images",
    "build_data",
    "heldout_subjects",
    "synth_t1_like",
    "write_eval_set",
]

SOURCES = ("embedded", "labelmaps", "images")
LABEL_MODES = ("keep", "aseg-tissue")


# ----------------------------------------------------------------------------- helpers
def _mid_slice(image: Image) -> Image:
    """The middle plane along the last array axis of a 3-D image, as a 2-D image."""
    from medistill.io.readers import affine_2d

    k = image.shape[2] // 2
    affine = image.affine.copy()
    affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * k
    return Image(
        np.ascontiguousarray(image.data[:, :, k]), affine_2d(affine), image.is_label, image.source
    )


def _grid3d(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    return shape if len(shape) == 3 else (shape[0], shape[1], shape[0])


def _tensor(image: Image, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.data)).to(dtype)[None]


def _deform(x: Tensor, max_disp: float, generator: torch.Generator, mode: str) -> Tensor:
    """Warp ``(1, *S)`` by a random cubic B-spline field (5 control points, +-max_disp voxels)."""
    return random_deform([(x, mode)], generator, max_disp=max_disp)[0]


def _merge(labels: np.ndarray | Tensor, mode: str):
    from medistill.data import aseg_to_tissue

    return aseg_to_tissue(labels) if mode == "aseg-tissue" else labels


# ----------------------------------------------------------------------------- image sources
class ImagePool:
    """Unlabelled images held in memory; a draw picks one and deforms it randomly.

    Args:
        images: ``(1, *S)`` float32 images in [0, 1] on one working-grid size.
        augment_disp: bound (voxels) of the random deformation of each draw (0: none).
    """

    def __init__(self, images: Sequence[Tensor], augment_disp: float = 0.0) -> None:
        if not images:
            raise InputError("ImagePool(): no unlabelled images")
        self.images = list(images)
        self.augment_disp = float(augment_disp)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, generator: torch.Generator) -> Tensor:
        """One unlabelled image ``(1, *S)``."""
        i = int(torch.randint(len(self.images), (1,), generator=generator))
        return _deform(self.images[i], self.augment_disp, generator, "linear")


class SynthImages:
    """Unlabelled images synthesised from label maps; a draw picks a map, deforms it randomly and
    synthesises a T1-like image (:func:`synth_t1_like`) from it.

    Args:
        label_maps: ``(1, *S)`` int64 label maps on one working-grid size.
        augment_disp: bound (voxels) of the random deformation of each draw (0: none).
    """

    def __init__(self, label_maps: Sequence[Tensor], augment_disp: float = 0.0) -> None:
        if not label_maps:
            raise InputError("SynthImages(): no label maps for unlabelled images")
        self.maps = list(label_maps)
        self.augment_disp = float(augment_disp)

    def __len__(self) -> int:
        return len(self.maps)

    def sample(self, generator: torch.Generator) -> Tensor:
        """One synthesised image ``(1, *S)``."""
        i = int(torch.randint(len(self.maps), (1,), generator=generator))
        labels = _deform(self.maps[i], self.augment_disp, generator, "nearest")
        return synth_t1_like(labels[None], generator)[0]


class MixedImages:
    """Draws from several sources in proportion to their sizes."""

    def __init__(self, sources: Sequence[ImagePool | SynthImages]) -> None:
        self.sources = [s for s in sources if s is not None]
        self.sizes = torch.tensor([float(len(s)) for s in self.sources])

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def sample(self, generator: torch.Generator) -> Tensor:
        k = int(torch.multinomial(self.sizes, 1, generator=generator))
        return self.sources[k].sample(generator)


@dataclass
class TransferData:
    """The atlas and the unlabelled images of a run.

    Attributes:
        atlas: the labelled atlas on the working grid.
        images: source of unlabelled images (``sample(generator) -> (1, *S)``).
        description: text for logs and reports.
    """

    atlas: Atlas
    images: ImagePool | SynthImages | MixedImages
    description: str = ""


def _atlas_from(image: Image, labels: Image) -> Atlas:
    lab = _tensor(labels, torch.int64)
    return Atlas(
        image=_tensor(image).clamp(0, 1),
        labels=lab,
        affine=image.affine.copy(),
        values=torch.unique(lab).long(),
    )


def atlas_images(atlas: Atlas) -> tuple[Image, Image]:
    """The atlas as :class:`~medistill.io.Image` objects (image, labels) on its working grid."""
    image = Image(atlas.image[0].numpy().astype(np.float32), atlas.affine, False, "atlas")
    labels = Image(atlas.labels[0].numpy().astype(np.int32), atlas.affine, True, "atlas labels")
    return image, labels


# ----------------------------------------------------------------------------- embedded
def _embedded(n: int, shape: Sequence[int], seed: int, split: str, **kw) -> list[tuple]:
    from medistill.data import embedded_subjects

    subjects = embedded_subjects(n, shape=_grid3d(shape), seed=seed, split=split, **kw)
    if len(shape) == 2:
        subjects = [(_mid_slice(a), _mid_slice(b)) for a, b in subjects]
    return subjects


def _embedded_data(cfg: DataConfig) -> TransferData:
    shape = tuple(cfg.shape)
    atlas_img, atlas_lab = _embedded(1, shape, cfg.seed, "train", max_disp=0.0, augment=False)[0]
    subjects = _embedded(cfg.subjects, shape, cfg.seed, "train")
    pool = ImagePool([_tensor(img) for img, _ in subjects], cfg.augment_disp)
    return TransferData(
        _atlas_from(atlas_img, atlas_lab),
        pool,
        f"embedded MNI152 atlas, {cfg.subjects} unlabelled embedded subjects",
    )


# ----------------------------------------------------------------------------- label maps
def _label_map_images(folder: Path, shape: Sequence[int]) -> list[Image]:
    """Label maps of a folder, skull-stripped (:func:`medistill.data.strip_extracerebral`), each
    on its own working grid around the brain (2-D: that grid's middle axial plane)."""
    from medistill.data import sources_from_folder, strip_extracerebral

    out = []
    for source in sources_from_folder(folder):
        labels = load(source.image, is_label=True)
        if labels.ndim != 3:
            raise InputError(f"{source.image}: label maps must be 3-D, got {labels.ndim}-D")
        labels = labels.with_data(strip_extracerebral(labels.data))
        grid = WorkingGrid.around(labels, _grid3d(shape))
        on_grid = grid.resample(labels)
        out.append(_mid_slice(on_grid) if len(shape) == 2 else on_grid)
    return out


def _split_maps(cfg: DataConfig, maps: list[Image]) -> tuple[int, list[int], list[int]]:
    n = len(maps)
    if not 0 <= cfg.heldout < n - 1:
        raise InputError(
            f"data.heldout must be in 0..{n - 2} for {n} label maps, got {cfg.heldout}"
        )
    heldout = list(range(n - cfg.heldout, n))
    if not 0 <= cfg.atlas_index < n - cfg.heldout:
        raise InputError(
            f"data.atlas_index must be in 0..{n - cfg.heldout - 1} (maps not held out), "
            f"got {cfg.atlas_index}"
        )
    train = [i for i in range(n - cfg.heldout) if i != cfg.atlas_index]
    if not train:
        raise InputError(f"{cfg.path}: no label map left for unlabelled training images")
    return cfg.atlas_index, train, heldout


def _synth_subject(labels: Image, seed: int, index: int, mode: str) -> tuple[Image, Image]:
    """A labelled subject: a T1-like image synthesised (fixed seed) from a label map."""
    gen = stream(seed, "labeltransfer-subject", index)
    raw = _tensor(labels, torch.int64)
    image = synth_t1_like(raw[None], gen)[0, 0].numpy()
    merged = np.asarray(_merge(labels.data.astype(np.int64), mode)).astype(np.int32)
    return (
        Image(image.astype(np.float32), labels.affine.copy(), False, f"{labels.source} (synth)"),
        Image(merged, labels.affine.copy(), True, labels.source),
    )


def _labelmap_data(cfg: DataConfig) -> TransferData:
    if not cfg.path:
        raise InputError("data.source 'labelmaps' needs data.path (a folder of label maps)")
    maps = _label_map_images(Path(cfg.path), cfg.shape)
    atlas_i, train, _ = _split_maps(cfg, maps)
    if cfg.atlas:
        atlas = _atlas_from_files(cfg)
    else:
        atlas = _atlas_from(*_synth_subject(maps[atlas_i], cfg.seed, atlas_i, cfg.labels))
    synth = SynthImages([_tensor(maps[i], torch.int64) for i in train], cfg.augment_disp)
    return TransferData(
        atlas,
        synth,
        f"label maps {cfg.path}: atlas map {atlas_i}, {len(train)} maps for unlabelled images",
    )


# ----------------------------------------------------------------------------- real images
def _atlas_from_files(cfg: DataConfig) -> Atlas:
    ndim = len(cfg.shape)
    if not cfg.atlas or not cfg.atlas_labels:
        raise InputError(f"data.source {cfg.source!r} needs data.atlas and data.atlas_labels")
    image = load(cfg.atlas, is_label=False, dims=ndim)
    labels = check_same_grid(image, load(cfg.atlas_labels, is_label=True, dims=ndim))
    labels = labels.with_data(np.asarray(_merge(labels.data.astype(np.int64), cfg.labels)))
    grid = WorkingGrid.around(image, tuple(cfg.shape))
    image = grid.resample(image.with_data(normalize_percentile(image.data)), cval=0.0)
    return _atlas_from(image, grid.resample(labels))


def _real_pool(location: str, shape: Sequence[int], augment: float) -> ImagePool:
    from medistill.data import VolumeDataset

    dataset = VolumeDataset(location, tuple(shape))
    images = []
    for k in range(len(dataset)):
        image = dataset[k]["image"]
        if image.dim() - 1 != len(shape):
            raise InputError(
                f"{dataset.sources[k].image}: image is {image.dim() - 1}-D, the run is "
                f"{len(shape)}-D"
            )
        images.append(image)
    return ImagePool(images, augment)


def build_data(cfg: DataConfig) -> TransferData:
    """The atlas and unlabelled images a config asks for (see :class:`DataConfig`).

    Raises:
        InputError: unknown source or label mode, missing paths, bad sizes, unreadable files.
    """
    shape = tuple(cfg.shape)
    if len(shape) not in (2, 3) or any(s % 16 for s in shape):
        raise InputError(f"data.shape must be 2 or 3 sizes, multiples of 16, got {shape}")
    if cfg.labels not in LABEL_MODES:
        raise InputError(f"data.labels must be one of {LABEL_MODES}, got {cfg.labels!r}")
    if cfg.source == "embedded":
        data = _embedded_data(cfg)
    elif cfg.source == "labelmaps":
        data = _labelmap_data(cfg)
    elif cfg.source == "images":
        if not cfg.path:
            raise InputError("data.source 'images' needs data.path (folder or CSV of images)")
        data = TransferData(
            _atlas_from_files(cfg),
            _real_pool(cfg.path, shape, cfg.augment_disp),
            f"atlas {cfg.atlas}, unlabelled images {cfg.path}",
        )
    else:
        raise InputError(f"data.source must be one of {SOURCES}, got {cfg.source!r}")
    if cfg.images:
        extra = _real_pool(cfg.images, shape, cfg.augment_disp)
        data.images = MixedImages([data.images, extra])
        data.description += f", plus {len(extra)} real images from {cfg.images}"
    return data


# ----------------------------------------------------------------------------- evaluation data
def heldout_subjects(cfg: DataConfig, n: int = 4) -> list[tuple[Image, Image]]:
    """Labelled evaluation subjects that training never saw, on their own grids.

    ``embedded``: the first ``n`` test-split subjects. ``labelmaps``: T1-like images synthesised
    (fixed seed) from the ``heldout`` maps (``n`` is ignored). ``images``: none (use your own).
    """
    if cfg.source == "embedded":
        return _embedded(n, tuple(cfg.shape), cfg.seed, "test")
    if cfg.source == "labelmaps":
        maps = _label_map_images(Path(cfg.path), cfg.shape)
        _, _, held = _split_maps(cfg, maps)
        return [_synth_subject(maps[i], cfg.seed + 1, i, cfg.labels) for i in held]
    return []


def write_eval_set(
    folder: Path, atlas: Atlas, subjects: Sequence[tuple[Image, Image]]
) -> tuple[Path, Path, Path]:
    """Write the atlas and labelled subjects as NIfTI with a CSV (columns ``image``, ``labels``).

    Returns:
        ``(images_csv, atlas_path, atlas_labels_path)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atlas_img, atlas_lab = atlas_images(atlas)
    save(atlas_img, folder / "atlas.nii.gz")
    save(atlas_lab, folder / "atlas_seg.nii.gz")
    lines = ["image,labels"]
    for i, (image, labels) in enumerate(subjects):
        save(image, folder / f"subject{i}.nii.gz")
        save(labels, folder / f"subject{i}_seg.nii.gz")
        lines.append(f"subject{i}.nii.gz,subject{i}_seg.nii.gz")
    (folder / "images.csv").write_text("\n".join(lines) + "\n")
    return folder / "images.csv", folder / "atlas.nii.gz", folder / "atlas_seg.nii.gz"
