"""The bad-input catalogue: inputs a user could give that every command must refuse with exit 2,
one line on stderr, no traceback, nothing new on disk and pre-existing output intact.

Each case is generated in code (no binary fixtures): a function of the case folder and the shared
inputs folder that writes what it needs and returns the command line. Used by
``tests/cli/test_bad_input_suite.py`` and by ``benchmarks/bad_inputs.py`` (a table of the same
cases). The catalogue spans the families of issue 12: output paths, images, label maps,
checkpoints, CSV files, landmarks, configs and options, k-space and masks.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["CASES", "Case", "Outcome", "make_inputs", "run_case", "snapshot"]

SHAPE = (24, 28, 20)
SPACING = 2.0


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        name: unique id.
        family: what kind of input is wrong.
        build: ``build(case_dir, inputs) -> argv`` writes the case's own files into ``case_dir``
            and returns the command line (without ``medistill``).
        out: the case's output path relative to ``case_dir``: it must not appear (``absent``),
            or it exists before and must stay byte-identical (``sentinel`` folder with a file,
            ``file``).
        state: ``absent``, ``sentinel`` or ``file``.
        expect: a fragment the one-line message must contain (the option or file it names).
    """

    name: str
    family: str
    build: Callable[[Path, Path], list[str]]
    out: str = "out"
    state: str = "absent"
    expect: str = ""


CASES: dict[str, Case] = {}


def case(family: str, *, out: str = "out", state: str = "absent", expect: str = ""):
    """Register the decorated builder as a case named after the function."""

    def wrap(fn: Callable[[Path, Path], list[str]]) -> Callable[[Path, Path], list[str]]:
        name = fn.__name__.removeprefix("case_").replace("_", "-")
        assert name not in CASES, name
        CASES[name] = Case(name, family, fn, out, state, expect)
        return fn

    return wrap


# ---------------------------------------------------------------------------------- inputs
def _affine(spacing: float = SPACING, origin=(-20.0, -30.0, -10.0)) -> np.ndarray:
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def _blob(shape=SHAPE, shift: float = 0.0) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"), -1)
    centre = (np.asarray(shape) - 1) / 2 + np.array([shift, 0.0, 0.0])
    r = np.sqrt((((idx - centre) / (np.asarray(shape) / 3.5)) ** 2).sum(-1))
    return np.clip(1.0 - r, 0, None).astype(np.float32) + 0.05 * (idx[..., 0] / shape[0])


def _save(data: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, _affine() if affine is None else affine), str(path))
    return path


