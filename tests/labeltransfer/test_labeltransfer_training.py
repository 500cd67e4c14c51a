"""LT-Net training: gradients, the discriminator step, checkpoints and exact resume, configs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.labeltransfer import (
    LabelTransferConfig,
    LabelTransferTask,
    TransferData,
    load_model,
    presets,
    train,
)
from medistill.labeltransfer.data import ImagePool
from medistill.labeltransfer.model import Atlas, LTNet
from medistill.labeltransfer.training import (
    check_config,
    cycle_factor,
    generator_terms,
    total_loss,
)
from medistill.spatial import random_smooth_disp, warp
from medistill.train import Trainer, from_dict, load_checkpoint, load_config, to_dict
from tests.utils import RecordingContext

SIZE = 32


def disc_labels(size: int) -> torch.Tensor:
    """(1, S, S) labels: 1 a ring, 2 a disc inside it, 3 a small off-centre disc."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((y - size / 2) ** 2 + (x - size / 2) ** 2).sqrt()
    labels = torch.zeros(size, size, dtype=torch.int64)
    labels[r < size * 0.38] = 1
    labels[r < size * 0.28] = 2
    labels[((y - size * 0.4) ** 2 + (x - size * 0.55) ** 2).sqrt() < size * 0.08] = 3
    return labels[None]


def tiny_data(size: int = SIZE) -> TransferData:
    labels = disc_labels(size)
    means = torch.tensor([0.0, 0.3, 0.6, 0.9])
    atlas = means[labels]
    g = torch.Generator().manual_seed(5)
    images = []
    for _ in range(3):
        disp = random_smooth_disp((size, size), max_disp=2.0, generator=g)
        images.append(warp(atlas[None], disp)[0])
    return TransferData(
        Atlas(atlas, labels, np.diag([2.0, 2.0, 2.0, 1.0]), torch.arange(4)),
        ImagePool(images, augment_disp=1.0),
        "tiny discs",
    )


def tiny_config(**loss) -> LabelTransferConfig:
    d = to_dict(LabelTransferConfig())
    d["model"].update(ndim=2, enc=[4, 8, 8, 8], dec=[8, 8, 8, 8, 8, 4, 4])
    d["gan"]["widths"] = [4, 8]
    d["data"].update(shape=[SIZE, SIZE])
    d["loss"].update(window=5, **loss)
    d["loop"].update(steps=2, lr=1e-3, checkpoint_every=1, log_every=1, progress=False, threads=1)
    return from_dict(LabelTransferConfig, d)


def _shift_flow(net: LTNet, value: float) -> None:
    """Give both generators a non-zero output so the cycle terms have gradients."""
    with torch.no_grad():
        for sub in (net.forward_net, net.backward_net):
            if sub is not None:
                sub.flow.bias.fill_(value)


def _grad_norm(module: torch.nn.Module) -> float:
    return float(sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None))


def test_gradients_reach_both_generators():
    cfg = tiny_config()
    task = LabelTransferTask(cfg, tiny_data())
    _shift_flow(task.net, 0.4)
    batch = task.make_batch(0, 0, torch.Generator().manual_seed(0))
    net = task.net
    out = net(batch["atlas"], batch["atlas_onehot"], batch["image"])
    terms = generator_terms(
        cfg,
        out,
        batch["atlas"],
        batch["atlas_onehot"],
        batch["image"],
        batch["channels"],
        task.disc(out.warped),
    )
    assert set(terms) == {"gan", "sim", "cyc", "anatomy", "smooth", "trans", "diff"}
    for name, value in terms.items():
        net.zero_grad()
        value.backward(retain_graph=True)
        forward, backward = _grad_norm(net.forward_net), _grad_norm(net.backward_net)
        assert forward > 0, name  # every term depends on Delta_F
        if name in ("gan", "sim"):
            assert backward == 0, name  # u_bar does not depend on G_B
        else:
            assert backward > 0, name
    net.zero_grad()
    total_loss(cfg, terms).backward()
    assert _grad_norm(net.forward_net) > 0 and _grad_norm(net.backward_net) > 0


