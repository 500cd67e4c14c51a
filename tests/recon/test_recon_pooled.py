"""The ``pooled`` recon source: subjects of a root laid out like ../shared/data, folders and files;
the subject split (disjoint, complete, deterministic); slices per subject; config errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from PIL import Image as PILImage
from scipy.io import savemat

from medistill.errors import InputError
from medistill.io import Image, save
from medistill.recon.config import DataConfig, ReconConfig, presets
from medistill.recon.data import fit_square, select_slices
from medistill.recon.pooled import (
    SPLITS,
    Subject,
    pooled_set,
    pooled_split,
    pooled_subjects,
    read_coil_mat,
    read_subject,
    split_subjects,
)
from medistill.recon.training import train, training_slices
from medistill.train import load_checkpoint, load_config

SIZE = 32


def blob(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A bright ellipsoid (2-D or 3-D) with some texture, background 0."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(sum((g / 0.7) ** 2 for g in grids))
    return ((r < 1) * (0.5 + 0.5 * rng.random(shape))).astype(np.float32)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A small root laid out like ../shared/data (plus files the source must ignore)."""
    root = tmp_path_factory.mktemp("pooled") / "data"
    for sub in ("brain2d/oasis2d", "brain2d/ants", "brain3d", "mri", "labelmaps"):
        (root / sub).mkdir(parents=True)
    for i in range(10):
        image = sitk.GetImageFromArray(blob((24, 24), i))
        sitk.WriteImage(image, str(root / f"brain2d/oasis2d/oasis2d_{i:04d}.nrrd"))
    for i in range(3):
        pixels = (blob((40, 40), 20 + i) * 250).astype(np.uint8)
        PILImage.fromarray(pixels).save(root / f"brain2d/ants/r{i}slice.jpg")
    for name in ("A", "B"):
        save(Image(blob((36, 40, 34), ord(name))), root / f"brain3d/oasis_{name}.nii.gz")
        labels = (blob((36, 40, 34)) > 0).astype(np.int32)
        save(Image(labels, is_label=True), root / f"brain3d/oasis_{name}_tissue.nii.gz")
    np.savez(root / "brain3d/vxm_subject.npz", vol=blob((34, 36, 40), 5), seg=np.zeros((2, 2, 2)))
    coils = blob((32, 32), 9)[..., None] * np.array([1, 2j, -2, 4]).reshape(1, 1, 4)
    savemat(root / "mri/img_brain_4ch.mat", {"img": coils})
    save(Image(blob((40, 40, 40)), is_label=False), root / "labelmaps/training_seg_01.nii.gz")
    return root


def cfg_of(*paths, **changes) -> DataConfig:
    return DataConfig(
        source="pooled", paths=[str(p) for p in paths], size=SIZE, slices=0, **changes
    )


def test_root_subjects_and_groups(root):
    subjects = pooled_subjects([root])
    names = [s.name for s in subjects]
    assert names == sorted(names) and len(names) == 10 + 3 + 3 + 1
    groups = {s.group for s in subjects}
    assert groups == {"oasis2d", "ants", "brain3d", "coils"}
    assert {"brain3d/oasis_A", "brain3d/oasis_B", "brain3d/vxm_subject"} <= set(names)
    assert "coils/img_brain_4ch" in names
    assert not any("tissue" in n or "training_seg" in n for n in names)  # labels are not images
    # a root listed twice is one set of subjects; an extra folder is its own group
    extra = root.parent / "more"
    extra.mkdir(exist_ok=True)
    save(Image(blob((20, 20), 3)), extra / "oasis2d_0000.nii.gz")
    both = pooled_subjects([root, root, extra])
    assert len(both) == len(subjects) + 1 and "more/oasis2d_0000" in [s.name for s in both]


def test_slices_of_each_kind_of_subject(root):
    vol = blob((36, 40, 34), ord("A"))
    planes = read_subject(root / "brain3d/oasis_A.nii.gz", SIZE)
    expected = sum(select_slices(np.moveaxis(vol, a, -1)).size for a in range(3))
    assert planes.shape == (expected, SIZE, SIZE) and planes.dtype == np.float32
    assert planes.min() >= 0 and planes.max() <= 1
    # an anisotropic volume: planes across its last axis only
    save(Image(vol, np.diag([1.0, 1.0, 3.0, 1.0])), root.parent / "thick.nii.gz")
    thick = read_subject(root.parent / "thick.nii.gz", SIZE)
    assert len(thick) == select_slices(vol).size
    # fastMRI-style HDF5: its slices
    with h5py.File(root.parent / "scan.h5", "w") as f:
        f["reconstruction_rss"] = np.stack([blob((24, 24), i) for i in range(3)])
    assert len(read_subject(root.parent / "scan.h5", SIZE, min_area=0.0)) == 3
    # coil images: root-sum-of-squares (coils 1, 2j, -2, 4 times the image: 5 times it)
    rss = read_coil_mat(root / "mri/img_brain_4ch.mat")
    np.testing.assert_allclose(rss, 5 * blob((32, 32), 9), rtol=1e-5)
    coil = read_subject(root / "mri/img_brain_4ch.mat", SIZE)
    np.testing.assert_allclose(coil[0], fit_square(rss / rss.max(), SIZE), atol=1e-6)