def make_inputs(folder: Path) -> Path:
    """Valid inputs every case may point at: images, labels, a pairs CSV, a recon checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    _save(_blob(), folder / "fixed.nii.gz")
    _save(_blob(shift=1.5), folder / "moving.nii.gz")
    labels = (_blob() > 0.3).astype(np.int16) + (_blob() > 0.6).astype(np.int16)
    _save(labels, folder / "fixed_seg.nii.gz")
    _save(labels, folder / "moving_seg.nii.gz")
    (folder / "pairs.csv").write_text(
        "fixed,moving,fixed_labels,moving_labels\n"
        "fixed.nii.gz,moving.nii.gz,fixed_seg.nii.gz,moving_seg.nii.gz\n"
    )
    rng = np.random.default_rng(0)
    slice2d = np.clip(_blob((32, 32, 1))[..., 0] + 0.05 * rng.random((32, 32)), 0, None)
    _save(np.stack([slice2d] * 3, -1).astype(np.float32), folder / "slices.nii.gz")
    np.save(folder / "kspace.npy", np.fft.fftshift(np.fft.fft2(slice2d)).astype(np.complex64))
    mask = np.zeros(32, np.float32)
    mask[::4] = 1
    mask[14:18] = 1
    np.save(folder / "mask.npy", mask)
    _recon_checkpoint(folder)
    return folder


def _recon_checkpoint(folder: Path) -> None:
    from medistill.cli.main import main

    data = folder / "recon_data"
    data.mkdir(exist_ok=True)
    _save(np.clip(_blob((32, 32, 3)), 0, None), data / "vol.nii.gz")
    argv = [
        "train", "recon-teacher", "--config", "test", "--out", str(folder / "recon"),
        "--set", "loop.steps=1", "--set", "data.source=files", "--set", f"data.paths=[{data}]",
        "--set", "model.cascades=2", "--set", "model.channels=4", "--set", "loop.progress=false",
    ]  # fmt: skip
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = main(argv)
    assert code == 0, "could not train the tiny recon checkpoint"


def _reg(case_dir: Path, inputs: Path, **replace: str) -> list[str]:
    """``register`` of the valid pair with some options replaced (value '' drops the option)."""
    opts = {
        "--fixed": str(inputs / "fixed.nii.gz"),
        "--moving": str(inputs / "moving.nii.gz"),
        "--out": str(case_dir / "out"),
    }
    for key, value in replace.items():
        opts["--" + key.replace("_", "-")] = value
    argv = ["register"]
    for key, value in opts.items():
        if value != "":
            argv += [key, value]
    return argv


def _eval(case_dir: Path, pairs: Path, *extra: str) -> list[str]:
    return ["evaluate", "--pairs", str(pairs), "--out", str(case_dir / "out"), *extra]


def _train(case_dir: Path, *sets: str, role: str = "student", config: str = "demo") -> list[str]:
    argv = ["train", role, "--config", config, "--out", str(case_dir / "out")]
    for item in sets:
        argv += ["--set", item]
    return argv


def _copy_pair_csv(case_dir: Path, inputs: Path, text: str) -> Path:
    path = case_dir / "pairs.csv"
    path.write_text(text.replace("INPUTS", str(inputs)))
    return path


HEADER = "fixed,moving,fixed_labels,moving_labels\n"
ROW = "INPUTS/fixed.nii.gz,INPUTS/moving.nii.gz,INPUTS/fixed_seg.nii.gz,INPUTS/moving_seg.nii.gz\n"


# ---------------------------------------------------------------------------- output paths
@case("output path", state="file", expect="--out")
def case_register_out_is_a_file(d: Path, i: Path) -> list[str]:
    (d / "out").write_text("an existing file")
    return _reg(d, i)


@case("output path", out="file/out", expect="--out")
def case_register_out_below_a_file(d: Path, i: Path) -> list[str]:
    (d / "file").write_text("x")
    return _reg(d, i, out=str(d / "file" / "out"))


@case("output path", out="", expect="--out")
def case_register_out_empty(d: Path, i: Path) -> list[str]:
    return _reg(d, i, out="") + ["--out", ""]


@case("output path", out="/proc/medistill-out", expect="--out")
def case_register_out_not_writable(d: Path, i: Path) -> list[str]:
    return _reg(d, i, out="/proc/medistill-out")


@case("output path", state="file", expect="--out")
def case_evaluate_out_is_a_file(d: Path, i: Path) -> list[str]:
    (d / "out").write_text("an existing file")
    return _eval(d, i / "pairs.csv", "--method", "optimise")


@case("output path", state="file", expect="--out")
def case_train_out_is_a_file(d: Path, i: Path) -> list[str]:
    (d / "out").write_text("an existing file")
    return _train(d)


@case("output path", out="file/run", expect="--out")
def case_train_out_below_a_file(d: Path, i: Path) -> list[str]:
    (d / "file").write_text("x")
    argv = _train(d)
    argv[argv.index("--out") + 1] = str(d / "file" / "run")
    return argv


@case("output path", state="file", expect="--out")
def case_selfcheck_out_is_a_file(d: Path, i: Path) -> list[str]:
    (d / "out").write_text("an existing file")
    return ["selfcheck", "--out", str(d / "out")]


@case("output path", state="file", expect="--out")
def case_demo_out_is_a_file(d: Path, i: Path) -> list[str]:
    (d / "out").write_text("an existing file")
    return ["demo", "--out", str(d / "out")]


@case("output path", state="sentinel", expect="--out")
def case_segment_out_is_a_folder(d: Path, i: Path) -> list[str]:
    _sentinel(d / "out")
    return ["segment", "--model", str(i / "recon" / "model.pt"), "--out", str(d / "out"),
            str(i / "fixed.nii.gz")]  # fmt: skip


@case("output path", state="sentinel", expect="--out")
def case_reconstruct_out_is_a_folder(d: Path, i: Path) -> list[str]:
    _sentinel(d / "out")
    return ["reconstruct", "--model", str(i / "recon" / "model.pt"), "--out", str(d / "out"),
            "--image", str(i / "slices.nii.gz")]  # fmt: skip


@case("output path", out="missing/sub/out.nii.gz", expect="--out")
def case_reconstruct_out_below_a_file(d: Path, i: Path) -> list[str]:
    (d / "missing").write_text("x")
    return ["reconstruct", "--model", str(i / "recon" / "model.pt"),
            "--out", str(d / "missing" / "sub" / "out.nii.gz"),
            "--image", str(i / "slices.nii.gz")]  # fmt: skip


@case("output path", state="sentinel", out="model.onnx", expect="--onnx")
def case_export_onnx_is_a_folder(d: Path, i: Path) -> list[str]:
    _sentinel(d / "model.onnx")
    return ["export", "--model", "brain", "--onnx", str(d / "model.onnx")]


def _sentinel(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "previous-result.txt").write_text("must survive")


# ---------------------------------------------------------------------------------- images
@case("image", expect="nope.nii.gz")
def case_fixed_missing(d: Path, i: Path) -> list[str]:
    return _reg(d, i, fixed=str(d / "nope.nii.gz"))


@case("image", expect="garbage.nii.gz")
def case_fixed_not_nifti(d: Path, i: Path) -> list[str]:
    (d / "garbage.nii.gz").write_bytes(b"this is not an image" * 10)
    return _reg(d, i, fixed=str(d / "garbage.nii.gz"))


@case("image", expect="empty.nii.gz")
def case_fixed_empty_file(d: Path, i: Path) -> list[str]:
    (d / "empty.nii.gz").write_bytes(b"")
    return _reg(d, i, fixed=str(d / "empty.nii.gz"))


@case("image", expect="folder")
def case_fixed_is_a_folder(d: Path, i: Path) -> list[str]:
    (d / "folder").mkdir()
    return _reg(d, i, fixed=str(d / "folder"))


@case("image", expect="unknown.xyz")
def case_fixed_unknown_format(d: Path, i: Path) -> list[str]:
    (d / "unknown.xyz").write_text("1 2 3")
    return _reg(d, i, fixed=str(d / "unknown.xyz"))


@case("image", expect="rgb.nii.gz")
def case_fixed_rgb(d: Path, i: Path) -> list[str]:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = (255 * np.clip(_blob(), 0, 1)).astype(np.uint8)
    img = nib.Nifti1Image(rgb, _affine())
    nib.save(img, str(d / "rgb.nii.gz"))
    return _reg(d, i, fixed=str(d / "rgb.nii.gz"))


@case("image", expect="vector.nii.gz")
def case_fixed_vector_valued(d: Path, i: Path) -> list[str]:
    _save(np.stack([_blob()] * 3, -1), d / "vector.nii.gz")
    return _reg(d, i, fixed=str(d / "vector.nii.gz"))


@case("image", expect="flat.nii.gz")
def case_fixed_2d(d: Path, i: Path) -> list[str]:
    _save(_blob()[:, :, 0], d / "flat.nii.gz")
    return _reg(d, i, fixed=str(d / "flat.nii.gz"))


@case("image", expect="zeros.nii.gz")
def case_fixed_all_zero(d: Path, i: Path) -> list[str]:
    _save(np.zeros(SHAPE, np.float32), d / "zeros.nii.gz")
    return _reg(d, i, fixed=str(d / "zeros.nii.gz"))


@case("image", expect="constant.nii.gz")
def case_moving_constant(d: Path, i: Path) -> list[str]:
    _save(np.full(SHAPE, 7.0, np.float32), d / "constant.nii.gz")
    return _reg(d, i, moving=str(d / "constant.nii.gz"))


@case("image", expect="nan.nii.gz")
def case_fixed_nan(d: Path, i: Path) -> list[str]:
    data = _blob()
    data[3, 4, 5] = np.nan
    _save(data, d / "nan.nii.gz")
    return _reg(d, i, fixed=str(d / "nan.nii.gz"))


@case("image", expect="inf.nii.gz")
def case_moving_inf(d: Path, i: Path) -> list[str]:
    data = _blob()
    data[3, 4, 5] = np.inf
    _save(data, d / "inf.nii.gz")
    return _reg(d, i, moving=str(d / "inf.nii.gz"))


@case("image", expect="huge.nii.gz")
def case_fixed_float64_beyond_float32(d: Path, i: Path) -> list[str]:
    data = _blob().astype(np.float64) * 1e300
    _save(data, d / "huge.nii.gz")
    return _reg(d, i, fixed=str(d / "huge.nii.gz"))


@case("image", expect="complex.nii.gz")
def case_fixed_complex(d: Path, i: Path) -> list[str]:
    _save(_blob().astype(np.complex64), d / "complex.nii.gz")
    return _reg(d, i, fixed=str(d / "complex.nii.gz"))


def _raw_nifti(path: Path, data: np.ndarray, srows: np.ndarray) -> Path:
    """A single-file NIfTI written field by field (no affine decomposition by nibabel), with the
    sform rows ``srows`` ``(3, 4)`` and no qform."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = srows
    hdr["vox_offset"] = 352
    with open(path, "wb") as fh:
        fh.write(hdr.binaryblock)
        fh.write(b"\0" * (352 - len(hdr.binaryblock)))
        fh.write(np.asarray(data, order="F").tobytes(order="F"))
    return path