@pytest.mark.parametrize("cycle_warp", ["composed", "sequential"])
def test_cycle_of_inverse_translations(cycle_warp):
    net = LTNet(2, enc=(4, 8, 8, 8), dec=(8, 8, 8, 8, 8, 4, 4), cycle_warp=cycle_warp)
    with torch.no_grad():
        for sub, shift in ((net.forward_net, 2.0), (net.backward_net, -2.0)):
            sub.flow.weight.zero_()
            sub.flow.bias.fill_(shift)
    data = tiny_data()
    ramp = torch.linspace(0, 1, SIZE).view(1, 1, SIZE, 1)
    atlas, labels = data.atlas.image[None] + ramp, data.atlas.labels[None]
    onehot = (labels == torch.arange(4).view(1, -1, 1, 1)).float()
    out = net(atlas, onehot, torch.rand(1, 1, SIZE, SIZE))
    assert torch.allclose(out.warped[0, 0, :-2, :-2], atlas[0, 0, 2:, 2:])  # u_bar(x) = l(x + 2)
    inner = (slice(None), slice(None), slice(2, None), slice(2, None))  # l_bar(x) reads u_bar(x-2)
    assert torch.allclose(out.cycled[inner], atlas[inner], atol=1e-5)
    assert torch.allclose(out.cycled_probs[inner], onehot[inner], atol=1e-5)
    if cycle_warp == "composed":  # one interpolation: exact everywhere, borders included
        assert torch.allclose(out.cycled, atlas, atol=1e-5)
    else:  # the first two rows/columns read u_bar outside the grid (border padding)
        assert not torch.allclose(out.cycled, atlas, atol=1e-3)


def test_warmup_cycle_terms_train_the_backward_generator_only():
    cfg = tiny_config()
    task = LabelTransferTask(cfg, tiny_data())
    _shift_flow(task.net, 0.4)
    b = task.make_batch(0, 0, torch.Generator().manual_seed(0))
    net = task.net
    out = net(b["atlas"], b["atlas_onehot"], b["image"], True)
    args = (cfg, out, b["atlas"], b["atlas_onehot"], b["image"], b["channels"])
    terms = generator_terms(*args, task.disc(out.warped), True)
    for name in ("cyc", "anatomy", "trans", "diff"):
        net.zero_grad()
        terms[name].backward(retain_graph=True)
        assert _grad_norm(net.forward_net) == 0 and _grad_norm(net.backward_net) > 0, name
    net.zero_grad()
    terms["sim"].backward()
    assert _grad_norm(net.forward_net) > 0


def test_total_loss_weights_and_ramp():
    cfg = tiny_config(cycle_ramp=10)
    ones = {k: torch.tensor(1.0) for k in ("gan", "sim", "cyc", "anatomy", "smooth", "trans")}
    # gan + sim + lambda1 * cyc + lambda2 * (anatomy + smooth + trans) = 1 + 1 + 10 + 9
    assert float(total_loss(cfg, ones)) == pytest.approx(21.0)
    assert cycle_factor(cfg, 0) == 0.0 and cycle_factor(cfg, 5) == 0.5
    assert cycle_factor(cfg, 50) == 1.0 and cycle_factor(cfg, None) == 1.0
    cfg.loss.cycle_start = 20  # warm-up (cycle terms train G_B only), then the ramp
    assert [cycle_factor(cfg, s) for s in (0, 19, 20, 25, 30, 99)] == [1, 1, 0, 0.5, 1, 1]
    cfg.loss.cycle_start = 0
    assert float(total_loss(cfg, ones, step=5)) == pytest.approx(2 + 3 + 0.5 * (10 + 6))
    cfg.loss.cyc = 0.0  # a weight of 0 switches a term off
    assert float(total_loss(cfg, ones)) == pytest.approx(11.0)


def test_discriminator_learns_and_generators_move(tmp_path):
    cfg = tiny_config()
    cfg.loop.steps = 1
    task = LabelTransferTask(cfg, tiny_data())
    disc0 = {k: v.clone() for k, v in task.disc.state_dict().items()}
    gen0 = {k: v.clone() for k, v in task.net.state_dict().items()}
    Trainer(cfg.loop, tmp_path).fit(task)
    assert any(not torch.equal(disc0[k], v) for k, v in task.disc.state_dict().items())
    for prefix in ("forward_net.", "backward_net."):
        assert any(
            not torch.equal(gen0[k], v)
            for k, v in task.net.state_dict().items()
            if k.startswith(prefix)
        )
    assert all(p.requires_grad for p in task.disc.parameters())
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert {"disc", "gan", "sim", "cyc", "anatomy", "smooth", "trans", "diff", "loss"} <= set(
        record
    )


def test_train_checkpoint_and_exact_resume(tmp_path):
    data = tiny_data()
    cfg = tiny_config()
    state = train(cfg, tmp_path / "a", data=data)
    assert state["step"] == 2 and state["role"] == "ltnet"
    slim = load_checkpoint(tmp_path / "a" / "model.pt", task="labeltransfer")
    assert "optimizers" not in slim and set(slim["modules"]) == {"generators"}
    assert torch.equal(slim["atlas"]["labels"].long(), data.atlas.labels)
    cfg.loop.steps = 3
    train(cfg, tmp_path / "a", resume=True, data=data)
    assert load_checkpoint(tmp_path / "a" / "last.pt")["step"] == 3
    assert len((tmp_path / "a" / "log.jsonl").read_text().splitlines()) == 3
    straight = train(cfg, tmp_path / "b", data=tiny_data())
    resumed = load_checkpoint(tmp_path / "a" / "last.pt")
    for name in ("generators", "discriminator"):
        for key, value in straight["modules"][name].items():
            assert torch.equal(value, resumed["modules"][name][key]), key
    net, ckpt, loaded = load_model(tmp_path / "a" / "model.pt")
    assert isinstance(net, LTNet) and not net.training and loaded.model.ndim == 2
    with pytest.raises(InputError, match="already holds a run"):
        train(cfg, tmp_path / "a", data=data)


