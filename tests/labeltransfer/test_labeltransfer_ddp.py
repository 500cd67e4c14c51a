"""LT-Net training under torchrun with DDP on the CPU (gloo): two processes, one checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medistill.train import load_checkpoint

SCRIPT = """
import sys
from medistill.cli.labeltransfer import train_labeltransfer
train_labeltransfer(config=sys.argv[1], out=__import__("pathlib").Path(sys.argv[2]))
"""


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(
        "preset: demo\n"
        "model: {enc: [4, 8, 8, 8], dec: [8, 8, 8, 8, 8, 4, 4]}\n"
        "gan: {widths: [4, 8]}\n"
        "data: {shape: [32, 32], subjects: 2}\n"
        "loss: {window: 5, cycle_ramp: 0}\n"
        "loop: {steps: 2, checkpoint_every: 2, log_every: 1, progress: false}\n"
    )
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(cfg),
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained label transfer") == 1  # only rank 0 reports
    state = load_checkpoint(tmp_path / "run" / "last.pt", task="labeltransfer")
    assert state["step"] == 2 and len(state["rng"]["torch"]) == 2
    assert set(state["modules"]) == {"generators", "discriminator"}
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
