"""Validation in the training loop: best weights kept and exported, early stopping with patience,
exact resume of the validation state."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from medistill.errors import InputError
from medistill.train import LoopConfig, Trainer, load_checkpoint


class ScriptedTask:
    """A one-parameter task whose validation score follows a script: the loop must keep the
    weights of the best-scoring step and stop after ``patience`` worse scores."""

    def __init__(self, scores: dict[int, float]) -> None:
        self.scores = scores
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.steps_done = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def optimizers(self, modules, lr: float):
        return {"model": torch.optim.SGD(modules["model"].parameters(), lr=lr)}

    def make_batch(self, step: int, rank: int, generator: torch.Generator) -> dict[str, Any]:
        return {"x": torch.ones(1, 1)}

    def training_step(self, batch, step: int, ctx) -> dict[str, float]:
        model, opt = ctx.modules["model"], ctx.optimizers["model"]
        loss = -model(batch["x"]).sum()  # weight grows by lr each step: weight == step * lr
        opt.zero_grad()
        ctx.backward(loss)
        opt.step()
        self.steps_done += 1
        return {"loss": float(loss.detach())}

    def validate(self, modules) -> float:
        step = round(float(modules["model"].weight) / 0.5)
        return self.scores[step]


def _cfg(**kw) -> LoopConfig:
    base = dict(steps=12, lr=0.5, checkpoint_every=2, log_every=1, progress=False, device="cpu")
    return LoopConfig(**{**base, **kw})


def test_best_weights_are_exported_and_patience_stops(tmp_path):
    scores = {2: 1.0, 4: 3.0, 6: 2.0, 8: 2.5, 10: 9.0, 12: 0.0}
    task = ScriptedTask(scores)
    state = Trainer(_cfg(val_every=2, patience=2), tmp_path).fit(task)
    assert task.steps_done == 8  # best at 4, worse at 6 and 8: stop
    assert state["best_step"] == 4
    assert float(state["modules"]["model"]["weight"]) == pytest.approx(2.0)  # the step-4 weights
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["step"] == 4 and best["validation"]["best"] == 3.0
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["step"] == 8 and last["validation"]["stopped"]
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["val_score"] for r in logged if "val_score" in r] == [1.0, 3.0, 2.0, 2.5]
    # resuming a stopped run trains nothing more and still hands back the best weights
    again = ScriptedTask(scores)
    state = Trainer(_cfg(val_every=2, patience=2), tmp_path, resume=True).fit(again)
    assert again.steps_done == 0 and state["best_step"] == 4


def test_without_patience_the_run_ends_with_the_best_of_all_checks(tmp_path):
    task = ScriptedTask({2: 1.0, 4: 3.0, 6: 2.0, 8: 2.5, 10: 9.0, 12: 0.0})
    state = Trainer(_cfg(val_every=2), tmp_path).fit(task)
    assert task.steps_done == 12 and state["best_step"] == 10


def test_resume_keeps_the_validation_state(tmp_path):
    scores = {2: 5.0, 4: 1.0, 6: 1.0, 8: 9.0, 10: 0.0, 12: 0.0}
    Trainer(_cfg(steps=4, val_every=2, patience=2), tmp_path).fit(ScriptedTask(scores))
    task = ScriptedTask(scores)
    state = Trainer(_cfg(val_every=2, patience=2), tmp_path, resume=True).fit(task)
    # one bad check (4) before the resume and one after (6): stopped at 6, best still step 2
    assert task.steps_done == 2 and state["best_step"] == 2


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(val_every=3), "multiple of loop.checkpoint_every"),
        (dict(patience=2), "needs loop.val_every"),
        (dict(val_every=-2), "loop.val_every"),
    ],
)
def test_bad_validation_settings(kw, message):
    with pytest.raises(InputError, match=message):
        _cfg(**kw)


def test_a_task_without_validation_data_is_refused(tmp_path):
    task = ScriptedTask({})
    task.validate = None
    with pytest.raises(InputError, match="no validation data"):
        Trainer(_cfg(val_every=2), tmp_path).fit(task)
