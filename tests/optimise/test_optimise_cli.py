"""``register`` / ``evaluate --method optimise`` on the embedded MNI brain moved in world space,
and the bad-input contract of the method options (exit 2, one line, nothing written)."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from medistill.cli.main import main
from medistill.data.embedded import mni_atlas
from medistill.io import Image, save
from medistill.metrics import dice

FAST = ["--config", "fast", "--set", "deformable.iterations=[20]"]


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _moved(image: Image, shift_mm, angle: float) -> np.ndarray:
    """The image's affine moved by a rotation about the brain centre and a translation."""
    c, s = np.cos(angle), np.sin(angle)
    rigid = np.eye(4)
    rigid[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    centre = image.index_to_world((np.asarray(image.shape)[None] - 1) / 2)[0]
    rigid[:3, 3] = centre - rigid[:3, :3] @ centre + np.asarray(shift_mm)
    return rigid @ image.affine


@pytest.fixture(scope="module")
def brains(tmp_path_factory):
    """Two copies of the MNI brain and labels; the second placed 9 mm and 6 degrees away."""
    root = tmp_path_factory.mktemp("brains")
    img, lab = mni_atlas(2)
    save(img, root / "fixed.nii.gz")
    save(lab, root / "fixed_seg.nii.gz")
    moved = _moved(img, (9.0, -5.0, 4.0), np.radians(6))
    save(Image(img.data, moved, False, "m"), root / "moving.nii.gz")
    save(Image(lab.data, moved, True, "ml"), root / "moving_seg.nii.gz")
    with open(root / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fixed", "moving", "fixed_labels", "moving_labels"])
        w.writerow(["fixed.nii.gz", "moving.nii.gz", "fixed_seg.nii.gz", "moving_seg.nii.gz"])
        w.writerow(["moving.nii.gz", "fixed.nii.gz", "moving_seg.nii.gz", "fixed_seg.nii.gz"])
    return root


def test_register_optimise_recovers_a_world_space_move(brains, tmp_path, capsys):
    out = tmp_path / "reg"
    code, stdout, err = cli(
        capsys,
        "register", "--method", "optimise", "--fixed", brains / "fixed.nii.gz",
        "--moving", brains / "moving.nii.gz", "--moving-labels", brains / "moving_seg.nii.gz",
        "--out", out, *FAST,
    )  # fmt: skip
    assert code == 0, err
    names = {"warped", "warped_labels", "disp_voxel", "disp_mm", "jacobian"}
    assert {p.name.split(".")[0] for p in out.iterdir()} == names
    fixed_lab = nib.load(brains / "fixed_seg.nii.gz")
    warped = nib.load(out / "warped_labels.nii.gz")
    assert np.allclose(warped.affine, fixed_lab.affine)
    overlap = dice(np.asarray(warped.dataobj), np.asarray(fixed_lab.dataobj), labels=[1, 2, 3])
    # world space alone (no registration) leaves the tissue classes far apart
    moved = nib.load(brains / "moving_seg.nii.gz")
    assert not np.allclose(moved.affine, fixed_lab.affine)
    assert np.mean(list(overlap.values())) > 0.85
    assert "optimisation" in stdout


def test_evaluate_optimise_writes_metrics(brains, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = cli(
        capsys,
        "evaluate", "--method", "optimise", "--pairs", brains / "pairs.csv", "--out", out,
        *FAST,
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 2
    assert summary["method"] == "optimise"
    assert summary["dice_mean"] > 0.85
    assert summary["folding_pct"] < 0.5
    assert (out / "metrics.csv").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "optimise", "--model", "x.pt"], "needs no --model"),
        (["--method", "optimise", "--refine", "5"], "--refine"),
        (["--model", "x.pt", "--refine", "-1"], "--refine must be"),
        (["--method", "simplex"], "--method must be"),
        (["--model", "nonesuch-model"], "no such checkpoint file"),
        (["--method", "optimise", "--set", "deformable.lr=-1"], "deformable.lr"),
        (["--method", "optimise", "--set", "deformable.levels=[3]"], "deformable.levels"),
        (["--method", "optimise", "--config", "nonesuch"], "no such file or preset"),
    ],
)
def test_bad_method_options_exit_2_with_one_line_and_no_output(
    brains, tmp_path, capsys, extra, message
):
    out = tmp_path / "never"
    code, _, err = cli(
        capsys,
        "register", "--fixed", brains / "fixed.nii.gz", "--moving", brains / "moving.nii.gz",
        "--out", out, *extra,
    )  # fmt: skip
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_labels_on_another_grid_are_refused(brains, tmp_path, capsys):
    lab = nib.load(brains / "moving_seg.nii.gz")
    small = np.asarray(lab.dataobj)[:-3]
    nib.save(nib.Nifti1Image(small, lab.affine), tmp_path / "small.nii.gz")
    out = tmp_path / "never"
    code, _, err = cli(
        capsys,
        "register", "--method", "optimise", "--fixed", brains / "fixed.nii.gz",
        "--moving", brains / "moving.nii.gz", "--moving-labels", tmp_path / "small.nii.gz",
        "--out", out, *FAST,
    )  # fmt: skip
    assert code == 2
    assert "small.nii.gz" in err
    assert not out.exists()


