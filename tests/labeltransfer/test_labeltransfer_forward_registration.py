"""LT-Net with a registration network as G_F (``model.forward_registration``)."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.labeltransfer import LabelTransferTask, load_model, train
from medistill.labeltransfer.model import RegistrationGenerator, transfer_network
from medistill.registration.config import RegistrationConfig
from medistill.registration.model import build_model as build_registration
from medistill.registration.model import checkpoint_meta, export_model
from tests.labeltransfer.test_labeltransfer_cycles import _tiny_3d_data
from tests.labeltransfer.test_labeltransfer_training import tiny_config


def _registration_checkpoint(path, ndim: int = 3):
    """A small registration student (affine stem + 1 LDR cascade) with non-trivial weights."""
    cfg = RegistrationConfig()
    cfg.model.ndim, cfg.model.cascades = ndim, 1
    cfg.data.shape = (16,) * ndim
    torch.manual_seed(3)
    net = build_registration(cfg.model, "student")
    with torch.no_grad():  # a field that is not identity, so that loading shows in the output
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {"step": 0, **checkpoint_meta(cfg, "student", net)}
    state["modules"] = {"model": net.state_dict()}
    export_model(state, path)
    return net


def _config_3d(**loss):
    cfg = tiny_config(gan=0.0, **loss)
    cfg.model.ndim, cfg.data.shape, cfg.loop.steps = 3, (16, 16, 16), 1
    return cfg


def test_forward_generator_is_the_registration_network(tmp_path):
    """G_F computes exactly the registration network's composed field (weights loaded), the
    trained checkpoint rebuilds it without the source file, and forward_init carries it on."""
    source = _registration_checkpoint(tmp_path / "reg.pt").eval()
    cfg = _config_3d()
    cfg.model.forward_registration = str(tmp_path / "reg.pt")
    task = LabelTransferTask(cfg, _tiny_3d_data())
    assert isinstance(task.net.forward_net, RegistrationGenerator)
    fixed, moving = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        want = source(fixed, moving).disp
        got = task.net.forward_net.eval()(fixed, moving)
    torch.testing.assert_close(got, want)
    assert got.abs().max() > 1e-3  # not an identity field: the weights were really loaded

    train(cfg, tmp_path / "lt", data=_tiny_3d_data())
    (tmp_path / "reg.pt").unlink()  # the label-transfer checkpoint must stand alone
    net, ckpt, _ = load_model(tmp_path / "lt" / "model.pt")
    assert ckpt["forward_network"]["role"] == "student"
    assert isinstance(net.forward_net, RegistrationGenerator)
    with torch.no_grad():  # segmenting runs G_F through the usual cascade wrapper
        torch.testing.assert_close(
            transfer_network(net)(fixed, moving).disp, net.forward_net(fixed, moving)
        )

    # a later run started from this checkpoint gets the same kind of G_F and its weights
    later = _config_3d()
    later.model.forward_init = str(tmp_path / "lt" / "model.pt")
    task2 = LabelTransferTask(later, _tiny_3d_data())
    assert isinstance(task2.net.forward_net, RegistrationGenerator)
    for key, value in net.forward_net.state_dict().items():
        assert torch.equal(task2.net.forward_net.state_dict()[key], value), key


def test_forward_registration_refusals(tmp_path):
    from medistill.labeltransfer.training import check_config

    _registration_checkpoint(tmp_path / "reg2d.pt", ndim=2)
    cfg = _config_3d()
    cfg.model.forward_registration = str(tmp_path / "reg2d.pt")
    with pytest.raises(InputError, match="2-D registration network for a 3-D"):
        LabelTransferTask(cfg, _tiny_3d_data())
    # a registration checkpoint whose weights do not fit its own architecture: one line
    from medistill.train import load_checkpoint, save_checkpoint

    _registration_checkpoint(tmp_path / "reg.pt")
    broken = load_checkpoint(tmp_path / "reg.pt")
    broken["modules"]["model"] = {k: v[..., :1] for k, v in broken["modules"]["model"].items()}
    save_checkpoint(tmp_path / "broken.pt", broken)
    cfg.model.forward_registration = str(tmp_path / "broken.pt")
    with pytest.raises(InputError, match="broken.pt: checkpoint does not hold a usable G_F") as err:
        LabelTransferTask(cfg, _tiny_3d_data())
    assert "\n" not in str(err.value)
    cfg.model.forward_registration = str(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="missing.pt"):
        LabelTransferTask(cfg, _tiny_3d_data())
    cfg.model.forward_init = str(tmp_path / "other.pt")
    with pytest.raises(InputError, match="set only one"):
        check_config(cfg)


def test_backward_generator_is_the_registration_network(tmp_path):
    """model.backward_registration: G_B computes exactly the registration network's field
    (fixed = atlas, moving = u_bar), the trained checkpoint rebuilds both generators without the
    source file, and a broken or 2-D source is refused in one line naming the setting."""
    source = _registration_checkpoint(tmp_path / "reg.pt").eval()
    cfg = _config_3d()
    cfg.model.forward_registration = cfg.model.backward_registration = str(tmp_path / "reg.pt")
    task = LabelTransferTask(cfg, _tiny_3d_data())
    assert isinstance(task.net.backward_net, RegistrationGenerator)
    fixed, moving = torch.rand(1, 1, 16, 16, 16), torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            task.net.backward_net.eval()(fixed, moving), source(fixed, moving).disp
        )
    train(cfg, tmp_path / "lt", data=_tiny_3d_data())
    (tmp_path / "reg.pt").unlink()
    net, ckpt, _ = load_model(tmp_path / "lt" / "model.pt")
    assert ckpt["backward_network"]["role"] == "student"
    assert isinstance(net.backward_net, RegistrationGenerator)

    _registration_checkpoint(tmp_path / "reg2d.pt", ndim=2)
    cfg.model.backward_registration = str(tmp_path / "reg2d.pt")
    cfg.model.forward_registration = ""
    with pytest.raises(InputError, match="model.backward_registration .*2-D registration"):
        LabelTransferTask(cfg, _tiny_3d_data())
    # forward-only runs have no G_B: the setting is not read
    only = _config_3d(cyc=0.0, anatomy=0.0, trans=0.0, diff=0.0)
    only.model.backward_registration = str(tmp_path / "missing.pt")
    assert LabelTransferTask(only, _tiny_3d_data()).net.backward_net is None
