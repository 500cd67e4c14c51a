"""Sources of training pairs on a working grid: embedded MNI subjects, images synthesised from
label maps (SynthMorph-style), or real images. Every pair is a function of a seed, so training
batches are reproducible and the teacher-flow cache can name a pair by its index.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from medistill.data.synthesis import random_deform
from medistill.errors import InputError
from medistill.registration.config import DataConfig
from medistill.seeding import stream

log = logging.getLogger(__name__)


def pair_generator(seed: int, index: int) -> torch.Generator:
    """The generator that defines fixed training pair ``index`` of a source seeded ``seed``."""
    return stream(seed, "registration-pairs", index)


class PairSource:
    """Pairs ``{"fixed", "moving"}`` (1, *S) float32 in [0, 1], plus ``fixed_labels`` and
    ``moving_labels`` (1, *S) int64 when the source has labels.

    Subclasses implement :meth:`sample`; :meth:`pair` is sample ``index`` of the fixed pair set.
    """

    shape: tuple[int, ...]
    has_labels: bool = True

    def __init__(self, seed: int, augment_disp: float) -> None:
        self.seed = seed
        self.augment_disp = augment_disp

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def sample(self, generator: torch.Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    #: random affine of the moving image: rotation bound (degrees), shift bound (voxels), scale
    #: bound (fraction); all 0 by default (set from ``data.augment_affine``)
    augment_affine: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def pair(self, index: int) -> dict[str, Tensor]:
        """Fixed training pair ``index`` (the same every time it is asked for)."""
        generator = pair_generator(self.seed, index)
        item = self.sample(generator)
        if any(self.augment_affine):
            item = self._affine(item, generator)
        return item

    def _affine(self, item: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """Move the moving image (and labels) by a random affine about the grid centre."""
        from medistill.spatial import affine_to_disp, rotation_matrix, warp

        rot_deg, shift, scale = self.augment_affine
        nd = self.ndim

        def uniform(*size: int) -> Tensor:
            return torch.rand(*size, generator=generator, dtype=torch.float64) * 2 - 1

        angle = float(uniform(1)) * np.radians(rot_deg)
        if nd == 3:  # about a random axis
            axis = torch.randn(3, generator=generator, dtype=torch.float64)
            rotvec = axis / axis.norm().clamp_min(1e-12) * angle
        else:
            rotvec = torch.tensor([angle], dtype=torch.float64)
        lin = rotation_matrix(rotvec[None])[0] @ torch.diag(1 + scale * uniform(nd))
        matrix = torch.cat([lin, (shift * uniform(nd))[:, None]], 1).float()[None]
        disp = affine_to_disp(matrix, self.shape)
        out = dict(item)
        out["moving"] = warp(item["moving"][None], disp)[0]
        if "moving_labels" in item:
            out["moving_labels"] = warp(item["moving_labels"][None], disp, mode="nearest")[0]
        return out

    def describe(self) -> str:
        """A text that changes whenever the pairs would change (for the flow-cache key)."""
        # "stream": pairs come from seeding.stream (a cache made with the older formula rebuilds)
        text = f"{type(self).__name__}:{self.seed}:{self.augment_disp}:{self.shape}:stream"
        if any(self.augment_affine):
            text += ":affine" + ",".join(f"{v:g}" for v in self.augment_affine)
        return text

    def _augment(self, item: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """Deform the moving image (and labels) by a random cubic B-spline (5 control points)."""
        keys = [k for k in ("moving", "moving_labels") if k in item]
        interps = {"moving": "linear", "moving_labels": "onehot"}
        moved = random_deform(
            [(item[k], interps[k]) for k in keys], generator, max_disp=self.augment_disp
        )
        return {**item, **dict(zip(keys, moved, strict=True))}


class SubjectPairs(PairSource):
    """Random ordered pairs of distinct subjects held in memory (images and labels on one grid)."""

    def __init__(
        self,
        images: list[Tensor],
        labels: list[Tensor] | None,
        *,
        seed: int = 0,
        augment_disp: float = 0.0,
        name: str = "subjects",
    ) -> None:
        super().__init__(seed, augment_disp)
        if len(images) < 2:
            raise InputError(f"{name}: need at least 2 subjects to make pairs, got {len(images)}")
        shapes = {tuple(x.shape) for x in images}
        if len(shapes) != 1:
            raise InputError(f"{name}: subjects are on different grids {sorted(shapes)}")
        self.images = images
        self.labels = labels
        self.has_labels = labels is not None
        self.shape = tuple(images[0].shape[1:])
        self.name = name

    def sample(self, generator: torch.Generator) -> dict[str, Tensor]:
        n = len(self.images)
        i = int(torch.randint(n, (1,), generator=generator))
        j = int(torch.randint(n - 1, (1,), generator=generator))
        j = j + 1 if j >= i else j
        item = {"fixed": self.images[i], "moving": self.images[j]}
        if self.labels is not None:
            item["fixed_labels"] = self.labels[i]
            item["moving_labels"] = self.labels[j]
        return self._augment(item, generator)

    def describe(self) -> str:
        return f"{super().describe()}:{self.name}:{len(self.images)}"


class SynthPairs(PairSource):
    """SynthMorph-style pairs: two deformed label maps turned into images of random contrast."""

    def __init__(
        self,
        label_maps: list[Tensor],
        *,
        seed: int = 0,
        max_disp: float = 4.0,
        name: str = "labelmaps",
    ) -> None:
        from medistill.data.synthesis import SynthPairGenerator, aseg_to_tissue

        super().__init__(seed, max_disp)
        # the same random contrast for both images: the teacher's loss is image correlation
        self.generator = SynthPairGenerator(
            label_maps,
            max_disp=max_disp,
            merge=aseg_to_tissue,
            distinct=len(label_maps) > 1,
            shared_contrast=True,
            synth_kwargs={"zero_background": True},  # skull-stripped look, like the real inputs
        )
        self.shape = tuple(label_maps[0].shape[-len(label_maps[0].shape[1:]) :])
        self.name = name
        self.count = len(label_maps)

    def sample(self, generator: torch.Generator) -> dict[str, Tensor]:
        item = self.generator.sample(generator)
        return {k: item[k] for k in ("fixed", "moving", "fixed_labels", "moving_labels")}

    def describe(self) -> str:
        return f"{super().describe()}:{self.name}:{self.count}:shared-contrast"


def _stack_images(subjects, normalize: bool = True) -> tuple[list[Tensor], list[Tensor] | None]:
    from medistill.io import normalize_percentile

    images, labels = [], []
    for image, lab in subjects:
        data = normalize_percentile(image.data) if normalize else image.data
        images.append(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None])
        if lab is not None:
            labels.append(torch.from_numpy(lab.data.astype(np.int64))[None])
    return images, (labels if len(labels) == len(images) else None)


def load_label_maps(
    folder: str | Path, shape: tuple[int, ...], *, strip: bool = True, holdout: bool = True
) -> list[Tensor]:
    """Label maps of a folder (NIfTI etc.) put on a common working grid around their content.

    With ``strip``, extra-cerebral labels (500-999: skull, scalp, ...) and the outer CSF label 24
    (which in the SynthSeg maps reaches down to the neck) become background first, so synthesised
    images look skull-stripped like the usual registration inputs. Each map is then
    resampled (nearest) onto its own isotropic RAS grid of ``shape`` around its non-zero voxels,
    so all maps share the grid size and orientation.

    Held out means held out: a folder of at least
    :data:`~medistill.data.heldout.MIN_LABEL_MAPS` NIfTI maps is split by
    :func:`~medistill.data.split_label_maps` and only its training part is used (for
    ``../shared/data/labelmaps``: ``training_seg_01..15``). ``holdout=False`` reads every map
    (a folder that holds training maps only).
    """
    from medistill.data import sources_from_folder, split_label_maps, strip_extracerebral
    from medistill.data.heldout import MIN_LABEL_MAPS, label_map_files
    from medistill.io import WorkingGrid, load

    folder = Path(folder)
    splittable = folder.is_dir() and len(label_map_files(folder)) >= MIN_LABEL_MAPS
    if splittable and holdout:
        files = split_label_maps(folder)[0]
    else:
        files = [s.image for s in sources_from_folder(folder)]
        if splittable:
            log.warning(
                "data.holdout false: training reads all %d label maps of %s; none of them may "
                "be an evaluation subject",
                len(files),
                folder,
            )
    maps = []
    for path in files:
        labels = load(path, is_label=True)
        if strip:
            labels = labels.with_data(strip_extracerebral(labels.data))
        grid = WorkingGrid.around(labels, shape)
        maps.append(torch.from_numpy(grid.resample(labels).data.astype(np.int64))[None])
    if len(maps) < 2:
        raise InputError(f"{folder}: need at least 2 label maps, found {len(maps)}")
    return maps


def build_pair_source(cfg: DataConfig, *, split: str = "train") -> PairSource:
    """The pair source a config asks for (see :class:`~.config.DataConfig`)."""
    source = _build_pair_source(cfg, split)
    bounds = tuple(float(v) for v in cfg.augment_affine)
    if len(bounds) != 3 or min(bounds) < 0:
        raise InputError(
            "data.augment_affine must be [rotation degrees, shift voxels, scale fraction], each "
            f">= 0, got {list(cfg.augment_affine)}"
        )
    source.augment_affine = bounds  # type: ignore[assignment]
    return source


def _build_pair_source(cfg: DataConfig, split: str) -> PairSource:
    shape = tuple(cfg.shape)
    if cfg.source == "embedded":
        from medistill.data.embedded import embedded_subjects

        subjects = embedded_subjects(cfg.subjects, shape=shape, seed=cfg.seed, split=split)
        images, labels = _stack_images(subjects, normalize=False)
        return SubjectPairs(
            images, labels, seed=cfg.seed, augment_disp=cfg.augment_disp, name=f"embedded-{split}"
        )
    if cfg.source == "labelmaps":
        if not cfg.path:
            raise InputError("data.source 'labelmaps' needs data.path (a folder of label maps)")
        return SynthPairs(
            load_label_maps(cfg.path, shape, holdout=cfg.holdout),
            seed=cfg.seed,
            max_disp=max(cfg.augment_disp, 1.0),
            name=str(cfg.path),
        )
    if cfg.source == "images":
        if not cfg.path:
            raise InputError("data.source 'images' needs data.path (folder, CSV or HDF5)")
        from medistill.data import VolumeDataset

        dataset = VolumeDataset(cfg.path, shape)
        images, labels = [], []
        for k in range(len(dataset)):
            item = dataset[k]
            images.append(item["image"])
            labels.append(item.get("labels"))
        labs = labels if all(x is not None for x in labels) else None
        return SubjectPairs(
            images, labs, seed=cfg.seed, augment_disp=cfg.augment_disp, name=str(cfg.path)
        )
    raise InputError(f"data.source must be 'embedded', 'labelmaps' or 'images', got {cfg.source!r}")
