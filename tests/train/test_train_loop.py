"""The shared loop: it learns, resumes exactly, writes atomic checkpoints, rejects bad files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
import torch
from torch import nn

from medistill.errors import InputError
from medistill.train import (
    LoopConfig,
    Trainer,
    from_dict,
    load_checkpoint,
    load_config,
    save_checkpoint,
    save_config,
    to_dict,
)
from medistill.train.config import renamed


class ConvRegression:
    """Learn a fixed 3x3 blur from random images: a tiny task with noise in the batches."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Conv2d(1, 1, 3, padding=1)
        self.target = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.target.weight.fill_(1 / 9)
            self.target.bias.zero_()

    def modules(self):
        return {"net": self.net}

    def optimizers(self, modules, lr):
        return {"net": torch.optim.Adam(modules["net"].parameters(), lr=lr)}

    def make_batch(self, step, rank, generator):
        x = torch.rand(2, 1, 8, 8, generator=generator)
        with torch.no_grad():
            y = self.target(x)
        return {"x": x, "y": y}

    def training_step(self, batch, step, ctx):
        opt = ctx.optimizers["net"]
        opt.zero_grad()
        # a random perturbation from the global RNG: resume must restore it too
        noise = 1e-3 * torch.randn(())
        loss = (ctx.modules["net"](batch["x"]) - batch["y"]).square().mean() + noise * 0
        ctx.backward(loss)
        opt.step()
        return {"loss": float(loss.detach())}


def _cfg(**kw):
    base = dict(steps=30, lr=0.05, checkpoint_every=10, log_every=5, progress=False)
    base.update(kw)
    return LoopConfig(**base)


def test_loop_learns_and_logs(tmp_path):
    task = ConvRegression()
    before = (task.net.weight - 1 / 9).abs().mean().item()
    state = Trainer(_cfg(steps=60), tmp_path).fit(task, extra_state=lambda: {"task": "toy"})
    after = (task.net.weight - 1 / 9).abs().mean().item()
    assert after < 0.5 * before
    assert state["step"] == 60
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 12 and '"it_per_s"' in lines[0]
    ckpt = load_checkpoint(tmp_path / "last.pt", task="toy")
    assert ckpt["step"] == 60


