"""KD-MRI results on real brain MRI (docs/RESULTS.md): DC-CNN reconstruction at 4x / 5x / 8x and
VDSR super-resolution, teacher vs students (no KD, attention transfer only, imitation only, both),
and the plain student trained for KD's total number of steps (the equal-compute control).

Training slices: the axial planes of ../shared/data/brain3d/oasis_A.nii.gz and of the VoxelMorph
subject (vxm_subject.npz, re-sliced axially), the 2-D OASIS slices oasis2d_0000..0079 and four of
the six ANTs slices. Held out: oasis_B (one volume), oasis2d_0080..0099 and the other two ANTs
slices (one volume each). Metrics per volume (PSNR / SSIM with data range = the target volume's
maximum, NMSE), then mean +- sd; CPU latency per 256x256 slice of teacher and student measured
in one run, in alternating calls (batch 1, ``--pairs`` pairs: the median ms of each and of the
per-pair ratio; before 2026-12-01 the best of three rounds of ``--repeats`` timed runs).

Usage (from the repository root, background; a few hours at --scale 1 on 2 CPU cores):

    python benchmarks/recon_results.py --out runs/recon_results [--scale 1.0] [--size 128]
        [--accelerations 4,5,8] [--no-sr]

With ``--source pooled`` the training data is the ``pooled`` source (``cpu-128-pooled``: every
real slice of ../shared/data, split by subject with ``--test-fraction``, training augmentation
on); the test set is the test split's subjects (at 0.2: the VoxelMorph subject as a 3-D volume
re-sliced axially, 20 OASIS 2-D slices and one ANTs slice), and a second table scores the same
test images with their contrast inverted inside the brain (T2-like; no run trains on these
images, the augmentation inverts only training slices).

``--teacher-steps N`` trains the teachers for N steps instead of ``--steps`` (the students keep
``--steps``): does a teacher trained longer make KD worth its extra student steps? Use another
``--out``; the plain students do not depend on the teacher, so their finished folders may be
linked in from a run with the same data and steps (they are then skipped).

An interrupted run continues where it stopped (finished runs are skipped, unfinished ones resumed).
Every training is the ``train_recon`` command function (``medistill train ROLE ...``); the
equivalent command lines are stored in results.json. Skips with a message when ../shared/data is
absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared" / "data").resolve()

# the equal-compute control: KD trains the student twice (attention stage, then imitation)
EQUAL = "student, no KD, 2x steps (KD's total)"
STEPS_FACTOR = {EQUAL: 2}
# label -> (role suffix, distill mode, init from)
STUDENTS = {
    "student, no KD": ("none", ""),
    "student + AT only (step 2)": ("at", ""),
    "student + imitation only": ("imitation", ""),
    "student + KD (AT then imitation)": ("imitation", "student + AT only (step 2)"),
    EQUAL: ("none", ""),
}
FOLDERS = {
    "teacher": "teacher",
    "student, no KD": "student",
    "student + AT only (step 2)": "at",
    "student + imitation only": "imitation",
    "student + KD (AT then imitation)": "kd",
    EQUAL: "student_2x",
}


def prepare_data(folder: Path) -> tuple[list[str], list[str]]:
    """Training and held-out inputs (files / folders); the VoxelMorph subject re-sliced axially."""
    from medistill.io import Image, load, save

    folder.mkdir(parents=True, exist_ok=True)
    vxm = folder / "vxm_axial.nii.gz"
    if not vxm.exists():
        vol = load(SHARED / "brain3d" / "vxm_subject.npz").data  # LIA: axis 1 is inferior
        # LIA -> (R, A, I): axial planes on the last axis, in-plane like the RAS OASIS volumes
        save(Image(np.ascontiguousarray(np.moveaxis(vol, 1, -1)[::-1])), vxm)
    train_2d, test_2d = folder / "train2d", folder / "test2d"
    for sub in (train_2d, test_2d):
        sub.mkdir(exist_ok=True)
    oasis2d = sorted((SHARED / "brain2d" / "oasis2d").glob("*.nrrd"))
    ants = sorted((SHARED / "brain2d" / "ants").glob("*.jpg"))
    for i, path in enumerate(oasis2d + ants):
        held_out = (path in oasis2d and i >= 80) or (path in ants and ants.index(path) >= 4)
        link = (test_2d if held_out else train_2d) / path.name
        if not link.exists():
            link.symlink_to(path)
    train = [str(SHARED / "brain3d" / "oasis_A.nii.gz"), str(vxm), str(train_2d)]
    test = [str(SHARED / "brain3d" / "oasis_B.nii.gz"), str(test_2d)]
    return train, test


PRESET = {"files": "cpu-128", "pooled": "cpu-128-pooled"}
SOURCE = "files"


def prepare_pooled(
    folder: Path, test_fraction: float, seed: int, which: str = "test"
) -> tuple[list[str], dict]:
    """The pooled split's ``which`` subjects (``test`` or ``val``) as evaluation inputs (3-D
    volumes re-sliced axially, 2-D slices linked into one folder) and their contrast-inverted
    copies; returns ``(overrides, {"test": [...], "inverted": [...], "split": {...}})``."""
    import torch

    from medistill.io import Image, load, save
    from medistill.recon.augment import invert_foreground
    from medistill.recon.config import DataConfig
    from medistill.recon.pooled import pooled_split, pooled_subjects

    overrides = [
        f"data.paths=[{SHARED}]",
        f"data.test_fraction={test_fraction}",
        f"data.seed={seed}",
    ]
    cfg = DataConfig(source="pooled", paths=[str(SHARED)], test_fraction=test_fraction, seed=seed)
    split = pooled_split(cfg)
    files = {s.name: s.path for s in pooled_subjects(cfg.paths)}
    plain, inverted = folder / "test2d", folder / "inverted"
    for sub in (plain, inverted):
        sub.mkdir(parents=True, exist_ok=True)
    test = [str(plain)]
    for name in split[which]:
        path = files[name]
        img = load(path, key="vol" if path.suffix == ".npz" else None, is_label=False)
        data = np.asarray(img.data, dtype=np.float32)
        if data.ndim == 3:  # re-slice: axial planes on the last axis
            if path.suffix == ".npz":  # VoxelMorph LIA: axis 1 is inferior
                data = np.ascontiguousarray(np.moveaxis(data, 1, -1)[::-1])
            target = folder / f"{name.replace('/', '_')}.nii.gz"
            test.append(str(target))
        else:
            target = plain / f"{name.replace('/', '_')}.nii.gz"
        if not target.exists():
            save(Image(data), target)
        stack = data[..., None] if data.ndim == 2 else data
        planes = torch.from_numpy(np.moveaxis(stack, -1, 0)[:, None].copy())
        planes = planes / planes.amax().clamp_min(1e-8)
        inv = invert_foreground(planes)[:, 0].numpy()
        inv_data = np.moveaxis(inv, 0, -1)
        inv_target = inverted / target.name
        if not inv_target.exists():
            save(Image(inv_data[..., 0] if data.ndim == 2 else inv_data), inv_target)
    return overrides, {"test": test, "inverted": [str(inverted)], "split": split}


def base_overrides(source: list[str], size: int, checkpoint_every: int) -> list[str]:
    """The overrides every run of a benchmark shares: its data source, slice size, all planes,
    no progress bar, checkpoints every ``checkpoint_every`` steps, no validation (the runs train
    their steps to the end, as the published ones did)."""
    return [
        *source,
        f"data.size={size}",
        "data.slices=0",
        "loop.progress=false",
        f"loop.checkpoint_every={checkpoint_every}",
        "loop.val_every=0",
        "loop.patience=0",
    ]


def steps_overrides(n: int) -> list[str]:
    """``n`` training steps with the benchmarks' schedule: the learning rate halved at 60 % and
    85 % of them."""
    return [f"loop.steps={n}", f"loop.lr_decay_steps=[{int(n * 0.6)}, {int(n * 0.85)}]"]


def command_line(role: str, out: Path, overrides: list[str]) -> str:
    sets = " ".join(f"--set '{o}'" for o in overrides)
    return f"medistill train {role} --config {PRESET[SOURCE]} --out {out} {sets}"


def train_run(role: str, out: Path, overrides: list[str], log: list[str]) -> None:
    """Train (or resume, or skip when finished) one run through the command function."""
    from medistill.cli.recon import train_recon

    if (out / "model.pt").exists():
        return
    text = command_line(role, out, overrides)
    print(f"$ {text}", flush=True)
    log.append(text)
    t = time.perf_counter()
    train_recon(role, PRESET[SOURCE], out, resume=(out / "last.pt").exists(), set_=overrides)
    print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)


def run_group(
    kind: str,
    tag: str,
    name: str,
    base: list[str],
    steps: int,
    out: Path,
    test: list[str],
    results: dict,
    extra_tests: dict[str, list[str]] | None = None,
    teacher_steps: int | None = None,
) -> None:
    """Teacher and the students of one setting (``kind`` recon or sr) in ``out/name``; the
    teacher trains ``teacher_steps`` steps (default ``steps``)."""
    from medistill.recon.inference import evaluate

    folder = out / name
    common = [*base, *steps_overrides(steps)]
    group = results.setdefault(tag, {})
    log: list[str] = []
    t0 = time.perf_counter()
    teacher = folder / "teacher" / "model.pt"
    teacher_common = [*common, *steps_overrides(teacher_steps)] if teacher_steps else common
    train_run(f"{kind}-teacher", folder / "teacher", teacher_common, log)
    for label, (distill, init) in STUDENTS.items():
        extra = [f"distill.mode={distill}"]
        if label in STEPS_FACTOR:  # later keys win: this row's own step count and decay
            extra += steps_overrides(steps * STEPS_FACTOR[label])
        if distill != "none":
            extra.append(f"distill.teacher={teacher}")
        if init:
            extra.append(f"distill.init={folder / FOLDERS[init] / 'model.pt'}")
        train_run(f"{kind}-student", folder / FOLDERS[label], [*common, *extra], log)
    for label, sub in FOLDERS.items():
        summary_path = folder / sub / "eval" / "summary.json"
        if not summary_path.exists():
            print(f"  evaluating {tag} / {label}", flush=True)
            evaluate(folder / sub / "model.pt", test, folder / sub / "eval")
        group[label] = json.loads(summary_path.read_text())
        for suffix, images in (extra_tests or {}).items():
            extra_path = folder / sub / f"eval_{suffix}" / "summary.json"
            if not extra_path.exists():
                print(f"  evaluating {tag} / {label} on {suffix}", flush=True)
                evaluate(folder / sub / "model.pt", images, extra_path.parent)
            results.setdefault(f"{tag} ({suffix})", {})[label] = json.loads(extra_path.read_text())
            results[f"{tag} ({suffix})"]["_folder"] = name
    group["_folder"] = name
    group["_commands"] = group.get("_commands", []) + log
    group["_wall_s"] = group.get("_wall_s", 0.0) + time.perf_counter() - t0


def latency(
    out: Path,
    results: dict,
    tags: list[str],
    threads: int,
    pairs: int,
    eager: bool = False,
) -> None:
    """Teacher vs student on one 256x256 slice, in alternating calls
    (:func:`medistill.recon.inference.paired_latency`): the median ms of each (the table's
    column) and the median and 10-90th percentiles of the per-pair ratio student / teacher.
    With ``eager`` also both networks run eagerly (the default engine traces and freezes them).
    ``benchmarks/recon_latency.py`` does the same for any two checkpoints."""
    from medistill.recon.inference import paired_latency
    from medistill.recon.model import load_model

    for tag in tags:
        folder = out / results[tag]["_folder"]
        teacher = load_model(folder / "teacher" / "model.pt")
        student = load_model(folder / "student" / "model.pt")
        engines = {"": (teacher, student)}
        if eager:
            engines[" (eager)"] = (teacher.with_engine("eager"), student.with_engine("eager"))
        medians: dict[str, float] = {}
        for suffix, (t, s) in engines.items():
            paired = paired_latency(t, s, 256, pairs=pairs, threads=threads)
            medians[f"teacher{suffix}"] = paired["reference_ms"]
            medians[f"student{suffix}"] = paired["model_ms"]
            if not suffix:
                results[tag]["_latency_paired_256"] = paired
            print(
                f"  latency {tag}{suffix}: teacher {paired['reference_ms']:.1f} ms, student "
                f"{paired['model_ms']:.1f} ms, student / teacher median "
                f"{paired['ratio_median']:.2f} (10-90 %: {paired['ratio_p10']:.2f}-"
                f"{paired['ratio_p90']:.2f}, {paired['pairs']} pairs)",
                flush=True,
            )
        results[tag]["_latency_ms_256"] = medians


def pm(summary: dict, key: str, digits: int) -> str:
    return f"{summary[f'{key}_mean']:.{digits}f} +- {summary[f'{key}_sd']:.{digits}f}"


def write_table(out: Path, results: dict) -> str:
    lines = []
    for tag, group in results.items():
        lat = group.get("_latency_ms_256", {})
        lines += [
            f"### {tag}",
            "",
            "| model | PSNR (dB) | SSIM | NMSE | params | CPU ms / 256^2 slice |",
            "|---|---|---|---|---|---|",
        ]
        first = group.get("teacher")
        if first:
            name = "low resolution" if tag.startswith("sr") else "zero-filled"
            lines.append(
                f"| {name} | {pm(first, 'input_psnr', 2)} | {pm(first, 'input_ssim', 4)} | "
                f"{pm(first, 'input_nmse', 4)} | - | - |"
            )
        for label in FOLDERS:
            s = group.get(label)
            if not s:
                continue
            key = "teacher" if label == "teacher" else "student"
            ms = f"{lat[key]:.1f}" if key in lat and label in ("teacher", "student, no KD") else ""
            lines.append(
                f"| {label} | {pm(s, 'psnr', 2)} | {pm(s, 'ssim', 4)} | {pm(s, 'nmse', 4)} | "
                f"{s['params']:,} | {ms} |"
            )
        lines.append("")
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "recon_results")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument("--steps", type=int, default=2000, help="steps per run at scale 1")
    parser.add_argument("--size", type=int, default=128, help="slice side (256 in the paper)")
    parser.add_argument(
        "--teacher-steps", type=int, default=None, help="teacher steps (default: --steps)"
    )
    parser.add_argument("--accelerations", default="4,5,8")
    parser.add_argument("--no-sr", action="store_true", help="skip super-resolution")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the latency")
    parser.add_argument(
        "--pairs", type=int, default=30, help="alternating teacher / student calls per latency"
    )
    parser.add_argument("--source", choices=("files", "pooled"), default="files")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="pooled: per group")
    parser.add_argument("--seed", type=int, default=0, help="pooled: the split's seed")
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only time teacher vs student of the finished groups, with the default engine "
        "(traced and frozen) and eagerly in the same rounds (no training, no evaluation)",
    )
    args = parser.parse_args()
    global SOURCE
    SOURCE = args.source
    if not SHARED.is_dir():
        print(f"skipped: real data not found at {SHARED}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.latency_only:
        tags = [f"recon {float(a):g}x" for a in args.accelerations.split(",") if a]
        found = [t for t in tags if t in results]
        latency(out, results, found, args.threads, args.pairs, eager=True)
        return 0
    steps = max(2, int(args.steps * args.scale))
    teacher_steps = max(2, int(args.teacher_steps * args.scale)) if args.teacher_steps else None
    extra_tests: dict[str, list[str]] = {}
    if SOURCE == "pooled":
        source, found = prepare_pooled(out / "data", args.test_fraction, args.seed)
        test, extra_tests["inverted contrast"] = found["test"], found["inverted"]
        (out / "split.json").write_text(json.dumps(found["split"], indent=2))
    else:
        train, test = prepare_data(out / "data")
        source = ["data.source=files", f"data.paths=[{', '.join(train)}]"]
    base = base_overrides(source, args.size, max(1, min(250, steps)))
    tags = []
    for acc in [float(a) for a in args.accelerations.split(",") if a]:
        tag = f"recon {acc:g}x"
        tags.append(tag)
        base_acc = [*base, f"mask.acceleration={acc}"]
        run_group(
            "recon", tag, f"recon_{acc:g}x", base_acc, steps, out, test, results, extra_tests,
            teacher_steps=teacher_steps,
        )  # fmt: skip
        results_path.write_text(json.dumps(results, indent=2))
    if not args.no_sr:
        tag = "sr 4x (central 1/4 of k-space per axis)"
        tags.append(tag)
        run_group(
            "sr", tag, "sr_4x", [*base, "sr.factor=4"], steps, out, test, results, extra_tests,
            teacher_steps=teacher_steps,
        )  # fmt: skip
        results_path.write_text(json.dumps(results, indent=2))
    latency(out, results, tags, args.threads, args.pairs)
    results["_settings"] = {**vars(args), "out": str(out), "steps": steps}
    results_path.write_text(json.dumps(results, indent=2, default=str))
    print(write_table(out, {k: v for k, v in results.items() if not k.startswith("_")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
