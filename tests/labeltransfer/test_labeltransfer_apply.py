"""Segmenting by label transfer: outputs on the image's own grid and affine, evaluation files, and
the bad-input contract of the command functions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from medistill.cli.labeltransfer import segment
from medistill.cli.main import main
from medistill.errors import InputError
from medistill.io import Image, load, resample_array, save
from medistill.labeltransfer import transfer_labels, transfer_network
from medistill.labeltransfer.data import ImagePool, TransferData
from medistill.labeltransfer.model import Atlas, LTNet
from medistill.labeltransfer.training import train
from medistill.metrics import dice
from medistill.nets import Cascade, VoxelMorph
from medistill.train import from_dict, load_checkpoint, save_checkpoint, to_dict
from tests.utils import oblique_affine

SIZE = 32
AFFINE = np.array([[2.0, 0, 0, -31.0], [0, 2.0, 0, -35.0], [0, 0, 2.0, -29.0], [0, 0, 0, 1.0]])


def ellipsoid_atlas() -> tuple[Image, Image]:
    """A 3-D 32^3 atlas (RAS, 2 mm): nested ellipsoids labelled 1..3, intensities 0.3/0.6/0.9."""
    idx = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"), -1).astype(float)
    r = np.sqrt((((idx - 15.5) / np.array([11.0, 13.0, 10.0])) ** 2).sum(-1))
    labels = np.zeros((SIZE,) * 3, dtype=np.int32)
    labels[r < 1.0] = 1
    labels[r < 0.75] = 2
    off = np.sqrt((((idx - [12, 18, 15]) / 3.5) ** 2).sum(-1))
    labels[off < 1.0] = 3
    image = np.array([0.0, 0.3, 0.6, 0.9], dtype=np.float32)[labels]
    return Image(image, AFFINE, False, "atlas"), Image(labels, AFFINE, True, "atlas labels")


def zero_flow_model(ndim: int = 3) -> Cascade:
    """A VoxelMorph whose flow layer outputs exactly zero (identity transform)."""
    net = VoxelMorph(ndim, enc=(4, 8, 8, 8), dec=(8, 8, 8, 8, 8, 4, 4))
    with torch.no_grad():
        net.flow.weight.zero_()
        net.flow.bias.zero_()
    return Cascade([net]).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 3-D LT-Net checkpoint (1 step on the ellipsoid atlas) with its flow layer zeroed."""
    root = tmp_path_factory.mktemp("lt")
    atlas, labels = ellipsoid_atlas()
    data = TransferData(
        Atlas(
            torch.from_numpy(atlas.data)[None],
            torch.from_numpy(labels.data.astype(np.int64))[None],
            AFFINE,
            torch.arange(4),
        ),
        ImagePool([torch.from_numpy(atlas.data)[None]]),
    )
    from medistill.labeltransfer import LabelTransferConfig

    d = to_dict(LabelTransferConfig())
    d["model"].update(ndim=3, enc=[4, 8, 8, 8], dec=[8, 8, 8, 8, 8, 4, 4])
    d["gan"]["widths"] = [4, 8]
    d["data"]["shape"] = [SIZE] * 3
    d["loss"]["window"] = 5
    d["loop"].update(steps=1, progress=False, threads=1)
    train(from_dict(LabelTransferConfig, d), root / "run", data=data)
    ckpt = load_checkpoint(root / "run" / "model.pt")
    weights = ckpt["modules"]["generators"]
    weights["forward_net.flow.weight"].zero_()
    weights["forward_net.flow.bias"].zero_()
    save_checkpoint(root / "model.pt", {k: v for k, v in ckpt.items() if k != "format"})
    save(atlas, root / "atlas.nii.gz")
    save(labels, root / "atlas_seg.nii.gz")
    return root


def oblique_grid(shape, spacing=(1.5, 2.5, 2.0), angle=0.4) -> np.ndarray:
    """An oblique LIA-like affine whose centre voxel sits at the atlas' centre."""
    affine = oblique_affine(spacing=spacing, angle=angle)
    centre = AFFINE[:3, :3] @ np.full(3, (SIZE - 1) / 2) + AFFINE[:3, 3]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def shifted(image: Image, t_mm) -> Image:
    """The same voxels placed elsewhere in world space."""
    affine = image.affine.copy()
    affine[:3, 3] += np.asarray(t_mm, dtype=float)
    return Image(image.data, affine, image.is_label, image.source)


