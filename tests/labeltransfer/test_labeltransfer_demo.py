"""The label-transfer demo end to end on a tiny 3-D setting: checkpoints, summary and report."""

from __future__ import annotations

import json

import pytest

from medistill.cli.labeltransfer import demo_labeltransfer
from medistill.train import load_checkpoint

TINY = [
    "data.shape=[32,32,32]",
    "data.subjects=2",
    "model.enc=[4,8,8,8]",
    "model.dec=[8,8,8,8,8,4,4]",
    "gan.widths=[4,8]",
    "loss.window=5",
    "loop.steps=4",
    "loop.log_every=2",
    "loss.backward_pretrain=1",
    "loss.cycle_start=2",
    "loop.progress=false",
]


@pytest.mark.slow
def test_demo_writes_report_and_checkpoints(tmp_path, capsys):
    demo_labeltransfer(out=tmp_path, config="demo", set_=TINY)
    summary = json.loads((tmp_path / "summary.json").read_text())
    models = [row["model"] for row in summary["rows"]]
    assert models == ["no registration", "forward-only (VoxelMorph-style)", "LT-Net"]
    for row in summary["rows"]:
        assert 0.0 <= row["dice_mean"] <= 1.0 and set(row["dice_per_label"]) == {"1", "2", "3"}
    for row in summary["rows"][1:]:  # the collapse guard's last reading of each trained run
        assert {"fwd_spread", "fwd_length_vox", "collapsed"} <= set(row)
    lt = load_checkpoint(tmp_path / "ltnet.pt", task="labeltransfer")
    assert lt["role"] == "ltnet" and lt["config"]["model"]["ndim"] == 3
    # LT-Net's G_F started from the forward-only run of the same demo
    assert lt["config"]["model"]["forward_init"] == str(tmp_path / "runs" / "forward" / "model.pt")
    assert load_checkpoint(tmp_path / "forward_only.pt")["role"] == "forward-only"
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Dice per structure" in html and html.count("data:image/png;base64") >= 3
    out = capsys.readouterr().out
    assert "LT-Net" in out and "report.html" in out