def fake_subjects(counts: dict[str, int]) -> list[Subject]:
    return [
        Subject(f"{g}/s{i:03d}", g, Path(f"/nowhere/{g}/s{i:03d}.nii.gz"))
        for g, n in counts.items()
        for i in range(n)
    ]


def test_split_is_by_subject_disjoint_complete_and_deterministic():
    subjects = fake_subjects({"oasis2d": 100, "ants": 6, "brain3d": 3, "coils": 1})
    split = split_subjects(subjects, val_fraction=0.1, test_fraction=0.1, seed=0)
    sets = {k: {s.name for s in v} for k, v in split.items()}
    assert set(split) == set(SPLITS)
    assert not (
        sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"]
    )
    assert set.union(*sets.values()) == {s.name for s in subjects}
    assert sum(len(v) for v in split.values()) == len(subjects)
    # per group: round(n * fraction) held out; groups of 3 and 1 all train
    by_group = {k: sorted({s.group for s in v}) for k, v in split.items()}
    assert by_group["val"] == by_group["test"] == ["ants", "oasis2d"]
    assert (len(split["val"]), len(split["test"]), len(split["train"])) == (11, 11, 88)
    # deterministic in the seed, independent of the input order, different for another seed
    again = split_subjects(subjects[::-1], val_fraction=0.1, test_fraction=0.1, seed=0)
    assert again == split
    other = split_subjects(subjects, val_fraction=0.1, test_fraction=0.1, seed=1)
    assert other["test"] != split["test"]
    bigger = split_subjects(subjects, val_fraction=0.2, test_fraction=0.3, seed=0)
    # oasis2d 20 / 30, ants round(1.2) = 1 / round(1.8) = 2, brain3d round(0.6) = 1 / round(0.9) = 1
    assert (len(bigger["val"]), len(bigger["test"])) == (20 + 1 + 1, 30 + 2 + 1)


def test_pooled_set_reads_one_split_and_training_uses_train(root):
    cfg = cfg_of(root, val_fraction=0.2, test_fraction=0.2)
    names = pooled_split(cfg)
    for split in SPLITS:
        s = pooled_set(cfg, split)
        assert s.names == names[split] and s.size == SIZE
        assert set(np.unique(s.volume)) == set(range(len(s.names)))
    train_set = training_slices(cfg)
    assert train_set.names == names["train"]
    # a group of three 3-D brains at 0.2: round(0.6) = 1 subject in each split, all its planes
    for split in SPLITS:
        s = pooled_set(cfg, split)
        brains = [i for i, n in enumerate(s.names) if n.startswith("brain3d/")]
        assert len(brains) == 1 and (s.volume == brains[0]).sum() > 40


def test_training_runs_on_pooled_augmented_slices(root, tmp_path):
    cfg = load_config(
        ReconConfig,
        "test",
        presets=presets(),
        overrides=[
            "data.source=pooled",
            f"data.paths=[{root}]",
            f"data.size={SIZE}",
            "data.augment=true",
            "model.cascades=2",
            "model.channels=8",
            "loop.steps=2",
        ],
    )
    state = train("recon-teacher", cfg, tmp_path / "run")
    assert state["step"] == 2 and (tmp_path / "run" / "model.pt").exists()


def test_default_root_or_a_one_line_error(root, tmp_path, monkeypatch):
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    assert not (work / ".." / "shared" / "data").exists()
    with pytest.raises(InputError, match="data.paths") as err:
        pooled_split(cfg_of())
    assert "\n" not in str(err.value)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(root)
    assert pooled_split(cfg_of()) == pooled_split(cfg_of(root))


@pytest.mark.parametrize(
    "override,match",
    [
        ("data.val_fraction=1.0", "val_fraction"),
        ("data.test_fraction=-0.1", "test_fraction"),
        ("data.val_fraction=0.6", "val_fraction \\+ data.test_fraction"),
        ("data.test_fraction=abc", "test_fraction"),
        ("data.test_fraction=true", "test_fraction"),
        ("data.slices=-1", "slices"),
        ("data.source=pooled-ish", "data.source"),
    ],
)
def test_bad_pooled_settings_raise_one_line(override, match):
    with pytest.raises(InputError, match=match) as err:
        load_config(
            ReconConfig,
            "test",
            presets=presets(),
            overrides=["data.source=pooled", "data.test_fraction=0.5", override],
        )
    assert "\n" not in str(err.value)