@pytest.mark.parametrize("interp", ["linear", "nearest"])
def test_translated_copy_gets_the_atlas_labels_exactly(interp):
    atlas, labels = ellipsoid_atlas()
    image = shifted(atlas, [6.0, -4.0, 3.0])  # centre-of-mass alignment recovers this exactly
    result = transfer_labels(
        zero_flow_model(), atlas, labels, image, shape=(SIZE,) * 3, interp=interp
    )
    assert result.labels.shape == image.shape
    assert np.array_equal(result.labels.affine, image.affine)
    assert np.array_equal(result.labels.data, labels.data)
    assert result.labels.is_label and result.labels.data.dtype == np.int32


def test_labels_on_an_oblique_grid_follow_world_space():
    atlas, labels = ellipsoid_atlas()
    shape = (36, 30, 34)
    affine = oblique_grid(shape)
    image = Image(resample_array(atlas.data, AFFINE, affine, shape, order=1), affine, False, "obl")
    result = transfer_labels(
        zero_flow_model(), atlas, labels, image, shape=(SIZE,) * 3, initial="none"
    )
    assert result.labels.shape == shape and np.array_equal(result.labels.affine, affine)
    expected = resample_array(labels.data, AFFINE, affine, shape, order=0)
    scores = dice(result.labels.data, expected, labels=[1, 2, 3])
    assert min(scores.values()) > 0.9, scores


def test_two_dimensional_transfer():
    atlas, labels = ellipsoid_atlas()
    a2 = Image(atlas.data[:, :, 16], AFFINE, False, "a2")
    l2 = Image(labels.data[:, :, 16], AFFINE, True, "l2")
    image = shifted(a2, [4.0, -2.0, 0.0])
    result = transfer_labels(zero_flow_model(2), a2, l2, image, shape=(SIZE, SIZE))
    assert result.labels.shape == (SIZE, SIZE)
    assert np.array_equal(result.labels.data, l2.data)


def test_segment_writes_labels_on_the_image_grid(checkpoint, tmp_path):
    atlas, labels = ellipsoid_atlas()
    shape = (28, 30, 26)
    affine = oblique_grid(shape, spacing=(2.0, 1.5, 3.0), angle=0.3)
    image = Image(resample_array(atlas.data, AFFINE, affine, shape), affine, False, "img")
    save(image, tmp_path / "image.nii.gz")
    for kwargs in (
        {},
        {"atlas": checkpoint / "atlas.nii.gz", "atlas_labels": checkpoint / "atlas_seg.nii.gz"},
    ):
        out = tmp_path / "seg.nii.gz"
        segment(model=checkpoint / "model.pt", out=out, image=tmp_path / "image.nii.gz", **kwargs)
        written = load(out, is_label=True)
        assert written.shape == shape
        assert np.allclose(written.affine, affine, atol=1e-5)
        assert set(np.unique(written.data)) <= {0, 1, 2, 3}
        assert (
            dice(
                written.data,
                resample_array(labels.data, AFFINE, affine, shape, order=0),
                labels=[1, 2],
            ).get(2)
            > 0.9
        )
        out.unlink()
    assert not any(p.name.startswith(".seg") for p in tmp_path.iterdir())  # no temporary left


def test_evaluate_writes_metrics_and_summary(checkpoint, tmp_path, capsys):
    atlas, labels = ellipsoid_atlas()
    rows = ["image,labels"]
    for i, t in enumerate(([3.0, 0.0, -2.0], [-4.0, 2.0, 2.0])):
        save(shifted(atlas, t), tmp_path / f"s{i}.nii.gz")
        save(shifted(labels, t), tmp_path / f"s{i}_seg.nii.gz")
        rows.append(f"s{i}.nii.gz,s{i}_seg.nii.gz")
    (tmp_path / "images.csv").write_text("\n".join(rows) + "\n")
    args = ["--model", checkpoint / "model.pt", "--images-csv", tmp_path / "images.csv"]
    assert main(["evaluate", *map(str, args), "--out", str(tmp_path / "ev")]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["images"] == 2 and summary["dice_mean"] == pytest.approx(1.0)
    assert summary["task"] == "labeltransfer" and set(summary["dice_per_label"]) == {"1", "2", "3"}
    with (tmp_path / "ev" / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["image"] for r in table] == ["s0.nii.gz", "s1.nii.gz"]
    assert {"dice_mean", "dice_1", "dice_2", "dice_3"} <= set(table[0])
    assert json.loads(capsys.readouterr().out)["dice_mean"] == pytest.approx(1.0)


def test_bad_inputs_raise_one_line_input_errors(checkpoint, tmp_path):
    atlas, labels = ellipsoid_atlas()
    model = checkpoint / "model.pt"
    save(atlas, tmp_path / "image.nii.gz")
    # atlas and labels on different grids
    save(Image(labels.data[:, :, :30], AFFINE, True), tmp_path / "small_seg.nii.gz")
    # a label map with non-integer values
    save(Image(labels.data + 0.5, AFFINE, False), tmp_path / "frac_seg.nii.gz")
    # an image of another dimensionality
    save(Image(atlas.data[:, :, 16], AFFINE, False), tmp_path / "flat.nii.gz")
    cases = [
        (
            dict(atlas=checkpoint / "atlas.nii.gz", atlas_labels=tmp_path / "small_seg.nii.gz"),
            tmp_path / "image.nii.gz",
            "grid",
        ),
        (
            dict(atlas=checkpoint / "atlas.nii.gz", atlas_labels=tmp_path / "frac_seg.nii.gz"),
            tmp_path / "image.nii.gz",
            "non-integer",
        ),
        ({}, tmp_path / "flat.nii.gz", "3-D"),
        (dict(atlas=checkpoint / "atlas.nii.gz"), tmp_path / "image.nii.gz", "together"),
    ]
    for kwargs, image, match in cases:
        with pytest.raises(InputError, match=match) as err:
            segment(model=model, out=tmp_path / "o.nii.gz", image=image, **kwargs)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "o.nii.gz").exists()
    net = zero_flow_model()
    frac = Image(labels.data.astype(np.float32) + 0.5, AFFINE, True, "frac")
    with pytest.raises(InputError, match="non-integer"):
        transfer_labels(net, atlas, frac, atlas, shape=(SIZE,) * 3)
    coarse = Image(labels.data, AFFINE * np.array([1.5, 1.5, 1.5, 1.0])[:, None], True, "coarse")
    with pytest.raises(InputError, match="grid does not match"):
        transfer_labels(net, atlas, coarse, atlas, shape=(SIZE,) * 3)
    with pytest.raises(InputError, match="2-D"):
        flat = Image(atlas.data[:, :, 0], AFFINE, False, "flat")
        transfer_labels(net, atlas, labels, flat, shape=(SIZE,) * 3)


