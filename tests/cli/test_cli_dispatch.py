"""The one ``medistill`` command dispatches train / evaluate / reconstruct by task."""

from __future__ import annotations

import json

import numpy as np

from medistill.cli.main import main
from medistill.io import Image, save


def test_recon_train_evaluate_reconstruct_through_main(tmp_path, capsys):
    run = tmp_path / "teacher"
    code = main(
        [
            "train",
            "recon-teacher",
            "--config",
            "test",
            "--out",
            str(run),
            "--set",
            "loop.progress=false",
        ]
    )
    assert code == 0, capsys.readouterr().err
    img = tmp_path / "slice.nii.gz"
    yy, xx = np.mgrid[0:32, 0:32]
    save(Image(np.exp(-((yy - 16) ** 2 + (xx - 14) ** 2) / 60.0).astype(np.float32)), img)
    code = main(
        [
            "evaluate",
            "--model",
            str(run / "model.pt"),
            "--images",
            str(img),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert "psnr_mean" in summary and "ssim_mean" in summary
    code = main(
        [
            "evaluate",
            "--model",
            str(run / "model.pt"),
            "--pairs",
            str(img),
            "--out",
            str(tmp_path / "e2"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs --images" in err
    code = main(["train", "nonsense", "--config", "test", "--out", str(tmp_path / "x")])
    assert code == 2 and "recon-teacher" in capsys.readouterr().err
