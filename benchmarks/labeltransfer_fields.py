"""What the forward field of trained label-transfer runs does on held-out images.

For every run folder (``model.pt`` of ``medistill train labeltransfer``) and every image of a
held-out set written by ``labeltransfer_results.py`` (``<out>/heldout/images.csv``, images on the
atlas's working grid), prints the mean length of ``Delta_F`` (voxels), its spread over the image
(sd of the length across voxels), the LNCC loss of the warped atlas against the image (and of
the unwarped atlas), and, for LT-Net runs, the mean length of the transformation-cycle residual
``Delta_F + Delta_B(x + Delta_F)``. A forward field whose length is the same on every image is
not registering the images.

    python benchmarks/labeltransfer_fields.py --heldout runs/lt2d_long/heldout \
        runs/lt2d_long/forward runs/lt2d_long/ltnet
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from medistill.errors import InputError
from medistill.io import load
from medistill.labeltransfer import losses as L
from medistill.labeltransfer.model import checkpoint_atlas, load_model


def main() -> int:
    try:
        return fields()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def fields() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding model.pt")
    parser.add_argument("--heldout", type=Path, required=True, help="folder with images.csv")
    args = parser.parse_args()
    table = args.heldout / "images.csv"
    if not table.exists():
        print(f"skipped: {table} not found")
        return 0
    with table.open() as f:
        images = [args.heldout / row["image"] for row in csv.DictReader(f)]
    heads = ("|F| vox", "sd", "LNCC", "unreg", "cycle")
    print(f"{'run':28s} {'image':18s} " + " ".join(f"{h:>8s}" for h in heads))
    for run in args.runs:
        net, ckpt, _ = load_model(run / "model.pt")
        atlas = checkpoint_atlas(ckpt).image[None].float()
        for path in images:
            image = torch.from_numpy(load(path).data.astype("float32"))[None, None]
            if image.shape != atlas.shape:
                raise InputError(
                    f"{path}: grid {tuple(image.shape[2:])} is not the atlas's working grid"
                )
            with torch.inference_mode():
                out = net(atlas, None, image)
            length = out.disp.norm(dim=1)
            cycle = "-"
            if out.disp_backward is not None:
                residual = L.transformation_cycle_residual(out.disp, out.disp_backward)
                cycle = f"{residual.norm(dim=1).mean().item():.3f}"
            print(
                f"{run.name:28s} {path.name:18s} {length.mean().item():8.2f} "
                f"{length.std().item():8.2f} {L.similarity_loss(image, out.warped).item():8.3f} "
                f"{L.similarity_loss(image, atlas).item():8.3f} {cycle:>8s}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