def test_evaluate_reports_tre_from_landmarks(brains, tmp_path, capsys):
    """The moving image is the fixed one with a moved header, so a landmark has the same voxel
    index in both: after registration the TRE is small, far below the world-space offset."""
    points = "40 50 40\n60 70 50\n50 60 30\n"
    (brains / "fixed_lm.txt").write_text(points)
    (brains / "moving_lm.txt").write_text(points)
    csv_path = tmp_path / "lm.csv"
    csv_path.write_text(
        "fixed,moving,fixed_labels,moving_labels,fixed_landmarks,moving_landmarks\n"
        f"{brains}/fixed.nii.gz,{brains}/moving.nii.gz,{brains}/fixed_seg.nii.gz,"
        f"{brains}/moving_seg.nii.gz,{brains}/fixed_lm.txt,{brains}/moving_lm.txt\n"
    )
    out = tmp_path / "eval"
    code, _, err = cli(
        capsys, "evaluate", "--method", "optimise", "--pairs", csv_path, "--out", out, *FAST
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tre_mean"] < 3.0  # mm; the header moved the brain by about 11 mm


def test_bad_outputs_and_images_exit_2_before_any_work(brains, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    img = nib.load(brains / "fixed.nii.gz")
    data = np.asarray(img.dataobj, dtype=np.float32)
    nan = data.copy()
    nan[10, 10, 10] = np.nan
    nib.save(nib.Nifti1Image(nan, img.affine), tmp_path / "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros_like(data), img.affine), tmp_path / "zero.nii.gz")
    cases = [
        (["--out", a_file], "exists and is not a folder"),
        (["--out", a_file / "below"], "is a file, not a folder"),
        (["--out", ""], "--out is empty"),
        (["--out", tmp_path / "o1", "--fixed", tmp_path / "nan.nii.gz"], "NaN or Inf"),
        (["--out", tmp_path / "o2", "--moving", tmp_path / "zero.nii.gz"], "is constant"),
    ]
    for extra, message in cases:
        args = ["register", "--method", "optimise", "--fixed", brains / "fixed.nii.gz",
                "--moving", brains / "moving.nii.gz", *FAST]  # fmt: skip
        # later options win: --fixed / --moving / --out of the case replace the defaults
        code, _, err = cli(capsys, *args, *extra)
        assert code == 2, (extra, err)
        assert message in err and len(err.strip().splitlines()) == 1
    assert a_file.read_text() == "keep me"
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_cohort_registration_writes_a_folder_per_pair_and_resumes(brains, tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["register", "--method", "optimise", "--pairs", brains / "pairs.csv", "--out", out,
            *FAST]  # fmt: skip
    code, stdout, err = cli(capsys, *args)
    assert code == 0, err
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["fixed__moving", "moving__fixed"]
    assert (out / "fixed__moving" / "warped_labels.nii.gz").exists()
    assert "registered 2 pair(s)" in stdout
    code, stdout, _ = cli(capsys, *args)  # everything done: nothing is registered again
    assert code == 0 and "registered 0 pair(s)" in stdout and "2 already done" in stdout
    import shutil

    shutil.rmtree(out / "moving__fixed")  # as if killed during that pair
    code, stdout, _ = cli(capsys, *args)
    assert code == 0 and "registered 1 pair(s)" in stdout
    assert sorted(p.name for p in out.iterdir()) == folders


def test_atlas_cohort_and_conflicting_options(brains, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    import shutil

    shutil.copy(brains / "moving.nii.gz", folder / "subj1.nii.gz")
    out = tmp_path / "atlas"
    code, _, err = cli(
        capsys, "register", "--method", "optimise", "--atlas", brains / "fixed.nii.gz",
        "--images", folder, "--out", out, *FAST,
    )  # fmt: skip
    assert code == 0, err
    assert (out / "fixed__subj1" / "warped.nii.gz").exists()
    for extra in (
        ["--pairs", brains / "pairs.csv", "--fixed", brains / "fixed.nii.gz"],
        ["--atlas", brains / "fixed.nii.gz"],
        [],
    ):
        code, _, err = cli(capsys, "register", "--method", "optimise", "--out",
                           tmp_path / "never", *extra)  # fmt: skip
        assert code == 2 and len(err.strip().splitlines()) == 1, (extra, err)
        assert not (tmp_path / "never").exists()


def test_atlas_cohort_reads_the_atlas_once_and_again_when_it_changes(
    brains, tmp_path, capsys, monkeypatch
):
    import shutil

    import medistill.io as mio

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("subj1", "subj2", "subj3"):
        shutil.copy(brains / "moving.nii.gz", folder / f"{name}.nii.gz")
    atlas = tmp_path / "atlas.nii.gz"
    shutil.copy(brains / "fixed.nii.gz", atlas)
    reads: list[str] = []
    real_load = mio.load

    def counting_load(path, *args, **kwargs):
        reads.append(str(path))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(mio, "load", counting_load)
    out = tmp_path / "atlas_out"
    args = ["register", "--method", "optimise", "--atlas", atlas, "--images", folder, "--out",
            out, "--outputs", "warped", *FAST]  # fmt: skip
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert sum(r.endswith("atlas.nii.gz") for r in reads) == 1  # three pairs, one read
    assert sum(r.endswith(".nii.gz") and "subj" in r for r in reads) == 3
    # the same pair registered alone gives the same warped image
    code, _, err = cli(capsys, "register", "--method", "optimise", "--fixed", atlas, "--moving",
                       folder / "subj2.nii.gz", "--out", tmp_path / "alone", "--outputs",
                       "warped", *FAST)  # fmt: skip
    assert code == 0, err
    cohort = nib.load(out / "atlas__subj2" / "warped.nii.gz").get_fdata()
    alone = nib.load(tmp_path / "alone" / "warped.nii.gz").get_fdata()
    assert np.array_equal(cohort, alone)
    # within one run, an atlas rewritten between two pairs is read again
    from medistill.cli.register import _register_one

    reads.clear()
    job = {"fixed": atlas, "moving": folder / "subj1.nii.gz", "moving_labels": None,
           "fixed_labels": None}  # fmt: skip
    seen = []

    def registrar(fixed, moving, **kwargs):
        seen.append(float(fixed.data.max()))

    cache: dict = {}
    _register_one(registrar, job, 3, "com", ("warped",), cache)
    _register_one(registrar, job, 3, "com", ("warped",), cache)
    assert sum(r.endswith("atlas.nii.gz") for r in reads) == 1
    img = nib.load(brains / "fixed.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32) * 2, img.affine), atlas)
    _register_one(registrar, job, 3, "com", ("warped",), cache)
    assert sum(r.endswith("atlas.nii.gz") for r in reads) == 2
    assert seen[2] == pytest.approx(2 * seen[0])


@pytest.mark.slow
def test_cohort_pairs_are_shared_by_torchrun_processes(brains, tmp_path):
    from tests.utils import torchrun_cli

    out = tmp_path / "cohort"
    done = torchrun_cli("register", "--method", "optimise", "--pairs", brains / "pairs.csv",
                        "--out", out, *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("registered 1 pair(s)") == 2  # one pair in each process
    assert sorted(p.name for p in out.iterdir()) == ["fixed__moving", "moving__fixed"]


def test_cohort_reports_and_skips_a_row_with_a_missing_file(brains, tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fixed", "moving"])
        w.writerow([brains / "fixed.nii.gz", brains / "moving.nii.gz"])
        w.writerow([brains / "fixed.nii.gz", tmp_path / "absent.nii.gz"])
        w.writerow([brains / "moving.nii.gz", brains / "fixed.nii.gz"])
    out = tmp_path / "cohort"
    code, stdout, err = cli(capsys, "register", "--method", "optimise", "--pairs", pairs,
                            "--out", out, *FAST)  # fmt: skip
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "fixed__absent" in lines[0] and "absent.nii.gz" in lines[0]
    assert "1 of 3 pair(s) failed" in lines[1]
    assert "registered 2 pair(s)" in stdout  # the rows after the bad one were done too
    assert sorted(p.name for p in out.iterdir()) == ["fixed__moving", "moving__fixed"]


def test_cohort_workers_give_the_pairs_of_one_process_and_report_a_bad_row(
    brains, tmp_path, capsys, monkeypatch
):
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fixed", "moving", "moving_labels"])
        w.writerow(
            [brains / "fixed.nii.gz", brains / "moving.nii.gz", brains / "moving_seg.nii.gz"]
        )
        w.writerow([brains / "fixed.nii.gz", tmp_path / "absent.nii.gz", ""])
        w.writerow([brains / "moving.nii.gz", brains / "fixed.nii.gz", brains / "fixed_seg.nii.gz"])
    # the built-in network: deterministic to float rounding whatever the thread count (the
    # optimiser's Adam steps would amplify the rounding)
    args = ["register", "--pairs", pairs, "--outputs", "warped_labels,disp_voxel"]
    import medistill.cli.register as reg

    monkeypatch.setattr(reg, "_MAIN_TAKES_PAIRS", False)  # every pair goes to the spawned one
    code, stdout, err = cli(capsys, *args, "--out", tmp_path / "two", "--workers", "2")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "fixed__absent" in lines[0] and "absent.nii.gz" in lines[0]
    assert "1 of 3 pair(s) failed" in lines[1]
    assert "registered 2 pair(s)" in stdout and "(2 workers)" in stdout
    names = ["fixed__moving", "moving__fixed"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names  # no partial folder
    code, _, _ = cli(capsys, *args, "--out", tmp_path / "one", "--workers", "1")
    assert code == 2
    for name in names:
        for output, tol in (("disp_voxel", 1e-3), ("warped_labels", 0.0)):
            a = nib.load(tmp_path / "one" / name / f"{output}.nii.gz").get_fdata()
            b = nib.load(tmp_path / "two" / name / f"{output}.nii.gz").get_fdata()
            if tol:
                assert np.abs(a - b).max() < tol  # same pair, another thread count
            else:
                assert (a != b).mean() < 1e-3
    shutil.rmtree(tmp_path / "two" / "moving__fixed")  # as if killed during that pair
    code, stdout, _ = cli(capsys, *args, "--out", tmp_path / "two", "--workers", "2")
    assert code == 2 and "registered 1 pair(s)" in stdout and "1 already done" in stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == names


def test_cohort_pairs_run_here_when_the_worker_cannot_start(brains, tmp_path, caplog):
    import medistill.cli.register as reg
    from medistill.cli._methods import network_registrar

    registrar, ndim, _, _ = network_registrar(None, 0, None, None)
    jobs = [
        {"fixed": brains / a, "moving": brains / b, "fixed_labels": None,
         "moving_labels": brains / lab, "name": name}
        for a, b, lab, name in (
            ("fixed.nii.gz", "moving.nii.gz", "moving_seg.nii.gz", "p1"),
            ("moving.nii.gz", "fixed.nii.gz", "fixed_seg.nii.gz", "p2"),
        )
    ]  # fmt: skip
    # the worker's model does not exist: it fails to start, and this process does every pair
    # even though it was told to leave them to the workers
    bad = {"method": "network", "model": tmp_path / "absent.pt", "refine": 0, "config": None,
           "set_": None, "engine": "torch"}  # fmt: skip
    reg._MAIN_TAKES_PAIRS = False
    try:
        reg._register_cohort(registrar, jobs, ndim, "com", tmp_path / "out", False,
                             ("warped_labels",), True, workers=2, spec=bad)  # fmt: skip
    finally:
        reg._MAIN_TAKES_PAIRS = True
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p1", "p2"]
    assert "worker process failed" in caplog.text


def test_workers_option_and_its_automatic_choice(brains, tmp_path, capsys):
    from medistill.cli.register import auto_workers

    assert auto_workers(7, 2) == 1 and auto_workers(8, 2) == 2 and auto_workers(100, 16) == 4
    assert auto_workers(100, 1) == 1 and auto_workers(100, 16, gpu=True) == 1
    code, _, err = cli(capsys, "register", "--pairs", brains / "pairs.csv", "--out",
                       tmp_path / "never", "--workers", "-1")  # fmt: skip
    assert code == 2 and "--workers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()


def test_outputs_choose_the_files_and_no_compress_writes_nii(brains, tmp_path, capsys):
    out = tmp_path / "reg"
    args = ["register", "--method", "optimise", "--fixed", brains / "fixed.nii.gz",
            "--moving", brains / "moving.nii.gz", "--moving-labels", brains / "moving_seg.nii.gz",
            *FAST]  # fmt: skip
    code, _, err = cli(capsys, *args, "--out", out, "--outputs", "jacobian,warped_labels",
                       "--no-compress")  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["jacobian.nii", "warped_labels.nii"]
    fixed = nib.load(brains / "fixed.nii.gz")
    for name in ("jacobian.nii", "warped_labels.nii"):
        img = nib.load(out / name)
        assert img.shape == fixed.shape and np.allclose(img.affine, fixed.affine)
    for bad in ("warped,bogus", ","):
        code, _, err = cli(capsys, *args, "--out", tmp_path / "never", "--outputs", bad)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "--outputs" in err, err
        assert not (tmp_path / "never").exists()
    no_labels = [a for a in args if a not in ("--moving-labels", brains / "moving_seg.nii.gz")]
    code, _, err = cli(capsys, *no_labels, "--out", tmp_path / "never", "--outputs",
                       "warped_labels")  # fmt: skip
    assert code == 2 and "--moving-labels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "never").exists()
