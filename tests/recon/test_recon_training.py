"""Training with the shared loop on tiny data: deterministic batches, loss decrease, the three
KD-MRI steps, resume, configuration errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from medistill.errors import InputError
from medistill.io import Image, save
from medistill.recon.config import ReconConfig, presets
from medistill.recon.data import read_slice_set
from medistill.recon.distill import attention_loss
from medistill.recon.kspace import fft2, ifft2
from medistill.recon.model import load_model
from medistill.recon.training import ReconTask, train
from medistill.train import load_checkpoint, load_config

SIZE = 32
TEACHER = ("model.channels=16", "loop.lr=0.003")


def phantom(rng: np.random.Generator) -> np.ndarray:
    """An ellipse with a brighter inner ellipse and a dark spot, random placement."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1) * 2 - 1
    cy, cx = rng.uniform(-0.1, 0.1, 2)
    a, b = rng.uniform(0.6, 0.85, 2)
    outer = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1
    inner = ((yy - cy) / (0.5 * a)) ** 2 + ((xx - cx - 0.1) / (0.4 * b)) ** 2 < 1
    spot = (yy - cy - 0.3) ** 2 + (xx - cx) ** 2 < rng.uniform(0.01, 0.03)
    return (0.4 * outer + 0.5 * inner - 0.3 * spot * outer).astype(np.float32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    rng = np.random.default_rng(0)
    for i in range(6):
        save(Image(phantom(rng)), folder / f"p{i}.nii.gz")
    return folder


def config(data_dir, *extra: str) -> ReconConfig:
    return load_config(
        ReconConfig,
        "test",
        presets=presets(),
        overrides=[
            "data.source=files",
            f"data.paths=[{data_dir}]",
            f"data.size={SIZE}",
            "model.cascades=2",
            "model.channels=8",
            "model.sr_channels=8",
            "loop.checkpoint_every=1000",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def teacher(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    train("recon-teacher", config(data_dir, *TEACHER, "loop.steps=20", "loop.log_every=10"), out)
    return out


def l1_on_all(model: torch.nn.Module, task: ReconTask) -> float:
    target = task.images.unsqueeze(1)
    sim = task.make_batch(0, 0, torch.Generator().manual_seed(0))
    m = sim["mask"]
    k = fft2(target) * m
    with torch.no_grad():
        out = model(ifft2(k).abs(), k, m).image
    return float(F.l1_loss(out, target))


def test_batches_depend_only_on_step_generator(data_dir):
    cfg = config(data_dir)
    task = ReconTask(cfg, "recon-teacher", read_slice_set([data_dir], SIZE))
    a = task.make_batch(3, 0, torch.Generator().manual_seed(11))
    task.make_batch(4, 0, torch.Generator().manual_seed(12))
    b = task.make_batch(3, 0, torch.Generator().manual_seed(11))
    for key in ("target", "input", "kspace", "mask"):
        assert torch.equal(a[key], b[key])
    assert a["target"].shape == (cfg.loop.batch_size, 1, SIZE, SIZE)
    # the input is the zero-filled image of the run's fixed mask
    zf = ifft2(fft2(a["target"]) * a["mask"]).abs()
    torch.testing.assert_close(a["input"], zf.float())
    assert a["mask"].shape == (1, 1, 1, SIZE) and a["mask"].sum() == SIZE / 4


def test_teacher_loss_decreases(teacher, data_dir):
    cfg = config(data_dir, *TEACHER)
    task = ReconTask(cfg, "recon-teacher", read_slice_set([data_dir], SIZE))  # same seed: init
    before = l1_on_all(task.model, task)
    after = l1_on_all(load_model(teacher / "model.pt").net, task)
    assert after < 0.9 * before
    ckpt = load_checkpoint(teacher / "model.pt", task="recon")
    assert ckpt["role"] == "recon-teacher" and ckpt["step"] == 20
    assert ckpt["mask"].dtype == torch.bool and int(ckpt["mask"].sum()) == SIZE // 4
    assert "optimizers" not in ckpt  # slim export


def test_step2_attention_decreases_and_step3_starts_from_step2(teacher, data_dir, tmp_path):
    tpath = teacher / "model.pt"
    cfg2 = config(data_dir, "loop.steps=10", "distill.kind=at", f"distill.teacher={tpath}")
    train("recon-student", cfg2, tmp_path / "step2")
    slices = read_slice_set([data_dir], SIZE)
    task = ReconTask(cfg2, "recon-student", slices, kind="at", teacher=load_model(tpath))
    batch = task.make_batch(0, 0, torch.Generator().manual_seed(1))
    inputs = task.net_inputs(batch)
    with torch.no_grad():
        t_feat = task.teacher(*inputs).features
        before = attention_loss(task.model(*inputs).features, t_feat)
        step2 = load_model(tmp_path / "step2" / "model.pt").net
        after = attention_loss(step2(*inputs).features, t_feat)
    assert after < before
    # step 3 from step 2's weights: with lr 0 the weights must stay exactly step 2's
    cfg3 = config(
        data_dir,
        "loop.steps=2",
        "loop.lr=0.0",
        "distill.kind=imitation",
        f"distill.teacher={tpath}",
        f"distill.init={tmp_path / 'step2' / 'model.pt'}",
    )
    train("recon-student", cfg3, tmp_path / "step3")
    step3 = load_model(tmp_path / "step3" / "model.pt").net
    for (name, a), b in zip(step2.state_dict().items(), step3.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    log = [json.loads(x) for x in (tmp_path / "step3" / "log.jsonl").read_text().splitlines()]
    assert {"l1_target", "l1_teacher", "loss"} <= set(log[-1])
    assert log[-1]["loss"] == pytest.approx(
        0.5 * log[-1]["l1_target"] + 0.5 * log[-1]["l1_teacher"], rel=1e-5
    )


def test_at_layers_pair_the_chosen_activations(teacher, data_dir):
    """``distill.at_layers`` changes which ReLU output each block hands to attention transfer
    (here teacher conv1 / student conv1), not the weights; 0 keeps KD-MRI's middle layers."""
    from medistill.recon.dccnn import set_attention_layer

    tpath = teacher / "model.pt"
    slices = read_slice_set([data_dir], SIZE)
    cfg = config(data_dir, "distill.kind=at", f"distill.teacher={tpath}")
    plain = ReconTask(cfg, "recon-student", slices, kind="at", teacher=load_model(tpath))
    cfg = config(data_dir, "distill.kind=at", f"distill.teacher={tpath}", "distill.at_layers=[1,1]")
    first = ReconTask(cfg, "recon-student", slices, kind="at", teacher=load_model(tpath))
    inputs = plain.net_inputs(plain.make_batch(0, 0, torch.Generator().manual_seed(1)))
    with torch.no_grad():
        t_mid, t_first = plain.teacher(*inputs), first.teacher(*inputs)
    torch.testing.assert_close(t_mid.image, t_first.image)  # same weights, same output
    # cascade 1's feature is now the ReLU of its first convolution of the zero-filled input
    with torch.no_grad():
        manual = F.relu(first.teacher.blocks[0].convs[0](inputs[0]))
    torch.testing.assert_close(t_first.features[0], manual)
    assert not torch.allclose(t_mid.features[0], t_first.features[0])
    assert all(b.attention_layer == 3 for b in plain.teacher.blocks)
    assert all(b.attention_layer == 1 for b in first.model.blocks)
    set_attention_layer(first.teacher, 0)  # 0 restores the default pairing
    assert all(b.attention_layer == 3 for b in first.teacher.blocks)
    with pytest.raises(InputError, match="1..4"):
        set_attention_layer(first.teacher, 5)


def test_kd_runs_both_stages(teacher, data_dir, tmp_path):
    cfg = config(
        data_dir,
        "loop.steps=2",
        "distill.kind=kd",
        "distill.at_steps=3",
        f"distill.teacher={teacher / 'model.pt'}",
    )
    train("recon-student", cfg, tmp_path / "kd")
    assert load_checkpoint(tmp_path / "kd" / "at" / "last.pt")["step"] == 3
    final = load_checkpoint(tmp_path / "kd" / "model.pt", task="recon")
    assert final["step"] == 2 and final["config"]["distill"]["kind"] == "kd"
    # two cascades of the 3-conv student with 8 channels: (9*8+8) + (9*64+8) + (9*8+1)
    assert final["params"] == 2 * (80 + 584 + 73)


def test_kd_attention_stage_decays_at_the_same_fractions(teacher, data_dir, tmp_path):
    cfg = config(
        data_dir,
        "loop.steps=8",
        "loop.lr_decay_steps=[4, 6]",
        "distill.mode=kd",
        "distill.at_steps=4",
        f"distill.teacher={teacher / 'model.pt'}",
    )
    train("recon-student", cfg, tmp_path / "kd")
    at = load_config(ReconConfig, tmp_path / "kd" / "at" / "config.yaml")
    assert at.loop.steps == 4 and tuple(at.loop.lr_decay_steps) == (2, 3)
    final = load_config(ReconConfig, tmp_path / "kd" / "config.yaml")
    assert final.loop.steps == 8 and tuple(final.loop.lr_decay_steps) == (4, 6)


def test_cascade_imitation_pulls_every_cascade_towards_the_teachers(teacher, data_dir, tmp_path):
    def run(name: str, weight: float) -> float:
        cfg = config(
            data_dir,
            "loop.steps=10",
            "loop.log_every=1",
            "loop.lr=0.003",
            "distill.mode=imitation",
            "distill.alpha=1",  # the output term looks at the target only
            f"distill.cascade_imitation={weight}",
            f"distill.teacher={teacher / 'model.pt'}",
        )
        train("recon-student", cfg, tmp_path / name)
        student = load_model(tmp_path / name / "model.pt").net.eval()
        t_net = load_model(teacher / "model.pt").net.eval()
        task = ReconTask(cfg, "recon-student", read_slice_set([data_dir], size=SIZE))
        batch = task.make_batch(0, 0, torch.Generator().manual_seed(0))
        with torch.no_grad():
            s_out, t_out = student(*task.net_inputs(batch)), t_net(*task.net_inputs(batch))
        logged = [json.loads(line) for line in (tmp_path / name / "log.jsonl").open()]
        assert ("l1_teacher_cascades" in logged[-1]) == (weight > 0)
        return float(F.l1_loss(s_out.stages[0], t_out.stages[0]))

    # a large weight on the first cascade's distance to the teacher's makes it smaller
    assert run("heavy", 20.0) < run("off", 0.0)


def test_kd_trains_a_narrower_student_than_its_teacher(teacher, data_dir, tmp_path):
    cfg = config(
        data_dir,
        "model.student_channels=4",  # the teacher has 16
        "loop.steps=2",
        "distill.mode=kd",
        "distill.cascade_imitation=0.5",
        f"distill.teacher={teacher / 'model.pt'}",
    )
    train("recon-student", cfg, tmp_path / "kd")
    model = load_model(tmp_path / "kd" / "model.pt")
    assert model.net.blocks[0].convs[0].out_channels == 4
    assert load_model(teacher / "model.pt").net.blocks[0].convs[0].out_channels == 16


def test_cascade_imitation_needs_as_many_cascades(teacher, data_dir, tmp_path):
    cfg = config(
        data_dir,
        "model.cascades=3",
        "distill.mode=kd",
        "distill.cascade_imitation=1",
        f"distill.teacher={teacher / 'model.pt'}",
    )
    with pytest.raises(InputError, match="has 2 cascades, the student 3"):
        train("recon-student", cfg, tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_resume_continues_exactly(data_dir, tmp_path):
    straight = tmp_path / "straight"
    train("sr-student", config(data_dir, "loop.steps=4"), straight)
    split = tmp_path / "split"
    train("sr-student", config(data_dir, "loop.steps=2", "loop.checkpoint_every=2"), split)
    with pytest.raises(InputError, match="already holds a run"):
        train("sr-student", config(data_dir, "loop.steps=4"), split)
    train("sr-student", config(data_dir, "loop.steps=4"), split, resume=True)
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(split / "last.pt")
    assert a["step"] == b["step"] == 4
    for name, value in a["modules"]["model"].items():
        torch.testing.assert_close(value, b["modules"]["model"][name], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "extra,role,match",
    [
        (["distill.kind=magic"], "recon-student", "distill.kind"),
        (["distill.kind=at"], "recon-student", "distill.teacher"),
        (["mask.kind=radial"], "recon-teacher", "mask.kind"),
        (["distill.alpha=2"], "recon-student", "alpha"),
        (["distill.at_layers=[5, 0]"], "recon-student", "teacher has 5 convolutions"),
        (["distill.at_layers=[0, 3]"], "recon-student", "student has 3 convolutions"),
        (["distill.at_layers=[-1, 0]"], "recon-student", "at_layers"),
        (["distill.cascade_imitation=-1"], "recon-student", "cascade_imitation"),
        (["model.student_channels=-4"], "recon-student", "student_channels"),
        (["distill.cascade_imitation=1"], "sr-student", "cascade_imitation"),
        ([], "denoise-teacher", "role"),
    ],
)
def test_bad_configs_raise_one_line(data_dir, tmp_path, extra, role, match):
    with pytest.raises(InputError, match=match) as err:
        train(role, config(data_dir, *extra), tmp_path / "bad")
    assert "\n" not in str(err.value)


def test_teacher_with_another_mask_is_rejected(teacher, data_dir, tmp_path):
    cfg = config(
        data_dir,
        "mask.acceleration=8",
        "distill.kind=at",
        f"distill.teacher={teacher / 'model.pt'}",
    )
    with pytest.raises(InputError, match="another undersampling mask"):
        train("recon-student", cfg, tmp_path / "s")
    cfg = config(data_dir, "distill.kind=at", f"distill.teacher={teacher / 'model.pt'}")
    with pytest.raises(InputError, match="needs a sr-teacher"):
        train("sr-student", cfg, tmp_path / "s2")


def test_loaded_models_run_channels_last_with_the_same_output(teacher, data_dir):
    """load_model() puts the weights in the channels-last format (faster on oneDNN CPUs); the
    reconstruction equals that of the same weights in the default format."""
    import copy

    model = load_model(teacher / "model.pt")
    # a hidden convolution (with one input channel both formats are the same memory layout)
    conv = next(
        m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    target = torch.rand(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    inputs, _ = model.inputs(target)
    fast = model.run(*inputs)
    plain = copy.deepcopy(model)
    plain.net.to(memory_format=torch.contiguous_format)
    assert next(
        m for m in plain.net.modules() if isinstance(m, torch.nn.Conv2d)
    ).weight.is_contiguous()
    torch.testing.assert_close(fast, plain.run(*inputs), rtol=0, atol=1e-4)
    assert fast.shape == (2, 1, SIZE, SIZE)


def test_the_frozen_engine_gives_the_eager_output_once_traced_per_size(
    teacher, data_dir, monkeypatch
):
    """run() traces and freezes the network once per input size (any batch) and returns the
    eager network's reconstruction; a network that cannot be traced runs eagerly."""
    model = load_model(teacher / "model.pt")
    eager = model.with_engine("eager")  # the same weights, its own (empty) frozen cache
    assert eager.net is model.net and model.engine == "torchscript"
    with pytest.raises(InputError, match="engine"):
        model.with_engine("tensorrt")
    gen = torch.Generator().manual_seed(6)
    for batch, size in ((2, SIZE), (3, SIZE), (1, SIZE + 8)):
        inputs, _ = model.inputs(torch.rand(batch, 1, size, size, generator=gen))
        torch.testing.assert_close(model.run(*inputs), eager.run(*inputs), rtol=0, atol=1e-4)
    assert len(model._frozen) == 2 and all(
        isinstance(f, torch.jit.ScriptModule) for f in model._frozen.values()
    )
    assert not eager._frozen
    fresh = load_model(teacher / "model.pt")

    def refuse(*args, **kwargs):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    inputs, _ = fresh.inputs(torch.rand(2, 1, SIZE, SIZE, generator=gen))
    torch.testing.assert_close(fresh.run(*inputs), eager.run(*inputs), rtol=0, atol=1e-6)
    assert list(fresh._frozen.values()) == [None]