def test_resume_continues_exactly(tmp_path):
    straight = ConvRegression()
    Trainer(_cfg(steps=30), tmp_path / "a").fit(straight)
    split = ConvRegression()
    Trainer(_cfg(steps=20), tmp_path / "b").fit(split)
    resumed = ConvRegression()  # fresh weights: must come from the checkpoint
    Trainer(_cfg(steps=30), tmp_path / "b", resume=True).fit(resumed)
    for p, q in zip(straight.net.parameters(), resumed.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_channels_last_runs_put_the_weights_in_that_format_too(tmp_path):
    from medistill.train.loop import to_channels_last

    for resume in (False, True):
        task = ConvRegression()
        Trainer(_cfg(steps=20 if resume else 10, channels_last=True), tmp_path,
                resume=resume).fit(task)  # fmt: skip
        assert task.net.weight.stride() == (9, 1, 3, 1)  # channels last (contiguous: 9, 9, 3, 1)
    net3 = to_channels_last(nn.Conv3d(2, 4, 3))
    assert net3.weight.stride() == (54, 1, 18, 6, 2)  # channels last 3-D
    x = torch.rand(1, 2, 5, 6, 7)
    ref = nn.functional.conv3d(x, net3.weight.contiguous(), net3.bias)
    torch.testing.assert_close(net3(x), ref)


def test_init_starts_a_new_run_from_another_runs_weights(tmp_path):
    """loop.init: the weights (not the step or optimiser) of another run start a new one; the
    first step starts from them exactly; a missing file, no common module or another shape is
    refused in one line."""
    Trainer(_cfg(steps=30), tmp_path / "a").fit(ConvRegression())
    trained = load_checkpoint(tmp_path / "a" / "last.pt")["modules"]["net"]
    task = ConvRegression()
    Trainer(_cfg(steps=1, lr=0.0, init=str(tmp_path / "a" / "last.pt")), tmp_path / "b").fit(task)
    for name, value in task.net.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["step"] == 1  # a new run: from step 0
    fresh = ConvRegression()
    Trainer(_cfg(steps=1, lr=0.0), tmp_path / "c").fit(fresh)
    assert not torch.equal(fresh.net.weight, task.net.weight)
    with pytest.raises(InputError, match="loop.init: .*no such checkpoint"):
        Trainer(_cfg(init=str(tmp_path / "none.pt")), tmp_path / "d").fit(ConvRegression())
    save_checkpoint(tmp_path / "other.pt", {"modules": {"critic": {}}})
    with pytest.raises(InputError, match="none of this run's"):
        Trainer(_cfg(init=str(tmp_path / "other.pt")), tmp_path / "e").fit(ConvRegression())
    wide = {"weight": torch.zeros(2, 1, 3, 3), "bias": torch.zeros(2)}
    save_checkpoint(tmp_path / "wide.pt", {"modules": {"net": wide}})
    with pytest.raises(InputError, match="module 'net' differs"):
        Trainer(_cfg(init=str(tmp_path / "wide.pt")), tmp_path / "f").fit(ConvRegression())


def test_existing_run_needs_resume_flag(tmp_path):
    Trainer(_cfg(steps=10), tmp_path).fit(ConvRegression())
    with pytest.raises(InputError, match="--resume"):
        Trainer(_cfg(steps=10), tmp_path).fit(ConvRegression())
    with pytest.raises(InputError, match="no checkpoint"):
        Trainer(_cfg(steps=10), tmp_path / "new", resume=True).fit(ConvRegression())


def test_foreign_and_corrupt_checkpoints(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a medistill checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint(tmp_path / "ok.pt", {"task": "registration"})
    with pytest.raises(InputError, match="expected 'recon'"):
        load_checkpoint(tmp_path / "ok.pt", task="recon")


@dataclass
class Inner:
    width: int = 8
    sizes: tuple[int, ...] = (1, 2)


@dataclass
class Outer:
    name: str = "x"
    rate: float = 0.1
    inner: Inner = field(default_factory=Inner)


def test_config_yaml_roundtrip_overrides_and_typos(tmp_path):
    cfg = Outer(name="y", inner=Inner(width=4))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg
    loaded = load_config(Outer, tmp_path / "c.yaml", overrides=["inner.width=16", "rate=1"])
    assert loaded.inner.width == 16 and loaded.rate == 1.0 and isinstance(loaded.rate, float)
    assert load_config(Outer, None, overrides=["rate=1e-4", "name=32"]) == Outer(
        name="32", rate=1e-4
    )
    with pytest.raises(InputError, match="did you mean 'width'"):
        from_dict(Outer, {"inner": {"widht": 3}})
    with pytest.raises(InputError, match="must be int"):
        from_dict(Outer, {"inner": {"width": "big"}})
    with pytest.raises(InputError, match="no such file or preset"):
        load_config(Outer, tmp_path / "missing.yaml", presets={"cpu-64": tmp_path / "c.yaml"})
    (tmp_path / "d.yaml").write_text("preset: cpu-64\nrate: 0.5\n")
    merged = load_config(Outer, tmp_path / "d.yaml", presets={"cpu-64": tmp_path / "c.yaml"})
    assert merged.name == "y" and merged.rate == 0.5


class SometimesNaN(ConvRegression):
    """The loss is NaN at step 3: that step must change nothing and be counted."""

    def training_step(self, batch, step, ctx):
        loss = (ctx.modules["net"](batch["x"]) - batch["y"]).square().mean()
        if step == 3:
            loss = loss * float("nan")
        logs = ctx.optimize("net", loss)
        return {"loss": float(loss.detach()), **logs}


def test_non_finite_steps_are_skipped(tmp_path):
    task = SometimesNaN()
    Trainer(_cfg(steps=6, log_every=1, grad_clip=1.0), tmp_path).fit(task)
    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in records] == [0, 0, 0, 1, 1, 1]
    assert all(torch.isfinite(p).all() for p in task.net.parameters())
    assert np.isnan(records[3]["grad_norm"]) and np.isfinite(records[4]["grad_norm"])


@dataclass
class Options:
    mode: Literal["none", "at"] = renamed("none", "kind")
    precision: Literal["32", "bf16-mixed"] = "32"


@dataclass
class WithOptions:
    distill: Options = field(default_factory=Options)


def test_literal_options_are_checked_at_load():
    loaded = load_config(WithOptions, None, overrides=["distill.precision=32"])
    assert loaded.distill.precision == "32"
    with pytest.raises(InputError, match=r"distill.mode must be one of 'none', 'at', got 'magic'"):
        load_config(WithOptions, None, overrides=["distill.mode=magic"])
    with pytest.raises(InputError, match="distill.kind must be one of"):
        from_dict(WithOptions, {"distill": {"kind": "magic"}})


def test_a_renamed_key_reads_its_old_name_and_writes_both(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("distill: {kind: at}\n")
    assert load_config(WithOptions, old).distill.mode == "at"
    # an override by either name replaces the value under the other
    preset = {"p": old}
    assert load_config(WithOptions, "p", presets=preset, overrides=["distill.mode=none"]) == (
        WithOptions()
    )
    new = tmp_path / "new.yaml"
    new.write_text("distill: {mode: none}\n")
    cfg = load_config(WithOptions, new, overrides=["distill.kind=at"])
    assert cfg.distill.mode == "at"
    (tmp_path / "top.yaml").write_text("preset: p\ndistill: {mode: none}\n")
    assert load_config(WithOptions, tmp_path / "top.yaml", presets=preset).distill.mode == "none"
    assert to_dict(cfg) == {"distill": {"mode": "at", "kind": "at", "precision": "32"}}
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(WithOptions, tmp_path / "saved.yaml") == cfg
    with pytest.raises(InputError, match="old name of 'mode'"):
        from_dict(WithOptions, {"distill": {"mode": "at", "kind": "none"}})
