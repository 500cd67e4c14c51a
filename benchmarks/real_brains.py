"""The real brains of ../shared/data/brain3d as the benchmarks score them (shared by the
registration and label-transfer result scripts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()
# FreeSurfer-conformed volumes (the VoxelMorph subject) are LIA with 1 mm voxels
LIA = np.array([[-1.0, 0, 0, 80], [0, 0, 1, -112], [0, -1, 0, 96], [0, 0, 0, 1]])


def write_real_brains(folder: Path) -> list[str]:
    """Write ``NAME.nii.gz`` and ``NAME_seg.nii.gz`` (2-class OASIS scheme: 1 CSF+GM, 2 WM) of
    the three real subjects into ``folder``; returns the names (``oasis_A``, ``oasis_B``, ``vxm``).

    The OASIS tissue maps are put on their image's grid through their own header; the VoxelMorph
    subject (no affine in its file) gets the LIA affine, and its aseg is mapped to CSF/GM/WM and
    then to the OASIS scheme.
    """
    from medistill.data import aseg_to_tissue, tissue_to_oasis
    from medistill.io import Image, check_same_grid, load, save

    folder.mkdir(parents=True, exist_ok=True)
    brain = SHARED / "brain3d"
    names = []
    for s in ("A", "B"):
        image = load(brain / f"oasis_{s}.nii.gz")
        labels = check_same_grid(image, load(brain / f"oasis_{s}_tissue.nii.gz", is_label=True))
        save(image, folder / f"oasis_{s}.nii.gz")
        save(labels, folder / f"oasis_{s}_seg.nii.gz")
        names.append(f"oasis_{s}")
    vol = load(brain / "vxm_subject.npz")
    seg = load(brain / "vxm_subject.npz", key="seg")
    save(Image(vol.data, LIA), folder / "vxm.nii.gz")
    oasis = np.asarray(tissue_to_oasis(aseg_to_tissue(seg.data))).astype(np.int32)
    save(Image(oasis, LIA, is_label=True), folder / "vxm_seg.nii.gz")
    names.append("vxm")
    return names
