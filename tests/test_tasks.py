"""The task registry: every role maps to its task, unknown roles are one line, and any task's
checkpoint loads into one LoadedModel with its format version and (registration) I/O contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.cli.main import main
from medistill.errors import InputError
from medistill.tasks import TASKS, LoadedModel, load, task_of_role


def test_roles_are_the_task_modules_roles():
    from medistill.recon.model import ROLES as RECON
    from medistill.registration.model import ROLES as REGISTRATION

    assert TASKS["registration"].roles == REGISTRATION
    assert TASKS["recon"].roles == RECON
    assert task_of_role("sr-student").name == "recon"
    assert task_of_role("labeltransfer").name == "labeltransfer"
    with pytest.raises(InputError, match="unknown model 'teachr'.*voxelmorph"):
        task_of_role("teachr")


def test_load_gives_one_dataclass_for_every_task(tmp_path):
    runs = {
        "registration": ["train", "student", "--config", "demo", "--set", "loop.steps=1",
                         "--set", "data.subjects=3", "--set", "data.pairs=2"],
        "recon": ["train", "recon-student", "--config", "test", "--set", "loop.steps=1"],
    }  # fmt: skip
    for name, args in runs.items():
        out = tmp_path / name
        assert main([*args, "--out", str(out), "--set", "loop.progress=false"]) == 0
        loaded = load(out / "model.pt")
        assert isinstance(loaded, LoadedModel)
        assert loaded.task == name and loaded.checkpoint["version"] == 1
        assert sum(p.numel() for p in loaded.network.parameters()) > 0
        assert not loaded.network.training
    assert load(tmp_path / "registration" / "model.pt").io["working_shape"] == [64, 64, 64]
    assert load(tmp_path / "recon" / "model.pt").extra.mask is not None


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("loop.steps=-5", "loop.steps must be an integer >= 1"),
        ("loop.batch_size=0", "loop.batch_size must be an integer >= 1"),
        ("loop.lr=-0.001", "loop.lr must be a finite number >= 0"),
    ],
)
def test_bad_loop_values_and_resume_of_nothing_write_nothing(tmp_path, capsys, setting, message):
    out = tmp_path / "run"
    code = main(["train", "student", "--config", "demo", "--out", str(out), "--set", setting])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    code = main(["train", "student", "--config", "demo", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume: no checkpoint" in err
    assert not out.exists()


def test_every_task_writes_an_io_contract(tmp_path):
    """Recon and label-transfer checkpoints carry the same kind of I/O contract as registration
    ones: working shape, inputs, output."""
    from medistill.labeltransfer.config import LabelTransferConfig
    from medistill.labeltransfer.model import checkpoint_meta as lt_meta
    from medistill.recon.config import ReconConfig
    from medistill.recon.model import checkpoint_meta as recon_meta
    from medistill.registration.config import RegistrationConfig
    from medistill.registration.model import checkpoint_meta as reg_meta

    net = torch.nn.Conv2d(1, 1, 1)
    recon = recon_meta(ReconConfig(), "recon-teacher", net, None)["io"]
    assert recon["working_shape"] == [ReconConfig().data.size] * 2 and "kspace" in recon["inputs"]
    sr = recon_meta(ReconConfig(), "sr-student", net, None)["io"]
    assert "low-resolution" in sr["inputs"]
    reg = reg_meta(RegistrationConfig(), "student", net)["io"]
    assert reg["working_shape"] == list(RegistrationConfig().data.shape)

    class _Atlas:
        image = torch.zeros(1, 1, 4, 4)
        labels = torch.zeros(1, 1, 4, 4)
        affine = np.eye(4)
        values = torch.tensor([0, 1])

    lt = lt_meta(LabelTransferConfig(), net, _Atlas())["io"]
    assert lt["working_shape"] == list(LabelTransferConfig().data.shape)
    for contract in (recon, sr, reg, lt):
        assert set(contract) >= {"working_shape", "inputs", "output"}


def fake_demo(out, *, config="demo", overrides=None):
    """A demo entry point for the registry test: one row, no training."""
    return {"rows": [{"model": f"fake {config} {len(overrides)}"}], "timings_s": {"total": 1.0}}


def test_demo_dispatches_through_the_registry(monkeypatch, tmp_path):
    from medistill.tasks import Task, run_demo

    fake = Task(
        name="fake",
        roles=("fake-role",),
        config_class="x:y",
        presets="x:y",
        train="x:y",
        loader="x:y",
        done=lambda role, state: role,
        demo="tests.test_tasks:fake_demo",
        demo_line=lambda row: f"line {row['model']}",
    )
    monkeypatch.setitem(TASKS, "fake", fake)
    lines: list[str] = []
    summary = run_demo("fake", tmp_path, config="tiny", overrides=["a=1"], echo=lines.append)
    assert summary["rows"][0]["model"] == "fake tiny 1"
    assert lines[0] == "line fake tiny 1" and lines[1].startswith("report:")
    with pytest.raises(InputError, match="unknown task 'nope'"):
        run_demo("nope", tmp_path)
    for name in ("registration", "recon", "labeltransfer"):
        assert callable(TASKS[name].resolve("demo"))


def test_evaluate_dispatches_by_the_checkpoints_task_and_refuses_foreign_options(
    tmp_path, capsys, monkeypatch
):
    from medistill import tasks
    from medistill.tasks import EvaluateRequest

    req = EvaluateRequest(pairs=tmp_path / "p.csv", labels=[1, 2], images=[])
    assert req.given() == ["pairs", "labels"]  # an empty list counts as not given
    out = tmp_path / "recon"
    args = ["train", "recon-student", "--config", "test", "--set", "loop.steps=1"]
    assert main([*args, "--out", str(out), "--set", "loop.progress=false"]) == 0
    seen = {}

    def fake(model, request, folder):
        seen.update(model=model, request=request)
        return {"ok": 1}

    original = tasks.Task.resolve

    def resolve(self, name):
        return fake if name == "evaluate" else original(self, name)

    monkeypatch.setattr(tasks.Task, "resolve", resolve)
    request = EvaluateRequest(images=[tmp_path], acceleration=4.0)
    assert tasks.evaluate(out / "model.pt", request, tmp_path / "e") == {"ok": 1}
    assert seen["request"] is request
    eval_out = tmp_path / "e2"
    code = main(["evaluate", "--model", str(out / "model.pt"), "--images", str(tmp_path),
                 "--labels", "1,2", "--out", str(eval_out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--labels does not apply to a recon checkpoint" in err and "--images" in err
    assert not eval_out.exists() or not any(eval_out.iterdir())
