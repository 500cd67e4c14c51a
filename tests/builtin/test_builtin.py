"""Built-in models: the shipped weights match their card, load, register without --model, and
register held-out brains far better than no registration."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from medistill.builtin import DEFAULT, available, card, pack_checkpoint, resolve_model, sha256
from medistill.cli.main import main
from medistill.errors import InputError
from medistill.registration.model import load_model


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_model_is_shipped_and_matches_its_card():
    models = available()
    assert DEFAULT in models
    meta = card(DEFAULT)
    assert sha256(models[DEFAULT].weights) == meta["sha256"]
    assert models[DEFAULT].weights.stat().st_size <= 10 * 2**20
    for key in ("training", "evaluation", "intended_use", "limitations"):
        assert meta[key]
    assert meta["training"]["data_licence"] and meta["training"]["command"]
    assert all(entry["command"] for entry in meta["evaluation"])


def test_resolve_model_names_paths_and_default(tmp_path, monkeypatch):
    weights = available()[DEFAULT].weights
    assert resolve_model(None) == weights
    assert resolve_model(DEFAULT) == weights
    assert resolve_model(tmp_path / "x.pt") == tmp_path / "x.pt"
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT).write_text("a file named like the model wins")
    assert resolve_model(DEFAULT).resolve() == (tmp_path / DEFAULT).resolve()
    with pytest.raises(InputError, match="no built-in model"):
        card("no-such-model")


def test_builtin_loads_in_float32_with_weights_from_float16():
    model, ckpt, cfg = load_model(resolve_model(None))
    assert ckpt["packed_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert cfg.model.ndim == 3 and tuple(cfg.data.shape) == (64, 64, 64)


def test_pack_checkpoint_halves_size_and_keeps_the_field(tmp_path):
    src = resolve_model(None)
    model, _, _ = load_model(src)
    # repack the packed model in float32 (lossless from float16), then back to float16
    wide = tmp_path / "wide.pt"
    pack_checkpoint(src, wide, dtype=torch.float32)
    narrow = tmp_path / "narrow.pt"
    digest = pack_checkpoint(wide, narrow)
    assert digest == sha256(narrow)
    assert narrow.stat().st_size < 0.6 * wide.stat().st_size
    again, _, _ = load_model(narrow)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_pack_checkpoint_refuses_nan_weights(tmp_path):
    ckpt = torch.load(resolve_model(None), weights_only=True)
    key = next(k for k, v in ckpt["modules"]["model"].items() if v.is_floating_point())
    ckpt["modules"]["model"][key] = ckpt["modules"]["model"][key].float() * float("nan")
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    with pytest.raises(InputError, match="NaN or Inf"):
        pack_checkpoint(bad, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_models_cli_lists_and_prints_the_card(capsys):
    code, out, err = cli(capsys, "models", "--sizes", "64")
    assert code == 0, err
    assert f"{DEFAULT} (default)" in out and "GMAC@64^3" in out
    code, out, err = cli(capsys, "models", "info", DEFAULT)
    assert code == 0, err
    assert "data_licence" in out and "sha256 matches the card" in out
    code, out, err = cli(capsys, "models", "info", "nope")
    assert code == 2 and err.count("\n") == 1 and "no built-in model 'nope'" in err


@pytest.mark.shared_data
@pytest.mark.slow
def test_builtin_registers_heldout_brains_without_model(shared_data, tmp_path, capsys):
    """The default model (no --model) on two held-out subjects (never used in training): Dice
    far above no registration; a corrupt or untrained network would stay near the identity."""
    from medistill.data import make_heldout_pairs

    pairs = make_heldout_pairs(shared_data / "labelmaps", tmp_path / "pairs", subjects=2)
    code, out, err = cli(capsys, "evaluate", "--pairs", pairs, "--out", tmp_path / "eval")
    assert code == 0, err
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    with open(pairs, newline="") as fh:
        row = next(csv.DictReader(fh))
    code, _, err = cli(
        capsys,
        "register",
        "--fixed",
        pairs.parent / row["fixed"],
        "--moving",
        pairs.parent / row["moving"],
        "--moving-labels",
        pairs.parent / row["moving_labels"],
        "--out",
        tmp_path / "one",
    )
    assert code == 0, err
    assert (tmp_path / "one" / "warped_labels.nii.gz").is_file()
    assert summary["dice_mean"] > 0.30, summary


def test_one_extreme_voxel_does_not_move_the_result():
    """A single voxel at 3e38 (a corrupt value that is still finite in float32) must not change
    the registration: the normalisation and the centre-of-mass start use robust percentiles."""
    import numpy as np

    from medistill.io import Image
    from medistill.registration.methods import network_registrar
    from tests.bad_inputs import _affine, _blob

    registrar, _, _, _ = network_registrar(resolve_model(None))
    fixed = Image(_blob((40, 44, 36)), _affine())
    moving = _blob((40, 44, 36), shift=3.0)
    clean = registrar(fixed, Image(moving, _affine()))
    moving[0, 0, 0] = 3e38
    spiked = registrar(fixed, Image(moving, _affine()))
    assert np.abs(clean.disp_voxel - spiked.disp_voxel).max() < 0.1
