"""``medistill info`` and the exit-code contract: 0 ok, 2 bad input with one line, 1 internal."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from medistill.cli.main import main
from medistill.io import Image, save
from tests.utils import oblique_affine


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_reports_geometry(tmp_path, capsys, blob_image):
    path = tmp_path / "blob.nii.gz"
    save(blob_image, path)
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    assert "20x24x16" in out and "LIA" in out
    code, out, _ = run_cli(capsys, "info", path, "--json")
    facts = json.loads(out)
    assert facts["shape"] == [20, 24, 16]
    np.testing.assert_allclose(facts["spacing_mm"], [2.0, 1.5, 3.0], rtol=1e-5)
    assert facts["intensity_range"][1] == pytest.approx(float(blob_image.data.max()))


def test_info_label_set(tmp_path, capsys):
    labels = np.zeros((5, 5, 5), np.int16)
    labels[1, 1, 1], labels[2, 2, 2] = 3, 9
    path = tmp_path / "case_seg.nii.gz"
    save(Image(labels, oblique_affine(), is_label=True), path)
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0 and "2 non-zero: 3, 9" in out


def _write(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


@pytest.mark.parametrize(
    "case", ["missing", "truncated", "nan", "inf", "4d", "empty_label", "text"]
)
def test_bad_input_exit_2_one_line(tmp_path, capsys, case):
    args = ["info"]
    if case == "missing":
        args.append(tmp_path / "nope.nii.gz")
    elif case == "truncated":
        good = _write(tmp_path / "good.nii.gz", np.random.default_rng(0).random((16, 16, 16)))
        bad = tmp_path / "cut.nii.gz"
        bad.write_bytes(good.read_bytes()[:500])
        args.append(bad)
    elif case in ("nan", "inf"):
        data = np.ones((4, 4, 4), np.float32)
        data[1, 2, 3] = np.nan if case == "nan" else np.inf
        args.append(_write(tmp_path / "x.nii.gz", data))
    elif case == "4d":
        args += [_write(tmp_path / "x.nii.gz", np.ones((4, 4, 4, 2), np.float32))]
    elif case == "empty_label":
        args += [_write(tmp_path / "x_seg.nii.gz", np.zeros((4, 4, 4), np.int16)), "--label"]
    elif case == "text":
        (tmp_path / "x.nii.gz").write_text("not an image")
        args.append(tmp_path / "x.nii.gz")
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medistill: error:"), err
    assert "Traceback" not in err


def test_usage_error_is_exit_2(capsys):
    code, _, err = run_cli(capsys, "info")
    assert code == 2 and "Missing argument" in err


def test_console_script_help_and_exit_code(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "medistill.cli.main", "--help"],
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert done.returncode == 0 and "info" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "medistill.cli.main", "info", str(tmp_path / "missing.nii")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr


def test_info_on_real_oasis(shared_data, capsys):
    code, out, _ = run_cli(capsys, "info", shared_data / "brain3d" / "oasis_A.nii.gz")
    assert code == 0
    assert "160x192x144, 1 mm isotropic, RAS" in out
