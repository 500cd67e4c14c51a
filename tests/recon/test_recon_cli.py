"""The recon command functions end to end (through a local Typer app, as the CLI will call them):
reconstruct from k-space or images, evaluate, the bad-input contract, and the demo."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from medistill.cli import recon as commands
from medistill.cli import registration as dispatch
from medistill.errors import InputError
from medistill.io import Image, load, save
from medistill.metrics import psnr
from medistill.recon.kspace import fft2, simulate
from medistill.recon.masks import make_mask
from medistill.recon.model import load_model
from tests.recon.test_recon_training import SIZE, phantom

app = typer.Typer()
app.command("train")(dispatch.train)  # the real `train`, which hands recon roles to train_recon
app.command("reconstruct")(commands.reconstruct)
app.command("evaluate")(dispatch.evaluate)  # the real `evaluate`: the task registry
app.command("demo")(commands.demo_recon)
runner = CliRunner()

TINY = ["--set", "model.cascades=2", "--set", "model.channels=8", "--set", "model.sr_channels=8"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for i in range(3):
        save(Image(phantom(rng)), data / f"p{i}.nii.gz")
    files = ["--set", "data.source=files", "--set", f"data.paths=[{data}]"]
    for role in ("recon-teacher", "sr-teacher"):
        result = invoke(
            "train",
            role,
            "--config",
            "test",
            "--out",
            root / role,
            "--set",
            "loop.steps=2",
            *files,
            *TINY,
        )
        assert result.exit_code == 0, result.output
    volume = np.stack([phantom(rng) for _ in range(3)], axis=-1)  # (32, 32, 3)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = (-10, 5, 2)
    save(Image(3.0 * volume, affine), root / "vol.nii.gz")
    return root


def test_train_writes_checkpoint(runs):
    ckpt = load_model(runs / "recon-teacher" / "model.pt")
    assert ckpt.role == "recon-teacher" and ckpt.mask.shape == (SIZE,)
    result = invoke(
        "train",
        "recon-teacher",
        "--config",
        "test",
        "--out",
        runs / "x",
        "--set",
        "model.nonsense=1",
    )
    assert isinstance(result.exception, InputError)
    assert "unknown key 'model.nonsense'" in str(result.exception)


def test_reconstruct_image_keeps_grid_and_simulates_the_input(runs):
    out, zf = runs / "rec.nii.gz", runs / "zf.nii.gz"
    model = runs / "recon-teacher" / "model.pt"
    result = invoke(
        "reconstruct",
        "--model",
        model,
        "--image",
        runs / "vol.nii.gz",
        "--out",
        out,
        "--save-input",
        zf,
    )
    assert result.exit_code == 0, result.output
    src, rec, low = load(runs / "vol.nii.gz"), load(out), load(zf)
    assert rec.shape == src.shape == low.shape
    np.testing.assert_allclose(rec.affine, src.affine)
    # the saved input is the zero-filled image of the model's mask, in the input's units
    mask = load_model(model).mask
    plane = src.data[:, :, 1] / src.data.max()
    sim = simulate(torch.from_numpy(plane), mask).zero_filled.numpy() * src.data.max()
    np.testing.assert_allclose(low.data[:, :, 1], sim, atol=1e-4)
    assert psnr(rec.data, src.data) > 10


def test_reconstruct_from_kspace_layouts_agree_and_full_mask_is_exact(runs, tmp_path):
    model = runs / "recon-teacher" / "model.pt"
    img = np.stack([phantom(np.random.default_rng(i)) for i in range(2)])  # (2, 32, 32)
    kc = fft2(torch.from_numpy(img), "centered").numpy().astype(np.complex64)
    ku = np.fft.fft2(img, norm="ortho").astype(np.complex64)
    mask = make_mask(SIZE, 4, seed=9)
    np.save(tmp_path / "kc.npy", kc)
    np.save(tmp_path / "ku.npy", ku)
    np.save(tmp_path / "mc.npy", mask.astype(np.uint8))
    np.save(tmp_path / "mu.npy", np.fft.ifftshift(mask).astype(np.float32))
    np.save(tmp_path / "full.npy", np.ones(SIZE, np.uint8))
    r1 = invoke(
        "reconstruct",
        "--model",
        model,
        "--kspace",
        tmp_path / "kc.npy",
        "--mask",
        tmp_path / "mc.npy",
        "--out",
        tmp_path / "c.nii.gz",
    )
    r2 = invoke(
        "reconstruct",
        "--model",
        model,
        "--kspace",
        tmp_path / "ku.npy",
        "--mask",
        tmp_path / "mu.npy",
        "--layout",
        "uncentered",
        "--out",
        tmp_path / "u.nii.gz",
    )
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    c, u = load(tmp_path / "c.nii.gz").data, load(tmp_path / "u.nii.gz").data
    assert c.shape == (SIZE, SIZE, 2)  # slices on the last axis
    np.testing.assert_allclose(c, u, atol=1e-5)
    r3 = invoke(
        "reconstruct",
        "--model",
        model,
        "--kspace",
        tmp_path / "kc.npy",
        "--mask",
        tmp_path / "full.npy",
        "--out",
        tmp_path / "f.nii.gz",
    )
    assert r3.exit_code == 0
    np.testing.assert_allclose(load(tmp_path / "f.nii.gz").data, np.moveaxis(img, 0, -1), atol=1e-5)


@pytest.mark.parametrize(
    "case,match",
    [
        ("real", "must be complex"),
        ("shape", "does not fit"),
        ("nocentre", "not sampled"),
        ("nan", "NaN"),
        ("sr", "super-resolution"),
        ("neither", "either --kspace"),
        ("nomask", "needs --mask"),
        ("suffix", ".nii or .nii.gz"),
    ],
)
def test_reconstruct_bad_input_is_one_line_input_error(runs, tmp_path, case, match):
    k = np.ones((SIZE, SIZE), np.complex64)
    mask = make_mask(SIZE, 4).astype(np.uint8)
    model = runs / ("sr-teacher" if case == "sr" else "recon-teacher") / "model.pt"
    if case == "real":
        k = k.real.copy()
    elif case == "shape":
        mask = np.ones(SIZE - 2, np.uint8)
    elif case == "nocentre":
        mask[SIZE // 2] = 0
    elif case == "nan":
        k[3, 4] = np.nan
    np.save(tmp_path / "k.npy", k)
    np.save(tmp_path / "m.npy", mask)
    out = tmp_path / ("o.png" if case == "suffix" else "o.nii.gz")
    args = ["reconstruct", "--model", model, "--out", out]
    if case != "neither":
        args += ["--kspace", tmp_path / "k.npy"]
    if case != "nomask":
        args += ["--mask", tmp_path / "m.npy"]
    result = invoke(*args)
    assert isinstance(result.exception, InputError), result.output
    assert match in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_evaluate_writes_per_volume_metrics_and_summary(runs, tmp_path):
    vol = runs / "vol.nii.gz"
    save(Image(phantom(np.random.default_rng(5))), tmp_path / "slice.nii.gz")
    model = runs / "recon-teacher" / "model.pt"
    result = invoke(
        "evaluate",
        "--model",
        model,
        "--images",
        vol,
        "--images",
        tmp_path / "slice.nii.gz",
        "--out",
        tmp_path / "eval",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    for key in ("psnr_mean", "ssim_mean", "nmse_mean", "ms_per_slice", "params"):
        assert np.isfinite(summary[key])
    assert summary["params"] == load_model(model).params and summary["volumes"] == 2
    with open(tmp_path / "eval" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["volume"] for r in rows] == ["vol", "slice"] and rows[0]["slices"] == "3"
    # the zero-filled PSNR of the 2-D file, computed by hand with the model's mask
    target = load(tmp_path / "slice.nii.gz").data
    target = target / target.max()
    zf = simulate(torch.from_numpy(target), load_model(model).mask).zero_filled.numpy()
    assert float(rows[1]["input_psnr"]) == pytest.approx(psnr(zf, target), abs=1e-3)
    sr = invoke(
        "evaluate",
        "--model",
        runs / "sr-teacher" / "model.pt",
        "--images",
        vol,
        "--out",
        tmp_path / "sr",
        "--acceleration",
        "4",
    )
    assert isinstance(sr.exception, InputError)


def test_demo_writes_report_and_checkpoints(tmp_path):
    from medistill.recon.demo import run_demo

    summary = run_demo(
        tmp_path / "demo",
        config="test",
        overrides=["loop.steps=1", "data.slices=4", "model.cascades=1", "model.sr_channels=8"],
        sr=False,
        n_test=2,
        latency_sizes=(32,),
    )
    for name in ("recon_teacher", "recon_student", "recon_kd"):
        assert (tmp_path / "demo" / f"{name}.pt").is_file()
    html = (tmp_path / "demo" / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64" in html and "zero-filled" in html
    assert [r["model"] for r in summary["rows"]][0].startswith("zero-filled")
    assert len(summary["rows"]) == 7  # zero-filled + teacher + 4 students + the 2x control
    # the equal-compute control trains for KD's total: twice loop.steps
    from medistill.train import load_checkpoint

    control = load_checkpoint(tmp_path / "demo" / "recon_student_2x.pt", task="recon")
    plain = load_checkpoint(tmp_path / "demo" / "recon_student.pt", task="recon")
    assert control["step"] == 2 * plain["step"] == 2
    assert load_checkpoint(tmp_path / "demo" / "recon_teacher.pt", task="recon")["step"] == 2
    # the second table: the same held-out slices with their contrast inverted, scored alike
    inverted = summary["rows_inverted"]
    assert [r["model"] for r in inverted] == [r["model"] for r in summary["rows"]]
    pairs = zip(summary["rows"], inverted, strict=True)
    assert all(r["psnr_inverted_mean"] == i["psnr_mean"] for r, i in pairs)
    assert "contrast inverted" in html
    from medistill.recon.augment import invert_foreground

    plain = sorted((tmp_path / "demo" / "heldout").glob("*.nii.gz"))
    other = sorted((tmp_path / "demo" / "heldout_inverted").glob("*.nii.gz"))
    assert [p.name for p in plain] == [p.name for p in other] and len(plain) == 2
    a = torch.from_numpy(load(plain[0]).data.astype(np.float32))[None, None]
    b = load(other[0]).data
    np.testing.assert_allclose(b, invert_foreground(a)[0, 0].numpy(), atol=1e-6)
    # inside the brain dark became bright: the two contrasts anti-correlate there
    inside = a[0, 0].numpy() > 0.2
    assert np.corrcoef(a[0, 0].numpy()[inside], b[inside])[0, 1] < -0.5
