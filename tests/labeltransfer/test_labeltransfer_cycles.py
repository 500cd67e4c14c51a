"""LT-Net on a good start (issue 15): G_B pre-training to invert, the balanced objective, the
collapse guard, G_F initialised from another checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medistill.errors import InputError
from medistill.labeltransfer import LabelTransferTask, load_model, train
from medistill.labeltransfer.losses import transformation_cycle_residual
from medistill.labeltransfer.training import TERMS
from medistill.metrics import field_spread
from medistill.spatial import random_smooth_disp, warp
from tests.labeltransfer.test_labeltransfer_training import SIZE, tiny_config, tiny_data


def test_field_spread_flags_an_image_independent_field():
    g = torch.Generator().manual_seed(0)
    one = random_smooth_disp((SIZE, SIZE), max_disp=3.0, generator=g)
    collapsed = one.expand(4, -1, -1, -1).clone()
    assert field_spread(collapsed) == pytest.approx(0.0, abs=1e-12)
    own = random_smooth_disp((SIZE, SIZE), batch=4, max_disp=3.0, generator=g)
    assert field_spread(own) > 0.5
    assert field_spread(torch.zeros(3, 2, SIZE, SIZE)) == 0.0
    # a common part plus small image-dependent parts: between the two
    mixed = collapsed + 0.1 * own
    assert 0.0 < field_spread(mixed) < field_spread(own)
    with pytest.raises(InputError, match="N >= 2"):
        field_spread(one)


def _residual(net, atlas: torch.Tensor, field: torch.Tensor) -> float:
    with torch.no_grad():
        disp_b = net.backward_net(atlas.expand(len(field), -1, -1, -1), warp(atlas, field))
    return float(transformation_cycle_residual(field, disp_b).norm(dim=1).mean())


def test_backward_pretraining_lowers_the_inversion_residual(tmp_path):
    """G_B pre-trained on a known smooth field (a pool of one) applied to the atlas learns to
    invert it: the residual of the transformation cycle falls well below its start (the field's
    own length, since G_B starts near zero); G_F does not move during pre-training."""
    data = tiny_data()
    cfg = tiny_config(gan=0.0, backward_pretrain=150, pretrain_disp=2.0, pretrain_pool=1)
    cfg.loop.steps, cfg.loop.log_every, cfg.loop.checkpoint_every = 150, 50, 150
    cfg.loop.lr = 3e-3
    torch.manual_seed(cfg.loop.seed)
    task = LabelTransferTask(cfg, data)
    known = task.pretrain_fields(0, 1, torch.Generator())
    atlas = data.atlas.image[None].float()
    before = _residual(task.net, atlas, known)
    forward_before = {k: v.clone() for k, v in task.net.forward_net.state_dict().items()}
    state = train(cfg, tmp_path, data=data)["modules"]["generators"]
    task.net.load_state_dict(state)
    after = _residual(task.net, atlas, known)
    assert after < 0.6 * before, (before, after)
    for key, value in forward_before.items():
        assert torch.equal(task.net.forward_net.state_dict()[key], value), key
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all("inversion_residual_vox" in record for record in log)


def test_balance_scales_are_measured_once_and_resume_exactly(tmp_path):
    data = tiny_data()
    cfg = tiny_config(balance="initial")
    cfg.loop.steps = 4
    straight = train(cfg, tmp_path / "a", data=data)
    scales = straight["modules"]["generators"]["balance_scales"]
    assert (scales > 0).sum() == sum(getattr(cfg.loss, t) > 0 for t in TERMS)
    cfg.loop.steps = 2
    first = train(cfg, tmp_path / "b", data=tiny_data())
    assert torch.equal(first["modules"]["generators"]["balance_scales"], scales)  # set once
    cfg.loop.steps = 4
    resumed = train(cfg, tmp_path / "b", resume=True, data=tiny_data())
    for key, value in straight["modules"]["generators"].items():
        assert torch.equal(value, resumed["modules"]["generators"][key]), key
    net, _, _ = load_model(tmp_path / "b" / "model.pt")
    assert torch.equal(net.balance_scales, scales)


def test_balanced_terms_start_equal_to_their_weights():
    """With balance on, each term enters the first joint step at its weight alone (the term
    divided by its own magnitude is 1), except the smoothness, which keeps its raw ratio to the
    similarity (both divided by the similarity's magnitude)."""
    from medistill.labeltransfer.training import balance_scales, total_loss

    cfg = tiny_config(balance="initial", gan=0.0)
    terms = {"sim": torch.tensor(0.2), "cyc": torch.tensor(0.05), "smooth": torch.tensor(4.0)}
    scales = balance_scales(terms)
    assert float(scales[TERMS.index("smooth")]) == pytest.approx(0.2)
    assert float(scales[TERMS.index("gan")]) == 0.0  # not computed: not scaled
    total = total_loss(cfg, terms, step=None, scales=scales)
    w = cfg.loss
    expected = w.sim + w.lambda1 * w.cyc + w.lambda2 * w.smooth * 4.0 / 0.2
    assert float(total) == pytest.approx(expected)


def test_collapse_guard_is_logged(tmp_path):
    cfg = tiny_config(gan=0.0)
    train(cfg, tmp_path, data=tiny_data())
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert {"fwd_spread", "fwd_length_vox", "collapsed"} <= set(record)
    assert record["collapsed"] in (0.0, 1.0)


class _FieldNet(torch.nn.Module):
    """A stand-in G_F: a constant field, or one that follows the image's intensities."""

    def __init__(self, constant: bool) -> None:
        super().__init__()
        self.constant = constant
        self.scale = torch.nn.Parameter(torch.tensor(3.0))

    def forward(self, image: torch.Tensor, atlas: torch.Tensor) -> torch.Tensor:
        base = atlas if self.constant else image
        return self.scale * torch.cat([base, base.flip(-1)], dim=1)


def test_collapse_guard_flags_a_constant_forward_network_and_passes_an_image_dependent_one():
    task = LabelTransferTask(tiny_config(gan=0.0), tiny_data())
    task.net.forward_net = _FieldNet(constant=True)
    constant = task.guard(task.net)
    assert constant["collapsed"] == 1.0 and constant["fwd_spread"] == pytest.approx(0.0, abs=1e-9)
    assert constant["fwd_length_vox"] > 0.5  # a long field, the same for every image
    task.net.forward_net = _FieldNet(constant=False)
    dependent = task.guard(task.net)
    assert dependent["collapsed"] == 0.0
    assert dependent["fwd_spread"] > task.cfg.loss.collapse_threshold


def _records(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_pretraining_ends_at_its_target_and_resumes_there(tmp_path, monkeypatch):
    """With loss.pretrain_target the pre-training ends at the first check where G_B inverts the
    held-out fields (random ones and G_F's) to that many voxels: the step is logged and kept in
    the checkpoint, joint training follows, and a resumed run equals a straight one."""
    data = tiny_data()
    cfg = tiny_config(gan=0.0, backward_pretrain=8, pretrain_target=50.0, pretrain_source="both")
    cfg.loop.steps, cfg.loop.log_every, cfg.loop.checkpoint_every = 10, 2, 4
    straight = train(cfg, tmp_path / "a", data=data)["modules"]["generators"]
    log = _records(tmp_path / "a")  # records after steps 2, 4, ..., 10
    assert int(straight["pretrain_end"]) == 2  # the first check met 50 voxels
    assert [r.get("pretrain_end") for r in log] == [2.0, None, None, None, None]
    assert {"inversion_heldout_vox", "inversion_forward_vox", "pretrain_trans"} <= set(log[0])
    # steps 3 to 8 would have pre-trained without the target: joint training instead
    assert all("sim" in r and "pretrain_trans" not in r for r in log[1:])
    original = LabelTransferTask.training_step

    def killed(self, batch, step, ctx):  # a kill inside the bound, after last.pt of step 4
        if step == 4:
            raise RuntimeError("killed")
        return original(self, batch, step, ctx)

    monkeypatch.setattr(LabelTransferTask, "training_step", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, tmp_path / "b", data=tiny_data())
    monkeypatch.undo()  # the resumed run must read the ended pre-training from the checkpoint
    resumed = train(cfg, tmp_path / "b", resume=True, data=tiny_data())["modules"]["generators"]
    assert "pretrain_trans" not in _records(tmp_path / "b")[-3]  # steps 5-6: joint
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), key


def test_pretraining_ends_only_when_both_residuals_meet_the_target(tmp_path, monkeypatch):
    from medistill.labeltransfer import training

    values = {"held": 0.1, "forward": 0.9}  # the held-out fields meet 0.5, G_F's do not
    calls = []

    def fake(net, atlas, fields, mask=None):
        calls.append(len(fields))
        return values["held"] if len(calls) % 2 else values["forward"]

    monkeypatch.setattr(training, "inversion_residual", fake)
    cfg = tiny_config(gan=0.0, backward_pretrain=6, pretrain_target=0.5)
    cfg.loop.steps, cfg.loop.log_every = 6, 2
    state = train(cfg, tmp_path / "a", data=tiny_data())["modules"]["generators"]
    assert int(state["pretrain_end"]) == 0 and calls
    values["held"], values["forward"] = 0.9, 0.4
    state = train(cfg, tmp_path / "b", data=tiny_data())["modules"]["generators"]
    assert int(state["pretrain_end"]) == 0
    values["held"] = 0.45
    state = train(cfg, tmp_path / "c", data=tiny_data())["modules"]["generators"]
    assert int(state["pretrain_end"]) == 2


def test_pretraining_runs_to_its_bound_when_the_target_is_not_met(tmp_path):
    cfg = tiny_config(gan=0.0, backward_pretrain=6, pretrain_target=1e-6)
    cfg.loop.steps, cfg.loop.log_every = 7, 2
    state = train(cfg, tmp_path, data=tiny_data())["modules"]["generators"]
    assert int(state["pretrain_end"]) == 0
    log = _records(tmp_path)  # records after steps 2, 4, 6, 7
    assert all("pretrain_trans" in r and r["inversion_heldout_vox"] > 1e-6 for r in log[:3])
    assert "sim" in log[3] and "pretrain_trans" not in log[3]


def test_pretraining_on_the_forward_generators_own_fields(tmp_path, monkeypatch):
    """loss.pretrain_source="forward": G_B learns to invert G_F's fields on the training images
    (G_F given a large image-dependent field here); G_F itself does not move."""
    data = tiny_data()
    cfg = tiny_config(gan=0.0, backward_pretrain=120, pretrain_source="forward")
    cfg.loop.steps, cfg.loop.log_every, cfg.loop.checkpoint_every, cfg.loop.lr = 120, 40, 120, 3e-3
    torch.manual_seed(cfg.loop.seed)
    task = LabelTransferTask(cfg, data)
    with torch.no_grad():
        task.net.forward_net.flow.bias.copy_(torch.tensor([1.5, -1.0]))
    start = tmp_path / "start.pt"
    torch.save(task.net.forward_net.state_dict(), start)
    atlas = data.atlas.image[None].float()
    images = torch.stack([data.images.sample(torch.Generator().manual_seed(i)) for i in range(3)])
    with torch.no_grad():
        fields = task.net.forward_net(images, atlas.expand(3, -1, -1, -1))
    before = _residual(task.net, atlas, fields)

    from medistill.labeltransfer import training

    monkeypatch.setattr(training, "forward_start", lambda c: (None, torch.load(start)))
    state = train(cfg, tmp_path / "run", data=data)["modules"]["generators"]
    task.net.load_state_dict(state)
    for key, value in torch.load(start).items():
        assert torch.equal(task.net.forward_net.state_dict()[key], value), key
    after = _residual(task.net, atlas, fields)
    assert after < 0.6 * before, (before, after)
    g = torch.Generator().manual_seed(0)
    assert "pretrain_field" not in task.make_batch(0, 0, g)  # G_F's field, made in the step
    for source, want in (("random", [True, True]), ("both", [True, False])):
        task.cfg.loss.pretrain_source = source
        assert ["pretrain_field" in task.make_batch(i, 0, g) for i in (0, 1)] == want


def test_backward_generator_has_its_own_learning_rate():
    from medistill.labeltransfer.training import inversion_residual

    cfg = tiny_config(gan=0.0)
    cfg.model.backward_lr = 5e-3
    task = LabelTransferTask(cfg, tiny_data())
    groups = task.optimizers(task.modules(), 1e-4)["generators"].param_groups
    assert [g["lr"] for g in groups] == [1e-4, 5e-3]
    assert {id(q) for q in groups[1]["params"]} == {
        id(q) for q in task.net.backward_net.parameters()
    }
    assert {id(q) for q in groups[0]["params"]} == {
        id(q) for q in task.net.forward_net.parameters()
    }
    cfg.model.backward_lr = 0.0
    assert len(task.optimizers(task.modules(), 1e-4)["generators"].param_groups) == 1
    # the residual averaged over a mask: all voxels = no mask; a mask picks its voxels
    atlas = task.data.atlas.image[None].float()
    field = random_smooth_disp((SIZE, SIZE), batch=2, max_disp=2.0, generator=torch.Generator())
    net = task.net.backward_net
    inside = atlas > 0
    with torch.no_grad():
        whole = inversion_residual(net, atlas, field)
        assert inversion_residual(net, atlas, field, torch.ones_like(inside)) == pytest.approx(
            whole
        )
        disp_b = net(atlas.expand(2, -1, -1, -1), warp(atlas, field))
        length = transformation_cycle_residual(field, disp_b).norm(dim=1)  # (2, S, S)
        want = float(length[inside[0].expand(2, -1, -1)].mean())
        assert inversion_residual(net, atlas, field, inside) == pytest.approx(want)
        assert want != pytest.approx(float(length[~inside[0].expand(2, -1, -1)].mean()))
        empty = torch.zeros_like(inside)
        assert math.isnan(inversion_residual(net, atlas, field, empty))  # meets no target


def test_forward_generator_starts_from_another_checkpoint(tmp_path):
    forward_only = tiny_config(gan=0.0, cyc=0.0, anatomy=0.0, trans=0.0, diff=0.0)
    forward_only.loop.seed = 3
    train(forward_only, tmp_path / "fo", data=tiny_data())
    source, _, _ = load_model(tmp_path / "fo" / "model.pt")
    cfg = tiny_config()
    cfg.model.forward_init = str(tmp_path / "fo" / "model.pt")
    task = LabelTransferTask(cfg, tiny_data())
    for key, value in source.forward_net.state_dict().items():
        assert torch.equal(task.net.forward_net.state_dict()[key], value), key
    wider = tiny_config()
    wider.model.enc = (8, 8, 8, 8)
    wider.model.forward_init = str(tmp_path / "fo" / "model.pt")
    with pytest.raises(InputError, match="differs from this run"):
        LabelTransferTask(wider, tiny_data())


def test_pretraining_settings_are_checked():
    from medistill.labeltransfer.training import check_config

    with pytest.raises(InputError, match="at most loop.steps"):
        check_config(tiny_config(backward_pretrain=5))
    with pytest.raises(InputError, match="switch on a cycle term"):
        cfg = tiny_config(cyc=0.0, anatomy=0.0, trans=0.0, diff=0.0, backward_pretrain=1)
        cfg.loop.steps = 3
        check_config(cfg)
    with pytest.raises(InputError, match="pretrain_target needs loss.backward_pretrain"):
        check_config(tiny_config(pretrain_target=0.5))
    with pytest.raises(InputError, match="pretrain_target must be >= 0"):
        check_config(tiny_config(pretrain_target=-1.0, backward_pretrain=1))
    with pytest.raises(InputError, match="model.backward_lr must be >= 0"):
        negative = tiny_config()
        negative.model.backward_lr = -1e-3
        check_config(negative)
    one = tiny_data()
    one.images.images[:] = one.images.images[:1]
    with pytest.raises(InputError, match="at least 2 training images"):
        LabelTransferTask(tiny_config(pretrain_target=0.5, backward_pretrain=1), one)


def _tiny_3d_data(size: int = 16):
    import numpy as np

    from medistill.labeltransfer import TransferData
    from medistill.labeltransfer.data import ImagePool
    from medistill.labeltransfer.model import Atlas

    z = torch.arange(size).float()
    r = (z[:, None, None] - 8) ** 2 + (z[None, :, None] - 8) ** 2 + (z[None, None] - 8) ** 2
    labels = (r.sqrt() < 5).long()[None]
    atlas = labels.float() * 0.8
    images = [atlas.clone() for _ in range(2)]
    return TransferData(Atlas(atlas, labels, np.eye(4), torch.arange(2)), ImagePool(images), "3d")


def test_segment_refuses_an_image_of_the_other_dimensionality(tmp_path, capsys):
    """A 2-D model on a 3-D scan and a 3-D model on a 2-D image: exit 2, one line naming the
    image and the dimensionality, nothing written."""
    import numpy as np

    from medistill.cli.main import main
    from medistill.io import Image, save

    train(tiny_config(gan=0.0), tmp_path / "m2", data=tiny_data())
    cfg3 = tiny_config(gan=0.0)
    cfg3.model.ndim, cfg3.data.shape, cfg3.loop.steps = 3, (16, 16, 16), 1
    train(cfg3, tmp_path / "m3", data=_tiny_3d_data())
    rng = np.random.default_rng(0)
    save(Image(rng.random((20, 22, 18)).astype(np.float32)), tmp_path / "v.nii.gz")
    save(Image(rng.random((40, 36)).astype(np.float32)), tmp_path / "s.nii.gz")
    for model, image, want in (("m2", "v.nii.gz", "2-D"), ("m3", "s.nii.gz", "3-D")):
        out = tmp_path / f"{model}_{image}"
        code = main(["segment", "--model", str(tmp_path / model / "model.pt"),
                     "--out", str(out), str(tmp_path / image)])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert image in err and want in err, err
        assert not out.exists()


def test_cycle_cap_scales_only_the_cycle_gradient_into_the_forward_field():
    """With the cycle branch tapped, G_F's gradient is main + c * cycle (checked against the two
    gradients taken separately), G_B's is unchanged, and each tap records one norm."""
    from medistill.labeltransfer.model import LTNet

    torch.manual_seed(0)
    net = LTNet(2, (4, 8, 8, 8), (8, 8, 8, 8, 8, 4, 4), backward=True)
    with torch.no_grad():
        net.forward_net.flow.bias.fill_(0.4)
        net.backward_net.flow.bias.fill_(-0.3)
    atlas, image = torch.rand(1, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 3, (1, SIZE, SIZE)), 3)
    onehot = onehot.permute(0, 3, 1, 2).float()
    fparams, bparams = list(net.forward_net.parameters()), list(net.backward_net.parameters())

    def losses(out):
        main = out.warped.square().mean() + out.disp.square().mean()
        probs = out.cycle_probs if out.cycle_probs is not None else out.warped_probs
        cyc = (out.cycled - atlas).abs().mean() + out.cycled_probs.square().mean()
        return main, cyc + probs.square().mean()

    main, cyc = losses(net(atlas, onehot, image))
    g_main = torch.autograd.grad(main, fparams, retain_graph=True, allow_unused=True)
    g_cyc = torch.autograd.grad(cyc, fparams, retain_graph=True, allow_unused=True)
    g_b = torch.autograd.grad(main + cyc, bparams, allow_unused=True)
    norms = {"main": [], "cycle": []}
    main, cyc = losses(net(atlas, onehot, image, cycle_grad=0.25, grad_norms=norms))
    g = torch.autograd.grad(main + cyc, fparams + bparams, allow_unused=True)
    for got, a, b in zip(g[: len(fparams)], g_main, g_cyc, strict=True):
        expected = (a if a is not None else 0) + 0.25 * (b if b is not None else 0)
        assert torch.allclose(got, expected, atol=1e-6)
    for got, want in zip(g[len(fparams) :], g_b, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert len(norms["main"]) == 1 and len(norms["cycle"]) == 1 and norms["cycle"][0] > 0


def test_cycle_cap_value_and_training_state(tmp_path):
    from medistill.labeltransfer.training import cycle_cap

    assert cycle_cap(0.5, 2.0, 4.0) == pytest.approx(0.25)
    assert cycle_cap(0.5, 2.0, 0.1) == 1.0  # a weak cycle pull is left alone
    assert cycle_cap(0.5, 2.0, 0.0) == 1.0 and cycle_cap(0.5, 2.0, float("nan")) == 0.0
    cfg = tiny_config(cycle_share=0.5, cycle_start=1)
    cfg.loop.steps = 3
    state = train(cfg, tmp_path, data=tiny_data())
    scale = state["modules"]["generators"]["cycle_grad_scale"]
    assert 0.0 < float(scale) <= 1.0  # measured after the joint steps
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert "cycle_grad_scale" not in log[0]  # warm-up: the cycle branch is detached
    assert log[1]["cycle_grad_scale"] == 0.0  # the first joint step: no cycle pull on G_F
    with pytest.raises(InputError, match="cycle_share"):
        train(tiny_config(cycle_share=-1.0), tmp_path / "bad", data=tiny_data())
