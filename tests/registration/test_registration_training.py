"""Registration training on the embedded data learns: a short student run ends above "no
registration" in Dice on held-out embedded subjects (slow: about a minute on 2 CPU cores)."""

from __future__ import annotations

import pytest

from medistill.registration.config import RegistrationConfig, presets
from medistill.registration.demo import _identity_row, write_heldout
from medistill.registration.evaluate import evaluate
from medistill.registration.training import train
from medistill.train import load_config


@pytest.mark.slow
def test_student_training_beats_no_registration(tmp_path):
    cfg = load_config(
        RegistrationConfig,
        "demo",
        presets=presets(),
        overrides=[
            "data.subjects=6",
            "data.pairs=30",
            "loop.steps=60",
            "loop.lr=1e-3",
            "loop.progress=false",
            "loop.checkpoint_every=1000",
            "distill.mode=none",
        ],
    )
    train("student", cfg, tmp_path / "student")
    pairs = write_heldout(tmp_path / "heldout", cfg, 2)
    before = _identity_row(pairs)["dice_mean"]
    after = evaluate(tmp_path / "student" / "model.pt", pairs, tmp_path / "eval")["dice_mean"]
    assert after > before + 0.02, (before, after)
