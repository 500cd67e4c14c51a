"""ANTs as a teacher: its field is read back in the project's convention (skipped without
antspyx), and without antspyx the 'ants' teacher is one clear line, exit 2, nothing written."""

from __future__ import annotations

import sys

import pytest
import torch

from medistill.cli.main import main
from medistill.spatial import warp


def _blobs(shape=(32, 32, 32)) -> torch.Tensor:
    x = torch.stack(
        torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    )
    img = torch.zeros(shape)
    for c, w in (((12, 14, 16), 4.0), ((20, 18, 12), 3.0), ((16, 22, 20), 2.5)):
        d = ((x - torch.tensor(c, dtype=torch.float32).view(3, 1, 1, 1)) / w).pow(2).sum(0)
        img = img + torch.exp(-d)
    return img[None, None]


def test_ants_field_follows_the_warp_convention():
    pytest.importorskip("ants")
    from medistill.registration.ants_teacher import ants_fields

    fixed = _blobs()
    shift = torch.zeros(1, 3, 32, 32, 32)
    shift[:, 0] = 2.0  # moving(y) = fixed(y + 2 e0): the right field is u = -2 e0
    moving = warp(fixed, shift)
    disp = ants_fields(fixed, moving, transform="Translation")
    inner = disp[0, :, 8:24, 8:24, 8:24]
    assert torch.allclose(inner[0].mean(), torch.tensor(-2.0), atol=0.15)
    assert inner[1:].abs().mean() < 0.15
    assert (warp(moving, disp) - fixed)[..., 8:24, 8:24, 8:24].abs().mean() < 0.01


def test_ants_teacher_without_antspyx_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ants", None)  # import ants -> ImportError
    out = tmp_path / "student"
    code = main([
        "train", "student", "--config", "demo", "--out", str(out), "--set", "loop.steps=1",
        "--set", "data.subjects=3", "--set", "data.pairs=2", "--set", "distill.mode=l1",
        "--set", "distill.teacher=ants",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "medistill[ants]" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
