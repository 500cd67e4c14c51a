"""``medistill selfcheck`` passes on the embedded data and writes readable NIfTI outputs."""

from __future__ import annotations

import json

import nibabel as nib

from medistill.cli.main import main


def test_selfcheck_passes_and_writes_outputs(tmp_path, capsys):
    code = main(["selfcheck", "--out", str(tmp_path), "--size", "32"])
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"] and len(summary["checks"]) == 6
    disp = nib.load(tmp_path / "disp_mm.nii.gz")
    assert disp.shape == (32, 32, 32, 1, 3)
    assert nib.load(tmp_path / "jacobian.nii.gz").shape == (32, 32, 32)