def test_missing_paths_and_empty_splits_raise_one_line(root, tmp_path):
    for cfg, match in [
        (cfg_of(tmp_path / "missing"), "no such file"),
        (cfg_of(tmp_path), "neither a root"),
    ]:
        with pytest.raises(InputError, match=match) as err:
            pooled_set(cfg)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="split"):
        pooled_set(cfg_of(root), "holdout")
    one = tmp_path / "one"
    one.mkdir()
    save(Image(blob((20, 20))), one / "a.nii.gz")
    with pytest.raises(InputError, match="no subject left for training"):
        pooled_set(cfg_of(one, test_fraction=0.6))


def test_shared_data_split(shared_data):
    """The real pool at 128 with the default fractions."""
    cfg = DataConfig(source="pooled", paths=[str(shared_data)], size=128, slices=0)
    split = pooled_split(cfg)
    assert [len(split[k]) for k in SPLITS] == [88, 11, 11]
    assert sum(n.startswith("oasis2d/") for n in split["test"]) == 10
    assert {"brain3d/oasis_A", "brain3d/oasis_B", "brain3d/vxm_subject"} <= set(split["train"])
    assert "coils/img_brain_4ch" in split["train"]
    val = pooled_set(cfg, "val")
    assert val.images.shape == (11, 128, 128) and val.names == split["val"]
    assert split == pooled_split(cfg)
    train_set = pooled_set(cfg, "train")  # about 2 s: three 3-D brains, three planes each
    assert train_set.names == split["train"] and len(train_set) > 1000


def test_validation_on_the_val_subjects_keeps_the_best_weights(root, tmp_path):
    """``loop.val_every`` scores PSNR on the val split; model.pt holds the best-scoring weights
    (those of best.pt), not necessarily the last ones."""
    from medistill.recon.model import load_model
    from medistill.recon.training import ReconTask, validation_slices

    overrides = [
        "data.source=pooled", f"data.paths=[{root}]", f"data.size={SIZE}",
        "model.cascades=2", "model.channels=8", "loop.steps=6", "loop.checkpoint_every=2",
        "loop.val_every=2", "data.val_fraction=0.3",
    ]  # fmt: skip
    cfg = load_config(ReconConfig, "test", presets=presets(), overrides=overrides)
    state = train("recon-teacher", cfg, tmp_path / "run")
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    scores = {r["step"]: r["val_score"] for r in log if "val_score" in r}
    assert sorted(scores) == [2, 4, 6]
    assert best["step"] == max(scores, key=scores.get) == state["best_step"]
    model = load_model(tmp_path / "run" / "model.pt")
    for key, value in best["modules"]["model"].items():
        assert torch.equal(model.net.state_dict()[key], value)
    # the score is the mean PSNR of the exported model on the val slices
    task = ReconTask(
        cfg, "recon-teacher", validation_slices(cfg.data), val_slices=validation_slices(cfg.data)
    )
    task.model.load_state_dict(best["modules"]["model"])
    task.model.eval()
    with torch.no_grad():
        assert task.validate({"model": task.model}) == pytest.approx(scores[best["step"]], abs=1e-4)


def test_val_every_needs_a_split_source(tmp_path):
    cfg = load_config(
        ReconConfig,
        "test",
        presets=presets(),
        overrides=["loop.val_every=2", "loop.checkpoint_every=2"],
    )
    with pytest.raises(InputError, match="validation subjects"):
        train("recon-teacher", cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_kd_validates_the_imitation_stage_only(root, tmp_path):
    """Attention transfer does not train the output: kd's first stage ignores loop.val_every."""
    base = [
        "data.source=pooled", f"data.paths=[{root}]", f"data.size={SIZE}",
        "model.cascades=2", "model.channels=8", "loop.checkpoint_every=2",
        "loop.val_every=2", "loop.patience=1", "data.val_fraction=0.3",
    ]  # fmt: skip
    teacher = load_config(ReconConfig, "test", presets=presets(), overrides=[*base, "loop.steps=2"])
    train("recon-teacher", teacher, tmp_path / "t")
    kd = [
        *base, "loop.steps=4", "distill.mode=kd", "distill.at_steps=4",
        f"distill.teacher={tmp_path / 't' / 'model.pt'}",
    ]  # fmt: skip
    train("recon-student", load_config(ReconConfig, "test", presets=presets(), overrides=kd),
          tmp_path / "kd")  # fmt: skip

    def scored(run: str) -> list[int]:
        lines = (tmp_path / run / "log.jsonl").read_text().splitlines()
        return [r["step"] for r in map(json.loads, lines) if "val_score" in r]

    assert scored("kd/at") == [] and scored("kd") != []
    at_cfg = load_config(ReconConfig, tmp_path / "kd" / "at" / "config.yaml")
    assert at_cfg.loop.val_every == 0 and at_cfg.loop.patience == 0