def test_foreign_checkpoint_is_rejected(tmp_path):
    save_checkpoint(tmp_path / "reg.pt", {"task": "registration", "modules": {}})
    with pytest.raises(InputError, match="expected 'labeltransfer'"):
        segment(model=tmp_path / "reg.pt", out=tmp_path / "o.nii.gz", image=tmp_path / "x")


def test_transfer_network_wraps_the_forward_generator():
    net = LTNet(2, enc=(4, 8, 8, 8), dec=(8, 8, 8, 8, 8, 4, 4))
    cascade = transfer_network(net)
    x, y = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    out = net(x, None, y)  # atlas x, image y
    assert torch.allclose(cascade(y, x).disp, out.disp)  # (fixed=image, moving=atlas)
    assert out.disp_backward.shape == (1, 2, 32, 32) and out.warped_probs is None


def test_command_line_wiring(checkpoint, tmp_path, capsys):
    """``medistill segment IMAGE``, ``evaluate --images-csv`` and ``train labeltransfer`` reach the
    label-transfer code through the one command line; bad input exits 2 with one line."""
    from medistill.cli.main import main

    atlas, labels = ellipsoid_atlas()
    moved = shifted(atlas, [3.0, 0.0, -2.0])
    save(moved, tmp_path / "s0.nii.gz")
    save(shifted(labels, [3.0, 0.0, -2.0]), tmp_path / "s0_seg.nii.gz")
    model = str(checkpoint / "model.pt")
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", "--model", model, "--out", str(out), str(tmp_path / "s0.nii.gz")]) == 0
    written = load(out, is_label=True)
    assert np.allclose(written.affine, moved.affine) and written.shape == moved.shape
    (tmp_path / "images.csv").write_text("image,labels\ns0.nii.gz,s0_seg.nii.gz\n")
    args = ["evaluate", "--model", model, "--images-csv", str(tmp_path / "images.csv")]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["dice_mean"] == 1.0
    capsys.readouterr()
    # a label-transfer checkpoint without --images-csv; a 2-D image for a 3-D model
    assert main(["evaluate", "--model", model, "--out", str(tmp_path / "e2")]) == 2
    save(Image(atlas.data[:, :, 16], AFFINE, False), tmp_path / "flat.nii.gz")
    flat = ["segment", "--model", model, "--out", str(tmp_path / "o.nii.gz")]
    assert main([*flat, str(tmp_path / "flat.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("medistill: error:") for line in err)
    assert not (tmp_path / "o.nii.gz").exists()
    run = tmp_path / "run"
    train = ["train", "labeltransfer", "--config", "demo-2d", "--out", str(run)]
    steps = ["--set", "loop.steps=2", "--set", "loop.progress=false", "--set", "data.subjects=4"]
    assert main([*train, *steps, "--set", "loss.cycle_start=1"]) == 0
    assert load_checkpoint(run / "model.pt")["task"] == "labeltransfer"
