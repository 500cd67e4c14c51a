"""A training run killed (SIGKILL) between checkpoints and resumed with --resume ends with the
same weights, bit for bit, as an uninterrupted run of the same seed (CPU runs are
deterministic)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medistill.train import load_checkpoint

STEPS = 24
TINY = [
    "--set", f"loop.steps={STEPS}", "--set", "loop.checkpoint_every=3",
    "--set", "loop.progress=false", "--set", "data.subjects=3", "--set", "data.pairs=4",
    "--set", "distill.mode=none", "--set", "model.cascades=1", "--set", "data.shape=[32,32,32]",
]  # fmt: skip


def _train(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    argv = [sys.executable, "-m", "medistill.cli.main", "train", "student", "--config", "demo"]
    return subprocess.Popen(
        [*argv, "--out", str(out), *TINY, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _step(path: Path) -> int:
    try:
        return int(load_checkpoint(path)["step"])
    except Exception:  # noqa: BLE001 - a checkpoint being replaced is read again
        return -1


@pytest.mark.slow
def test_sigkill_between_checkpoints_then_resume_matches_an_uninterrupted_run(tmp_path):
    whole = _train(tmp_path / "whole")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    run = tmp_path / "killed"
    proc = _train(run)
    deadline = time.monotonic() + 600
    while _step(run / "last.pt") < 3:
        assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)  # into the steps after the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = _step(run / "last.pt")
    assert 3 <= killed_at < STEPS, "the kill must land between checkpoints, before the end"
    assert not (run / "model.pt").exists()

    resumed = _train(run, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a = load_checkpoint(tmp_path / "whole" / "model.pt")["modules"]["model"]
    b = load_checkpoint(run / "model.pt")["modules"]["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
