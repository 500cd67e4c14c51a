"""train / register / evaluate commands end to end on tiny runs, and their bad-input contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medistill.cli.main import main
from medistill.io import Image, save
from medistill.registration.config import RegistrationConfig, presets
from medistill.registration.demo import write_heldout
from medistill.train import load_checkpoint, load_config

TINY = [
    "--set",
    "data.subjects=3",
    "--set",
    "data.pairs=3",
    "--set",
    "loop.progress=false",
    "--set",
    "loop.checkpoint_every=2",
    "--set",
    "model.teacher_width=4",
]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    code = main(
        [
            "train",
            "teacher",
            "--config",
            "demo",
            "--out",
            str(root / "teacher"),
            "--set",
            "loop.steps=2",
            *TINY,
        ]
    )
    assert code == 0
    code = main(
        [
            "train",
            "student",
            "--config",
            "demo",
            "--out",
            str(root / "aldk"),
            "--set",
            "loop.steps=2",
            "--set",
            "distill.mode=aldk",
            "--set",
            f"distill.teacher={root / 'teacher' / 'model.pt'}",
            *TINY,
        ]
    )
    assert code == 0
    cfg = load_config(RegistrationConfig, "demo", presets=presets())
    pairs = write_heldout(root / "heldout", cfg, 2)
    return root, pairs


def test_teacher_resume_continues(runs, capsys):
    root, _ = runs
    assert load_checkpoint(root / "teacher" / "last.pt")["step"] == 2
    code, out, err = cli(
        capsys,
        "train",
        "teacher",
        "--config",
        "demo",
        "--out",
        root / "teacher",
        "--resume",
        "--set",
        "loop.steps=3",
        *TINY,
    )
    assert code == 0, err
    assert load_checkpoint(root / "teacher" / "last.pt")["step"] == 3
    lines = (root / "teacher" / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 3


def test_aldk_student_has_critic_and_cache(runs):
    root, _ = runs
    state = load_checkpoint(root / "aldk" / "last.pt")
    assert "critic" in state["modules"] and "critic" in state["optimizers"]
    assert (root / "aldk" / "flow_cache" / "flows.f16").exists()
    slim = load_checkpoint(root / "aldk" / "model.pt", task="registration")
    assert slim["role"] == "student" and "optimizers" not in slim


def test_register_writes_outputs_on_fixed_grid(runs, capsys, tmp_path):
    root, pairs = runs
    folder = pairs.parent
    code, out, err = cli(
        capsys,
        "register",
        "--model",
        root / "aldk" / "model.pt",
        "--fixed",
        folder / "test0.nii.gz",
        "--moving",
        folder / "test1.nii.gz",
        "--moving-labels",
        folder / "test1_seg.nii.gz",
        "--out",
        tmp_path,
    )
    assert code == 0, err
    import nibabel as nib

    fixed = nib.load(folder / "test0.nii.gz")
    for name in ("warped", "warped_labels", "disp_voxel", "disp_mm", "jacobian"):
        img = nib.load(tmp_path / f"{name}.nii.gz")
        assert img.shape[:3] == fixed.shape
        np.testing.assert_allclose(img.affine, fixed.affine, atol=1e-5)


def test_evaluate_summary(runs, capsys, tmp_path):
    root, pairs = runs
    code, out, err = cli(
        capsys,
        "evaluate",
        "--model",
        root / "teacher" / "model.pt",
        "--pairs",
        pairs,
        "--out",
        tmp_path,
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "dice_mean",
        "jaccard_mean",
        "hd95_mean",
        "folding_pct",
        "sdlogj",
        "seconds_per_pair",
        "params",
    ):
        assert key in summary
    assert summary["pairs"] == 2 and 0 < summary["dice_mean"] <= 1
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3


def _bad_csv(tmp_path, pairs):
    path = tmp_path / "bad.csv"
    path.write_text("fixed,moving\n" + "\n".join(pairs.read_text().splitlines()[1:]) + "\n")
    return path


@pytest.mark.parametrize(
    "case",
    [
        "csv_columns",
        "corrupt_ckpt",
        "foreign_ckpt",
        "missing_labels",
        "landmarks_outside",
        "dims",
        "mismatched_grids",
    ],
)
def test_bad_input_exit_2(runs, capsys, tmp_path, case):
    root, pairs = runs
    folder = pairs.parent
    model = root / "teacher" / "model.pt"
    fixed, moving = folder / "test0.nii.gz", folder / "test1.nii.gz"
    if case == "csv_columns":
        args = [
            "evaluate",
            "--model",
            model,
            "--pairs",
            _bad_csv(tmp_path, pairs),
            "--out",
            tmp_path,
        ]
    elif case in ("corrupt_ckpt", "foreign_ckpt"):
        bad = tmp_path / "bad.pt"
        if case == "corrupt_ckpt":
            bad.write_bytes(model.read_bytes()[:1000])
        else:
            torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
        args = ["register", "--model", bad, "--fixed", fixed, "--moving", moving, "--out", tmp_path]
    elif case == "missing_labels":
        args = [
            "register",
            "--model",
            model,
            "--fixed",
            fixed,
            "--moving",
            moving,
            "--moving-labels",
            folder / "nope_seg.nii.gz",
            "--out",
            tmp_path,
        ]
    elif case == "landmarks_outside":
        (tmp_path / "lm.txt").write_text("1 2 3\n500 1 1\n")
        csv = tmp_path / "lm.csv"
        csv.write_text(
            "fixed,moving,fixed_labels,moving_labels,fixed_landmarks,moving_landmarks\n"
            f"{fixed},{moving},{folder / 'test0_seg.nii.gz'},{folder / 'test1_seg.nii.gz'},"
            f"{tmp_path / 'lm.txt'},{tmp_path / 'lm.txt'}\n"
        )
        args = ["evaluate", "--model", model, "--pairs", csv, "--out", tmp_path / "o"]
    elif case == "mismatched_grids":
        labels = tmp_path / "other_seg.nii.gz"
        data = np.zeros((30, 30, 30), np.int32)
        data[10:20, 10:20, 10:20] = 1
        save(Image(data, np.diag([2.0, 2.0, 2.0, 1.0]), is_label=True), labels)
        args = [
            "register",
            "--model",
            model,
            "--fixed",
            fixed,
            "--moving",
            moving,
            "--moving-labels",
            labels,
            "--out",
            tmp_path,
        ]
    else:
        flat = tmp_path / "flat.nii.gz"
        save(Image(np.random.rand(40, 40).astype(np.float32)), flat)
        args = ["register", "--model", model, "--fixed", flat, "--moving", flat, "--out", tmp_path]
    code, out, err = cli(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medistill: error:"), err


def test_initial_weights_depend_on_the_seed_alone(tmp_path):
    """Two identical runs in the same process, with other random draws between them, give the
    same weights: the networks are built after seeding, not from whatever the global RNG holds."""
    weights = []
    for name, draws in (("a", 17), ("b", 5)):
        torch.rand(draws)  # move the global generator on
        args = ["train", "teacher", "--config", "demo", "--out", str(tmp_path / name)]
        assert main([*args, "--set", "loop.steps=2", *TINY]) == 0
        weights.append(load_checkpoint(tmp_path / name / "model.pt")["modules"]["model"])
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key


def test_half_resolution_student_trains_and_registers_on_the_fixed_grid(runs, capsys, tmp_path):
    root, pairs = runs
    folder = pairs.parent
    half = [*TINY, "--set", "loop.steps=2", "--set", "model.student_downsample=2"]
    code, out, err = cli(
        capsys, "train", "student", "--config", "demo", "--out", tmp_path / "half", *half
    )
    assert code == 0, err
    slim = load_checkpoint(tmp_path / "half" / "model.pt", task="registration")
    assert slim["config"]["model"]["student_downsample"] == 2
    code, out, err = cli(
        capsys,
        "register",
        "--model",
        tmp_path / "half" / "model.pt",
        "--fixed",
        folder / "test0.nii.gz",
        "--moving",
        folder / "test1.nii.gz",
        "--out",
        tmp_path / "reg",
    )
    assert code == 0, err
    import nibabel as nib

    fixed = nib.load(folder / "test0.nii.gz")
    disp = nib.load(tmp_path / "reg" / "disp_voxel.nii.gz")
    assert disp.shape[:3] == fixed.shape
    np.testing.assert_allclose(disp.affine, fixed.affine, atol=1e-5)
    bad = [*TINY, "--set", "model.student_downsample=3"]
    code, out, err = cli(
        capsys, "train", "student", "--config", "demo", "--out", tmp_path / "bad", *bad
    )
    assert code == 2 and "model.student_downsample must be one of (1, 2)" in err
    assert len(err.strip().splitlines()) == 1


def test_refine_starts_from_the_network_and_improves_similarity(runs, capsys, tmp_path):
    """--refine 0 is the network's result exactly; --refine N moves the field from there and
    the warped image matches the fixed image better (NCC)."""
    import nibabel as nib

    root, pairs = runs
    folder = pairs.parent
    common = [
        "register", "--model", root / "aldk" / "model.pt", "--fixed", folder / "test0.nii.gz",
        "--moving", folder / "test1.nii.gz",
    ]  # fmt: skip
    results = {}
    for n in (None, 0, 20):
        out = tmp_path / f"refine{n}"
        extra = [] if n is None else ["--refine", n]
        code, _, err = cli(capsys, *common, "--out", out, *extra)
        assert code == 0, err
        results[n] = {
            k: np.asarray(nib.load(out / f"{k}.nii.gz").dataobj) for k in ("disp_voxel", "warped")
        }
    assert np.array_equal(results[None]["disp_voxel"], results[0]["disp_voxel"])
    assert not np.allclose(results[None]["disp_voxel"], results[20]["disp_voxel"])
    fixed = np.asarray(nib.load(folder / "test0.nii.gz").dataobj)

    def ncc(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    assert ncc(fixed, results[20]["warped"]) > ncc(fixed, results[None]["warped"])