def test_forward_only_run(tmp_path):
    cfg = tiny_config(gan=0.0, cyc=0.0, anatomy=0.0, trans=0.0, diff=0.0)
    task = LabelTransferTask(cfg, tiny_data())
    assert task.net.backward_net is None and set(task.modules()) == {"generators"}
    state = train(cfg, tmp_path, data=tiny_data())
    assert state["role"] == "forward-only"
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert {"sim", "smooth", "loss"} <= set(record) and "cyc" not in record


def test_embedded_source_from_config(tmp_path):
    cfg = tiny_config()
    cfg.data.subjects = 2
    cfg.loop.steps = 1
    state = train(cfg, tmp_path)  # atlas: MNI152 with tissue labels, embedded 2-D slices
    assert state["atlas"]["values"].tolist() == [0, 1, 2, 3]
    assert tuple(state["atlas"]["image"].shape) == (1, SIZE, SIZE)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"shape": [30, 32]}, "multiples of 16"),
        ({"shape": [32, 32, 32]}, "model.ndim"),
    ],
)
def test_bad_config_shape(override, match):
    cfg = tiny_config()
    cfg.data.shape = tuple(override["shape"])
    with pytest.raises(InputError, match=match):
        check_config(cfg)


def test_bad_config_weights():
    with pytest.raises(InputError, match="at least one"):
        check_config(tiny_config(gan=0, sim=0, cyc=0, anatomy=0, smooth=0, trans=0, diff=0))
    with pytest.raises(InputError, match="smooth_penalty"):
        check_config(tiny_config(smooth_penalty="l1"))


def test_presets_load_and_check():
    names = presets()
    assert {"cpu-64", "cpu-2d", "demo", "paper-128"} <= set(names)
    for name in names:
        cfg = load_config(LabelTransferConfig, name, presets=names)
        check_config(cfg)
        assert cfg.loss.lambda1 == 10.0 and cfg.loss.lambda2 == 3.0
    assert load_config(LabelTransferConfig, "cpu-64", presets=names).data.shape == (64, 64, 64)


def test_synthesised_images_are_t1_like_and_skull_stripped():
    from medistill.labeltransfer.data import synth_t1_like

    labels = torch.zeros(1, 1, 48, 48, dtype=torch.int64)
    for k, value in enumerate((24, 3, 2, 41, 4, 42)):  # CSF, GM, WM, WM, CSF, GM (aseg)
        labels[..., 6:42, 6 + 6 * k : 12 + 6 * k] = value
    for seed in range(3):
        image = synth_t1_like(labels, torch.Generator().manual_seed(seed))
        assert image.shape == labels.shape and float(image[labels == 0].abs().max()) == 0.0
        csf = image[(labels == 24) | (labels == 4)].mean()
        gm = image[(labels == 3) | (labels == 42)].mean()
        wm = image[(labels == 2) | (labels == 41)].mean()
        assert csf < gm < wm
    tissue = torch.zeros(1, 1, 48, 48, dtype=torch.int64)
    for k, value in enumerate((1, 2, 3, 1, 2, 3)):
        tissue[..., 6:42, 6 + 6 * k : 12 + 6 * k] = value
    image = synth_t1_like(tissue, torch.Generator().manual_seed(0), scheme="tissue")
    assert image[tissue == 1].mean() < image[tissue == 2].mean() < image[tissue == 3].mean()


@pytest.mark.parametrize("step, forward_moves", [(0, False), (10, True)])
def test_training_step_warmup_keeps_every_cycle_term_off_the_forward_generator(step, forward_moves):
    # only the cycle terms: during the warm-up (steps < cycle_start) none may reach G_F
    cfg = tiny_config(gan=0.0, sim=0.0, smooth=0.0, cycle_start=5)
    task = LabelTransferTask(cfg, tiny_data())
    _shift_flow(task.net, 0.4)
    batch = task.make_batch(step, 0, torch.Generator().manual_seed(0))
    ctx = RecordingContext(task.modules())
    logs = task.training_step(batch, step, ctx)
    assert {"cyc", "anatomy", "trans", "diff"} <= set(logs)
    task.net.zero_grad()
    ctx.losses["generators"].backward()
    assert (_grad_norm(task.net.forward_net) > 0) == forward_moves
    assert _grad_norm(task.net.backward_net) > 0
