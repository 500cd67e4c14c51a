"""DC-CNN and VDSR: parameter counts of KD-MRI, the data-consistency layer, attention features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from medistill.errors import InputError
from medistill.recon.config import ModelConfig
from medistill.recon.dccnn import DCCNN, ConvBlock, data_consistency, default_attention_layer
from medistill.recon.kspace import fft2, ifft2, simulate
from medistill.recon.masks import make_mask
from medistill.recon.model import build_model
from medistill.recon.vdsr import VDSR


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_equal_kdmri():
    cfg = ModelConfig()
    # METHODS: teacher 141,765, student 49,285 (65 % fewer)
    assert n_params(build_model(cfg, "recon-teacher")) == 141_765
    assert n_params(build_model(cfg, "recon-student")) == 49_285
    # VDSR: 1->64, (n-2) x 64->64, 64->1, 3x3 kernels with biases
    assert n_params(build_model(cfg, "sr-teacher")) == 640 + 9 * 36_928 + 577 == 333_569
    assert n_params(build_model(cfg, "sr-student")) == 640 + 5 * 36_928 + 577 == 185_857


def test_student_channels_narrow_only_the_student():
    cfg = ModelConfig(student_channels=16)
    assert n_params(build_model(cfg, "recon-teacher")) == 141_765
    # per cascade: 1->16 (160), 16->16 (2,320), 16->1 (145); five cascades
    assert n_params(build_model(cfg, "recon-student")) == 5 * (160 + 2_320 + 145) == 13_125
    widths = {
        m.out_channels
        for m in build_model(cfg, "recon-student").modules()
        if isinstance(m, torch.nn.Conv2d)
    }
    assert widths == {16, 1}


def test_paired_layers_are_kdmri_ones():
    assert default_attention_layer(5) == 3 and default_attention_layer(3) == 2
    assert default_attention_layer(11) == 6 and default_attention_layer(7) == 4


@pytest.fixture
def acquisition():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 16, 16, generator=g)
    mask = make_mask(16, 4, seed=1)
    m = torch.from_numpy(mask).float().reshape(1, 1, 1, 16)
    return x, simulate(x, m), m, mask


def test_dc_layer_keeps_measured_kspace_exactly(acquisition):
    _, sim, m, mask = acquisition
    estimate = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    out = data_consistency(estimate, sim.kspace, m)
    assert out.dtype == torch.float32 and out.shape == (2, 1, 16, 16)
    # the output is Re(IFFT(k)); its full spectrum is k before taking the real part
    k = m * sim.kspace + (1 - m) * fft2(estimate)
    np.testing.assert_allclose(out.numpy(), ifft2(k).real.numpy(), atol=1e-6)
    np.testing.assert_allclose(k[..., mask].numpy(), sim.kspace[..., mask].numpy(), atol=1e-6)
    # and unsampled lines come from the estimate
    np.testing.assert_allclose(k[..., ~mask].numpy(), fft2(estimate)[..., ~mask].numpy(), atol=1e-6)


def test_network_output_is_data_consistent(acquisition):
    _, sim, m, mask = acquisition
    torch.manual_seed(0)
    net = DCCNN(3, 3, 8)
    with torch.no_grad():
        out = net(sim.zero_filled, sim.kspace, m)
    # the spectrum of a real image is Hermitian: the real-part step changes unsampled lines only
    # through the symmetric partner; with a symmetric mask the sampled lines stay exact
    sym = mask & mask[np.r_[0, 16 - np.arange(1, 16)]]
    k_out = fft2(out.image)
    np.testing.assert_allclose(k_out[..., sym].numpy(), sim.kspace[..., sym].numpy(), atol=1e-5)


@pytest.mark.parametrize("size", [(16, 16), (16, 10), (15, 16), (13, 11)])
def test_network_equals_cascades_with_the_shifted_data_consistency(size):
    # even sizes take the shift-free path (the measurement moved to FFT order once); odd ones
    # the plain one: both must equal blocks + data_consistency in the centred layout
    g = torch.Generator().manual_seed(4)
    h, w = size
    x = torch.rand(2, 1, h, w, generator=g)
    m = (torch.rand(1, 1, 1, w, generator=g) > 0.5).float()
    sim = simulate(x, m)
    torch.manual_seed(0)
    net = DCCNN(3, 3, 8)
    with torch.no_grad():
        out = net(sim.zero_filled, sim.kspace, m)
        ref = sim.zero_filled
        for block in net.blocks:
            ref = data_consistency(ref + block(ref)[0], sim.kspace, m)
    assert out.image.shape == (2, 1, h, w)
    np.testing.assert_allclose(out.image.numpy(), ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("residual", [True, False])
def test_full_mask_returns_the_kspace_image(acquisition, residual):
    x, _, _, _ = acquisition
    full = torch.ones(1, 1, 1, 16)
    sim = simulate(x, full)
    torch.manual_seed(0)
    net = DCCNN(5, 5, residual=residual)
    out = net(torch.rand_like(x), sim.kspace, full)  # whatever the CNN does
    np.testing.assert_allclose(out.image.detach().numpy(), x.numpy(), atol=1e-6)


def test_attention_features_are_the_relu_outputs_of_the_paired_conv():
    torch.manual_seed(0)
    net = DCCNN(5, 5)
    captured = []
    net.blocks[1].convs[2].register_forward_hook(lambda m, i, o: captured.append(F.relu(o)))
    x = torch.rand(2, 1, 16, 16)
    full = torch.ones(1, 1, 1, 16)
    out = net(x, fft2(x), full)
    assert len(out.features) == 5
    assert all(f.shape == (2, 32, 16, 16) for f in out.features)
    torch.testing.assert_close(out.features[1], captured[0])
    student = DCCNN(5, 3)(x, fft2(x), full)
    assert len(student.features) == 5 and all(f.min() >= 0 for f in student.features)


def test_vdsr_global_residual_and_feature():
    torch.manual_seed(0)
    net = VDSR(7)
    with torch.no_grad():
        net.block.convs[-1].weight.zero_()
        net.block.convs[-1].bias.zero_()
    x = torch.rand(1, 1, 12, 12)
    out = net(x)
    torch.testing.assert_close(out.image, x)  # identity when the CNN outputs 0
    assert len(out.features) == 1 and out.features[0].shape == (1, 64, 12, 12)
    no_res = VDSR(7, residual=False)
    with torch.no_grad():
        no_res.block.convs[-1].weight.zero_()
        no_res.block.convs[-1].bias.fill_(0.25)
    torch.testing.assert_close(no_res(x).image, torch.full_like(x, 0.25))


def test_bad_shapes_and_settings_raise():
    with pytest.raises(InputError, match="attention_layer"):
        ConvBlock(3, 8, attention_layer=3)  # the last conv has no ReLU
    with pytest.raises(InputError, match="convs"):
        ConvBlock(1, 8, attention_layer=1)
    net = DCCNN(1, 3, 4)
    with pytest.raises(InputError, match=r"\(B, 1, H, W\)"):
        net(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8, dtype=torch.complex64), 1)
    with pytest.raises(InputError, match="kspace"):
        net(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 6, dtype=torch.complex64), 1)


def test_paired_latency_times_both_networks_on_one_slice():
    from medistill.recon.config import ReconConfig
    from medistill.recon.inference import paired_latency
    from medistill.recon.model import ReconModel

    cfg = ReconConfig()
    cfg.model.cascades, cfg.model.channels = 2, 4
    models = [
        ReconModel(build_model(cfg.model, role).eval(), role, cfg, None, 0)
        for role in ("recon-teacher", "recon-student")
    ]
    p = paired_latency(models[0], models[1], 16, pairs=4, threads=1)
    assert p["pairs"] == 4 and p["reference_ms"] > 0 and p["model_ms"] > 0
    assert 0 < p["ratio_p10"] <= p["ratio_median"] <= p["ratio_p90"]
    assert models[0]._frozen and models[1]._frozen  # the default engine ran (traced, frozen)
