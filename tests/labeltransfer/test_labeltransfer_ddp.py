"""LT-Net training under torchrun with DDP on the CPU (gloo): two processes, one checkpoint."""

from __future__ import annotations

import json

import pytest

from medistill.train import load_checkpoint
from tests.utils import torchrun_cli


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(
        "preset: demo-2d\n"
        "model: {enc: [4, 8, 8, 8], dec: [8, 8, 8, 8, 8, 4, 4]}\n"
        "gan: {widths: [4, 8]}\n"
        "data: {shape: [32, 32], subjects: 2}\n"
        "loss: {window: 5, cycle_ramp: 0}\n"
        "loop: {steps: 2, checkpoint_every: 2, log_every: 1, progress: false}\n"
    )
    done = torchrun_cli("train", "labeltransfer", "--config", cfg, "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained label transfer") == 1  # only rank 0 reports
    state = load_checkpoint(tmp_path / "run" / "last.pt", task="labeltransfer")
    assert state["step"] == 2 and len(state["rng"]["torch"]) == 2
    assert set(state["modules"]) == {"generators", "discriminator"}
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