@case("image", expect="singular.nii")
def case_fixed_singular_affine(d: Path, i: Path) -> list[str]:
    srows = _affine()[:3].copy()
    srows[:, 2] = 0.0
    return _reg(d, i, fixed=str(_raw_nifti(d / "singular.nii", _blob(), srows)))


@case("image", expect="nan_affine.nii")
def case_fixed_nan_affine(d: Path, i: Path) -> list[str]:
    srows = _affine()[:3].copy()
    srows[0, 3] = np.nan
    return _reg(d, i, fixed=str(_raw_nifti(d / "nan_affine.nii", _blob(), srows)))


@case("image", expect="tiny_voxels.nii.gz")
def case_fixed_voxel_size_implausible(d: Path, i: Path) -> list[str]:
    _save(_blob(), d / "tiny_voxels.nii.gz", _affine(spacing=1e-6))
    return _reg(d, i, fixed=str(d / "tiny_voxels.nii.gz"))


@case("image", expect="giant.nii")
def case_fixed_declares_huge_size(d: Path, i: Path) -> list[str]:
    """A header declaring 4096^3 float32 voxels (256 GB) over a few bytes of data: refused from
    the header, before reading."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4096, 4096, 4096))
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(_affine(), code=1)
    hdr.set_qform(_affine(), code=1)
    path = d / "giant.nii"
    with open(path, "wb") as fh:
        fh.write(hdr.binaryblock)
        fh.write(b"\0" * (352 - len(hdr.binaryblock)))
        fh.write(np.zeros(64, np.float32).tobytes())
    return _reg(d, i, fixed=str(path))


@case("image", expect="truncated.nii")
def case_fixed_truncated(d: Path, i: Path) -> list[str]:
    raw = nib.Nifti1Image(_blob(), _affine()).to_bytes()
    (d / "truncated.nii").write_bytes(raw[: len(raw) // 2])
    return _reg(d, i, fixed=str(d / "truncated.nii"))


@case("image", expect="one_slice.nii.gz")
def case_fixed_one_slice_volume(d: Path, i: Path) -> list[str]:
    _save(_blob()[:, :, :1], d / "one_slice.nii.gz")
    return _reg(d, i, fixed=str(d / "one_slice.nii.gz"))


@case("image", expect="info")
def case_info_missing_file(d: Path, i: Path) -> list[str]:
    return ["info", str(d / "nothing-here.nii.gz")]


# ------------------------------------------------------------------------------ label maps
@case("label map", expect="small_seg.nii.gz")
def case_labels_other_shape(d: Path, i: Path) -> list[str]:
    _save(np.ones((10, 10, 10), np.int16), d / "small_seg.nii.gz")
    return _reg(d, i, moving_labels=str(d / "small_seg.nii.gz"))


@case("label map", expect="shifted_seg.nii.gz")
def case_labels_origin_60mm_away(d: Path, i: Path) -> list[str]:
    labels = np.asarray(nib.load(str(i / "moving_seg.nii.gz")).dataobj)
    _save(labels, d / "shifted_seg.nii.gz", _affine(origin=(40.0, -30.0, -10.0)))
    return _reg(d, i, moving_labels=str(d / "shifted_seg.nii.gz"))


@case("label map", expect="fractional_seg.nii.gz")
def case_labels_fractional(d: Path, i: Path) -> list[str]:
    _save(_blob(), d / "fractional_seg.nii.gz")
    return _reg(d, i, moving_labels=str(d / "fractional_seg.nii.gz"))


@case("label map", expect="nan_seg.nii.gz")
def case_labels_nan(d: Path, i: Path) -> list[str]:
    labels = np.asarray(nib.load(str(i / "moving_seg.nii.gz")).dataobj).astype(np.float32)
    labels[0, 0, 0] = np.nan
    _save(labels, d / "nan_seg.nii.gz")
    return _reg(d, i, moving_labels=str(d / "nan_seg.nii.gz"))


@case("label map", expect="negative_seg.nii.gz")
def case_labels_negative(d: Path, i: Path) -> list[str]:
    labels = -np.asarray(nib.load(str(i / "moving_seg.nii.gz")).dataobj).astype(np.int16)
    _save(labels, d / "negative_seg.nii.gz")
    return _reg(d, i, moving_labels=str(d / "negative_seg.nii.gz"))


@case("label map", expect="--labels")
def case_evaluate_labels_absent_everywhere(d: Path, i: Path) -> list[str]:
    return _eval(d, i / "pairs.csv", "--labels", "77", "--method", "optimise")


@case("label map", expect="--labels")
def case_evaluate_labels_not_integers(d: Path, i: Path) -> list[str]:
    return _eval(d, i / "pairs.csv", "--labels", "a,b")


# ----------------------------------------------------------------------------- checkpoints
@case("checkpoint", expect="none.pt")
def case_model_missing(d: Path, i: Path) -> list[str]:
    return _reg(d, i, model=str(d / "none.pt"))


@case("checkpoint", expect="text.pt")
def case_model_text_file(d: Path, i: Path) -> list[str]:
    (d / "text.pt").write_text("not a checkpoint")
    return _reg(d, i, model=str(d / "text.pt"))


@case("checkpoint", expect="foreign.pt")
def case_model_foreign_torch_file(d: Path, i: Path) -> list[str]:
    import torch

    torch.save({"state_dict": {"w": torch.zeros(3)}}, d / "foreign.pt")
    return _reg(d, i, model=str(d / "foreign.pt"))


def _builtin_copy(d: Path, name: str, change) -> Path:
    import torch

    from medistill.builtin import resolve_model

    ckpt = torch.load(resolve_model(None), weights_only=True)
    change(ckpt)
    torch.save(ckpt, d / name)
    return d / name


@case("checkpoint", expect="nan_weights.pt")
def case_model_nan_weights(d: Path, i: Path) -> list[str]:
    def poison(ckpt):
        state = ckpt["modules"]["model"]
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] = state[key].float() * float("nan")

    return _reg(d, i, model=str(_builtin_copy(d, "nan_weights.pt", poison)))


@case("checkpoint", expect="newer.pt")
def case_model_newer_version(d: Path, i: Path) -> list[str]:
    def bump(ckpt):
        ckpt["version"] = 99

    return _reg(d, i, model=str(_builtin_copy(d, "newer.pt", bump)))


@case("checkpoint", expect="mismatch.pt")
def case_model_weights_do_not_fit(d: Path, i: Path) -> list[str]:
    def widen(ckpt):
        ckpt["config"]["model"]["cascades"] = 3

    return _reg(d, i, model=str(_builtin_copy(d, "mismatch.pt", widen)))


@case("checkpoint", expect="model.pt")
def case_register_with_recon_checkpoint(d: Path, i: Path) -> list[str]:
    return _reg(d, i, model=str(i / "recon" / "model.pt"))


@case("checkpoint", expect="model.pt")
def case_segment_with_recon_checkpoint(d: Path, i: Path) -> list[str]:
    return ["segment", "--model", str(i / "recon" / "model.pt"), "--out",
            str(d / "out.nii.gz"), str(i / "fixed.nii.gz")]  # fmt: skip


@case("checkpoint", expect="brain")
def case_reconstruct_with_registration_model(d: Path, i: Path) -> list[str]:
    return ["reconstruct", "--model", "brain", "--out", str(d / "out.nii.gz"),
            "--image", str(i / "slices.nii.gz")]  # fmt: skip


@case("checkpoint", expect="--engine")
def case_onnx_engine_with_pt(d: Path, i: Path) -> list[str]:
    return _reg(d, i, engine="onnx")


# ------------------------------------------------------------------------------------- CSV
@case("csv", expect="none.csv")
def case_pairs_missing(d: Path, i: Path) -> list[str]:
    return _eval(d, d / "none.csv")


@case("csv", expect="binary.csv")
def case_pairs_binary(d: Path, i: Path) -> list[str]:
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    return _eval(d, d / "binary.csv")


@case("csv", expect="pairs.csv")
def case_pairs_header_only(d: Path, i: Path) -> list[str]:
    return _eval(d, _copy_pair_csv(d, i, HEADER))


@case("csv", expect="pairs.csv")
def case_pairs_missing_column(d: Path, i: Path) -> list[str]:
    return _eval(d, _copy_pair_csv(d, i, "fixed,fixed_labels\nINPUTS/fixed.nii.gz,x\n"))


@case("csv", expect="pairs.csv")
def case_pairs_short_row(d: Path, i: Path) -> list[str]:
    return _eval(d, _copy_pair_csv(d, i, HEADER + "INPUTS/fixed.nii.gz,INPUTS/moving.nii.gz\n"))


@case("csv", expect="gone.nii.gz")
def case_pairs_names_missing_image(d: Path, i: Path) -> list[str]:
    return _eval(d, _copy_pair_csv(d, i, HEADER + ROW.replace("moving.nii.gz", "gone.nii.gz")))


@case("csv", expect="pairs.csv")
def case_pairs_empty_cell(d: Path, i: Path) -> list[str]:
    return _eval(d, _copy_pair_csv(d, i, HEADER + ROW.replace("INPUTS/moving.nii.gz", "")))


@case("csv", expect="pairs.csv")
def case_register_cohort_header_only(d: Path, i: Path) -> list[str]:
    pairs = _copy_pair_csv(d, i, "fixed,moving\n")
    return ["register", "--pairs", str(pairs), "--out", str(d / "out")]


@case("csv", expect="no images")
def case_register_atlas_empty_folder(d: Path, i: Path) -> list[str]:
    (d / "empty").mkdir()
    return ["register", "--atlas", str(i / "fixed.nii.gz"), "--images", str(d / "empty"),
            "--out", str(d / "out")]  # fmt: skip


@case("csv", expect="register")
def case_register_single_and_cohort(d: Path, i: Path) -> list[str]:
    return _reg(d, i) + ["--pairs", str(i / "pairs.csv")]


# ------------------------------------------------------------------------------- landmarks
def _landmark_pairs(d: Path, i: Path, fixed_text: str, moving_text: str) -> Path:
    (d / "fixed_lm.csv").write_text(fixed_text)
    (d / "moving_lm.csv").write_text(moving_text)
    return _copy_pair_csv(
        d,
        i,
        HEADER.rstrip("\n") + ",fixed_landmarks,moving_landmarks\n"
        + ROW.rstrip("\n") + f",{d / 'fixed_lm.csv'},{d / 'moving_lm.csv'}\n",
    )  # fmt: skip


@case("landmarks", expect="landmarks of")
def case_landmarks_count_mismatch(d: Path, i: Path) -> list[str]:
    pairs = _landmark_pairs(d, i, "1,2,3\n4,5,6\n", "1,2,3\n")
    return _eval(d, pairs, "--method", "optimise")


@case("landmarks", expect="lm.csv")
def case_landmarks_not_numbers(d: Path, i: Path) -> list[str]:
    pairs = _landmark_pairs(d, i, "a,b,c\n", "1,2,3\n")
    return _eval(d, pairs, "--method", "optimise")


@case("landmarks", expect="lm.csv")
def case_landmarks_two_coordinates(d: Path, i: Path) -> list[str]:
    pairs = _landmark_pairs(d, i, "1,2\n", "1,2\n")
    return _eval(d, pairs, "--method", "optimise")


# ------------------------------------------------------------------------- config, options
@case("config", expect="loop.steps")
def case_train_zero_steps(d: Path, i: Path) -> list[str]:
    return _train(d, "loop.steps=0")


@case("config", expect="loop.steps")
def case_train_negative_steps(d: Path, i: Path) -> list[str]:
    return _train(d, "loop.steps=-5")


@case("config", expect="loop.lr")
def case_train_negative_lr(d: Path, i: Path) -> list[str]:
    return _train(d, "loop.lr=-1")


@case("config", expect="loop.batch_size")
def case_train_zero_batch(d: Path, i: Path) -> list[str]:
    return _train(d, "loop.batch_size=0")


@case("config", expect="data.shape")
def case_train_list_option_given_scalar(d: Path, i: Path) -> list[str]:
    return _train(d, "data.shape=5")


@case("config", expect="model.student_channels")
def case_train_recon_negative_student_width(d: Path, i: Path) -> list[str]:
    return _train(d, "model.student_channels=-4", role="recon-student", config="test")


@case("config", expect="distill.cascade_imitation")
def case_train_recon_negative_cascade_imitation(d: Path, i: Path) -> list[str]:
    return _train(d, "distill.cascade_imitation=-1", role="recon-student", config="test")


@case("config", expect="loop.steps")
def case_train_steps_not_a_number(d: Path, i: Path) -> list[str]:
    return _train(d, "loop.steps=many")


@case("config", expect="nonsense")
def case_train_unknown_key(d: Path, i: Path) -> list[str]:
    return _train(d, "loop.nonsense=1")


@case("config", expect="loop.steps")
def case_train_set_without_equals(d: Path, i: Path) -> list[str]:
    return _train(d, "loop.steps")


@case("config", expect="missing.yaml")
def case_train_config_missing(d: Path, i: Path) -> list[str]:
    return _train(d, config=str(d / "missing.yaml"))


@case("config", expect="list.yaml")
def case_train_config_is_a_list(d: Path, i: Path) -> list[str]:
    (d / "list.yaml").write_text("- 1\n- 2\n")
    return _train(d, config=str(d / "list.yaml"))


@case("config", expect="broken.yaml")
def case_train_config_malformed(d: Path, i: Path) -> list[str]:
    (d / "broken.yaml").write_text("loop: {steps: [1, 2\n")
    return _train(d, config=str(d / "broken.yaml"))


@case("config", expect="--resume")
def case_train_resume_nothing(d: Path, i: Path) -> list[str]:
    return _train(d) + ["--resume"]


@case("config", expect="professor")
def case_train_unknown_role(d: Path, i: Path) -> list[str]:
    return _train(d, role="professor")


@case("config", expect="model.cascades")
def case_train_zero_cascades(d: Path, i: Path) -> list[str]:
    return _train(d, "model.cascades=0")


@case("config", expect="no-such-preset")
def case_train_recon_unknown_preset(d: Path, i: Path) -> list[str]:
    return _train(d, role="recon-teacher", config="no-such-preset")


@case("option", expect="--initial")
def case_register_bad_initial(d: Path, i: Path) -> list[str]:
    return _reg(d, i, initial="centre")


@case("option", expect="--method")
def case_register_bad_method(d: Path, i: Path) -> list[str]:
    return _reg(d, i, method="simplex")


@case("option", expect="--refine")
def case_register_negative_refine(d: Path, i: Path) -> list[str]:
    return _reg(d, i, refine="-3")


@case("option", expect="--workers")
def case_register_negative_workers(d: Path, i: Path) -> list[str]:
    return _reg(d, i, workers="-2")


@case("option", expect="--engine")
def case_register_bad_engine(d: Path, i: Path) -> list[str]:
    return _reg(d, i, engine="tensorrt")


@case("option", expect="deformable.lr")
def case_optimise_negative_lr(d: Path, i: Path) -> list[str]:
    return _reg(d, i, method="optimise", set="deformable.lr=-1")


@case("option", expect="--sizes")
def case_bench_bad_sizes(d: Path, i: Path) -> list[str]:
    return ["bench", "--sizes", "zero"]


@case("option", expect="--threads")
def case_bench_zero_threads(d: Path, i: Path) -> list[str]:
    return ["bench", "--threads", "0"]


@case("option", expect="--sizes")
def case_models_bad_sizes(d: Path, i: Path) -> list[str]:
    return ["models", "--sizes", "x"]


@case("option", expect="--opset")
def case_export_old_opset(d: Path, i: Path) -> list[str]:
    return ["export", "--model", "brain", "--onnx", str(d / "out.onnx"), "--opset", "11"]


@case("option", expect="demo")
def case_demo_unknown_task(d: Path, i: Path) -> list[str]:
    return ["demo", "astronomy", "--out", str(d / "out")]


# ------------------------------------------------------------------------- k-space, masks
def _recon(d: Path, i: Path, *extra: str) -> list[str]:
    return ["reconstruct", "--model", str(i / "recon" / "model.pt"),
            "--out", str(d / "out.nii.gz"), *extra]  # fmt: skip


@case("k-space", out="out.nii.gz", expect="--acceleration")
def case_reconstruct_acceleration_one(d: Path, i: Path) -> list[str]:
    return _recon(d, i, "--image", str(i / "slices.nii.gz"), "--acceleration", "1")


@case("k-space", out="out.nii.gz", expect="--acceleration")
def case_reconstruct_acceleration_huge(d: Path, i: Path) -> list[str]:
    return _recon(d, i, "--image", str(i / "slices.nii.gz"), "--acceleration", "1000")


@case("k-space", out="out.nii.gz", expect="--acceleration")
def case_reconstruct_acceleration_inf(d: Path, i: Path) -> list[str]:
    return _recon(d, i, "--image", str(i / "slices.nii.gz"), "--acceleration", "inf")


@case("k-space", out="out.nii.gz", expect="--acceleration")
def case_reconstruct_acceleration_nan(d: Path, i: Path) -> list[str]:
    return _recon(d, i, "--image", str(i / "slices.nii.gz"), "--acceleration", "nan")


@case("k-space", out="out.nii.gz", expect="mask")
def case_kspace_shape_disagrees_with_mask(d: Path, i: Path) -> list[str]:
    np.save(d / "mask.npy", np.ones(20, np.float32))
    return _recon(d, i, "--kspace", str(i / "kspace.npy"), "--mask", str(d / "mask.npy"))


@case("k-space", out="out.nii.gz", expect="kspace_nan.npy")
def case_kspace_nan(d: Path, i: Path) -> list[str]:
    k = np.load(i / "kspace.npy")
    k[3, 3] = np.nan
    np.save(d / "kspace_nan.npy", k)
    return _recon(d, i, "--kspace", str(d / "kspace_nan.npy"), "--mask", str(i / "mask.npy"))


@case("k-space", out="out.nii.gz", expect="mask_values.npy")
def case_mask_not_binary(d: Path, i: Path) -> list[str]:
    np.save(d / "mask_values.npy", np.linspace(0, 2, 32).astype(np.float32))
    return _recon(d, i, "--kspace", str(i / "kspace.npy"), "--mask", str(d / "mask_values.npy"))


@case("k-space", out="out.nii.gz", expect="--mask")
def case_kspace_without_mask(d: Path, i: Path) -> list[str]:
    return _recon(d, i, "--kspace", str(i / "kspace.npy"))


@case("k-space", out="out.nii.gz", expect="pickle.npy")
def case_kspace_pickled_object(d: Path, i: Path) -> list[str]:
    np.save(d / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return _recon(d, i, "--kspace", str(d / "pickle.npy"), "--mask", str(i / "mask.npy"))


# ----------------------------------------------------------------------------------- runner
@dataclass
class Outcome:
    """What one case did: exit code, stderr, whether the disk changed."""

    code: int
    stderr: str
    changed: list[str]

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def snapshot(*folders: Path) -> dict[str, str]:
    """``{path: digest}`` of every file and folder below ``folders``."""
    state = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                state[str(path)] = "folder"
    return state


def run_case(item: Case, case_dir: Path, inputs: Path) -> Outcome:
    """Build and run one case in-process; report exit code, stderr and what changed on disk
    (below the case folder, the shared inputs and, for absolute outputs, the output path)."""
    from medistill.cli.main import main

    case_dir.mkdir(parents=True, exist_ok=True)
    argv = item.build(case_dir, inputs)
    out = Path(item.out) if Path(item.out).is_absolute() else case_dir / item.out
    before = snapshot(case_dir, inputs)
    existed = out.exists()
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(argv)
    after = snapshot(case_dir, inputs)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if str(item.out).strip() and out.exists() != existed:
        changed.append(str(out))
    return Outcome(code, err.getvalue(), changed)


def describe(argv: list[str]) -> str:
    """A shortened command line for the table."""
    return "medistill " + json.dumps(argv)[1:-1].replace('"', "")
