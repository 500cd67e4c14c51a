"""ONNX export: the onnxruntime field equals PyTorch's within 1e-4 voxel, `register --engine
onnx` runs it, and without onnxruntime the engine is one clear line (exit 2)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from medistill.cli.main import main


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    code = main([
        "train", "student", "--config", "demo", "--out", str(root / "run"),
        "--set", "loop.steps=2", "--set", "data.subjects=3", "--set", "data.pairs=2",
        "--set", "loop.progress=false",
    ])  # fmt: skip
    assert code == 0
    return root


def test_onnx_field_equals_pytorch(student, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from medistill.registration.model import load_model
    from medistill.registration.onnx import OnnxField

    onnx_path = student / "student.onnx"
    assert main(["export", "--model", str(student / "run" / "model.pt"), "--onnx",
                 str(onnx_path)]) == 0  # fmt: skip
    field = OnnxField(onnx_path)
    assert field.shape == (64, 64, 64)
    g = torch.Generator().manual_seed(0)
    fixed, moving = (torch.rand(1, 1, 64, 64, 64, generator=g) for _ in range(2))
    net = load_model(student / "run" / "model.pt")[0]
    with torch.no_grad():
        ref = net(fixed, moving).disp
    assert (field(fixed, moving) - ref).abs().max() < 1e-4


def test_register_with_the_onnx_engine(student, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import nibabel as nib

    from medistill.data.embedded import mni_atlas
    from medistill.io import save

    img, _ = mni_atlas(2)
    save(img, tmp_path / "f.nii.gz")
    save(img, tmp_path / "m.nii.gz")
    onnx_path = tmp_path / "s.onnx"
    assert main(["export", "--model", str(student / "run" / "model.pt"), "--onnx",
                 str(onnx_path)]) == 0  # fmt: skip
    outs = {}
    for engine, model in (("onnx", onnx_path), ("torch", student / "run" / "model.pt")):
        out = tmp_path / engine
        code = main(["register", "--model", str(model), "--engine", engine, "--fixed",
                     str(tmp_path / "f.nii.gz"), "--moving", str(tmp_path / "m.nii.gz"),
                     "--out", str(out)])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        outs[engine] = np.asarray(nib.load(out / "disp_voxel.nii.gz").dataobj)
    assert np.abs(outs["onnx"] - outs["torch"]).max() < 1e-3


def test_onnx_engine_without_onnxruntime_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    out = str(tmp_path / "o")
    args = ["register", "--model", str(tmp_path / "x.onnx"), "--engine", "onnx",
            "--fixed", "f.nii.gz", "--moving", "m.nii.gz", "--out", out]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "medistill[onnx]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_bench_has_the_onnxruntime_row_or_says_why_not(capsys):
    code = main(["bench", "--sizes", "64", "--repeats", "1"])
    out = capsys.readouterr().out
    assert code == 0
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        assert "onnxruntime row skipped" in out
    else:
        assert "half res, ORT" in out
