"""Training runs under torchrun with DDP on the CPU (gloo): two processes, one checkpoint."""

from __future__ import annotations

import json

import pytest

from medistill.train import load_checkpoint
from tests.utils import torchrun_cli


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(
        "preset: demo\n"
        "model: {cascades: 1, student_variant: fast}\n"
        "data: {subjects: 3, pairs: 4}\n"
        "loop: {steps: 2, checkpoint_every: 2, log_every: 1, progress: false}\n"
    )
    done = torchrun_cli("train", "student", "--config", cfg, "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    assert done.stdout.count("trained student") == 1  # only rank 0 reports
    state = load_checkpoint(tmp_path / "run" / "last.pt", task="registration")
    assert state["step"] == 2 and len(state["rng"]["torch"]) == 2
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]


@pytest.mark.slow
def test_torchrun_ranks_share_the_optimiser_teacher(tmp_path):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(
        "preset: demo\n"
        "model: {cascades: 1, student_variant: fast}\n"
        "data: {subjects: 3, pairs: 4}\n"
        "distill: {mode: l1, teacher: optimise, teacher_config: fast, teacher_batch: 1,\n"
        '  teacher_set: ["affine.iterations=[3,3]", "deformable.iterations=[3]"]}\n'
        "loop: {steps: 1, checkpoint_every: 1, log_every: 1, progress: false}\n"
    )
    done = torchrun_cli("train", "student", "--config", cfg, "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout + done.stderr
    assert "rank 0 of 2 runs 2 batches" in text and "rank 1 of 2 runs 2 batches" in text
    index = json.loads((tmp_path / "run" / "flow_cache" / "index.json").read_text())
    assert index["pairs"] == 4
    assert not list(tmp_path.glob("run/flow_cache.building-*"))
