"""The task registry: every role maps to its task, unknown roles are one line, and any task's
checkpoint loads into one LoadedModel with the schema version and (registration) I/O contract."""

from __future__ import annotations

import pytest

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
        assert loaded.task == name and loaded.checkpoint["schema"] == 1
        assert sum(p.numel() for p in loaded.network.parameters()) > 0
        assert not loaded.network.training
    assert load(tmp_path / "registration" / "model.pt").io["working_shape"] == [64, 64, 64]
    assert load(tmp_path / "recon" / "model.pt").extra.mask is not None
