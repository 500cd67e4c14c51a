"""Registration results on real brains (docs/RESULTS.md): train at 64^3 on SynthMorph-style
pairs synthesised from the 20 label maps of ../shared/data/labelmaps, evaluate on every ordered pair
of the real subjects in ../shared/data/brain3d, and time every network at 64^3 and 128^3 in one run.

Usage (from the repository root, background; about an hour on 2 CPU cores):

    python benchmarks/registration_results.py --out runs/results [--scale 1.0]

Every training and evaluation is a ``medistill`` command, printed and stored in the results table.
Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml
from real_brains import ROOT, SHARED, write_real_brains


def prepare_eval(folder: Path) -> Path:
    """Real subjects as NIfTI with 2-class tissue labels (OASIS scheme) and a CSV of all pairs.

    The OASIS tissue maps are put on their image's grid through their own header; the VoxelMorph
    subject's aseg is mapped to CSF/GM/WM and then to the OASIS scheme (1: CSF+GM, 2: WM).
    """
    names = write_real_brains(folder)
    lines = ["fixed,moving,fixed_labels,moving_labels"]
    for f in names:
        for m in names:
            if f != m:
                lines.append(f"{f}.nii.gz,{m}.nii.gz,{f}_seg.nii.gz,{m}_seg.nii.gz")
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


def medistill(*args: str, log: list[str]) -> None:
    cmd = ["medistill", *args]
    text = " ".join(shlex.quote(a) for a in cmd)
    print(f"$ {text}", flush=True)
    log.append(text)
    subprocess.run([sys.executable, "-m", "medistill.cli.main", *args], check=True)


def sets(*overrides: str) -> list[str]:
    """``--set`` arguments of the ``medistill`` command for config overrides ``key=value``."""
    return [arg for value in overrides for arg in ("--set", value)]


HALF = ("model.cascades=1", "model.student_variant=fast", "model.student_downsample=2")
"""The CPU-latency student: 1 LDR-fast cascade + stem, stages at half the working resolution."""
PER_ELEMENT = ("distill.mode=aldk", "distill.adv_per_element=true")
"""ALDK with the adversarial term divided by the field's size."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "results")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument("--only", nargs="*", default=None, help="run only these rows")
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="teacher checkpoint the students distil from (default: OUT/teacher3/model.pt)",
    )
    parser.add_argument(
        "--no-latency", action="store_true", help="skip the latency runs and the table"
    )
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: real data not found at {SHARED}")
        return 0
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    pairs = prepare_eval(out / "eval_data")
    labelmaps = SHARED / "labelmaps"
    common = [
        "--config",
        "cpu-64",
        *sets("data.source=labelmaps", f"data.path={labelmaps}", "loop.progress=false"),
    ]

    def steps(n: int) -> tuple[str, str]:
        k = max(2, int(n * args.scale))
        return f"loop.steps={k}", f"loop.lr_decay_steps=[{int(k * 0.7)}]"

    teacher3 = out / "teacher3" / "model.pt"
    teacher = args.teacher or teacher3
    one = "model.cascades=1"
    # row -> (role, run folder, config overrides)
    runs = {
        "teacher 1 cascade": ("teacher", "teacher1", (one, *steps(800))),
        "teacher 3 cascades": ("teacher", "teacher3", ("model.cascades=3", *steps(500))),
        "student 1 cascade, no distillation": (
            "student",
            "student1_none",
            (one, "distill.mode=none", *steps(800)),
        ),
        "student 1 cascade + L1 distillation": (
            "student",
            "student1_l1",
            (one, "distill.mode=l1", *steps(800)),
        ),
        "student 1 cascade + ALDK": (
            "student",
            "student1_aldk",
            (one, "distill.mode=aldk", *steps(800)),
        ),
        "student 2 cascades + ALDK": (
            "student",
            "student2_aldk",
            ("model.cascades=2", "distill.mode=aldk", *steps(800)),
        ),
        "student 3 cascades + ALDK": (
            "student",
            "student3_aldk",
            ("model.cascades=3", "distill.mode=aldk", *steps(800)),
        ),
        "VoxelMorph-style": ("voxelmorph", "voxelmorph", (one, *steps(500))),
        "student 1 cascade + ALDK, per-element adversarial term": (
            "student",
            "student1_aldk_pe",
            (one, *PER_ELEMENT, *steps(800)),
        ),
        "student 1 cascade + ALDK, public code's gp lambda 0.1": (
            "student",
            "student1_aldk_gp01",
            (one, "distill.mode=aldk", "distill.gp_lambda=0.1", *steps(800)),
        ),
        "student LDR-fast half res, no distillation": (
            "student",
            "student1_half_none",
            (*HALF, "distill.mode=none", *steps(800)),
        ),
        "student LDR-fast half res at 128^3, no distillation": (
            "student",
            "student1_half128_none",
            (
                *HALF,
                "data.shape=[128,128,128]",
                "data.augment_disp=8.0",
                "distill.mode=none",
                *steps(800),
            ),
        ),
        "student LDR-fast half res + ALDK, per-element adversarial term": (
            "student",
            "student1_half_aldk_pe",
            (*HALF, *PER_ELEMENT, *steps(800)),
        ),
    }
    saved = out / "results.json"
    results = json.loads(saved.read_text()) if saved.exists() else {}
    for name, (role, folder, overrides) in runs.items():
        if args.only and name not in args.only:
            continue
        run = out / folder
        log: list[str] = []
        t0 = time.perf_counter()
        distill = []
        if role == "student":
            distill = sets(f"distill.teacher={teacher}", f"distill.cache={out / 'flow_cache'}")
        if not (run / "model.pt").exists():
            resume = ["--resume"] if (run / "last.pt").exists() else []
            extra = sets(*overrides)
            medistill("train", role, "--out", str(run), *common, *extra, *distill, *resume, log=log)
        if not (run / "eval" / "summary.json").exists():
            medistill(
                "evaluate",
                "--model",
                str(run / "model.pt"),
                "--pairs",
                str(pairs),
                "--out",
                str(run / "eval"),
                log=log,
            )
        summary = json.loads((run / "eval" / "summary.json").read_text())
        previous = results.get(name, {})
        results[name] = {
            "summary": summary,
            "commands": log or previous.get("commands", []),
            "folder": folder,
            "wall_s": previous.get("wall_s", 0.0) + time.perf_counter() - t0,
        }
        (out / "results.json").write_text(json.dumps(results, indent=2))
    if not args.only or "affine only" in args.only:
        log = []
        if not (out / "affine_only" / "summary.json").exists():
            medistill(
                "evaluate",
                "--model",
                str(teacher3),
                "--pairs",
                str(pairs),
                "--affine-only",
                "--out",
                str(out / "affine_only"),
                log=log,
            )
        results["affine only (teacher 3 cascades' stem)"] = {
            "summary": json.loads((out / "affine_only" / "summary.json").read_text()),
            "commands": log,
            "folder": "teacher3",
        }
    if args.no_latency:
        return 0
    latency(out, results)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_table(out, results)
    return 0


def latency(out: Path, results: dict) -> None:
    """CPU seconds per forward pass of every trained network at 64^3 and 128^3, one run."""
    import torch

    from medistill.registration.bench import latency_table
    from medistill.registration.model import load_model

    models = {}
    for name, entry in results.items():
        path = out / entry["folder"] / "model.pt"
        model = load_model(path)[0]
        if name.startswith("affine only"):
            model.subnets = torch.nn.ModuleList()
        models[name] = model
    ref = "teacher 3 cascades"
    table = latency_table(
        models, [64, 128], threads=2, repeats=3, reference=ref if ref in models else None
    )
    for name, row in table.items():
        results[name]["latency"] = {str(k): v for k, v in row.items()}


def write_table(out: Path, results: dict) -> None:
    cols = (
        "| model | Dice | HD95 (mm) | folding % | SDlogJ | s/pair 64^3 | s/pair 128^3 "
        "| x faster (128^3) | params | training steps |"
    )
    lines = [cols, "|" + "---|" * 10]
    for name, entry in results.items():
        s = entry["summary"]
        config = out / entry["folder"] / "config.yaml"
        trained = "-"
        if config.exists() and not name.startswith("affine only"):
            trained = str(yaml.safe_load(config.read_text())["loop"]["steps"])
        lat = entry.get("latency", {})
        t64 = lat.get("64", {}).get("median_s", float("nan"))
        t128 = lat.get("128", {}).get("median_s", float("nan"))
        speed = lat.get("128", {}).get("speedup", float("nan"))
        lines.append(
            f"| {name} | {s['dice_mean']:.3f} +- {s.get('dice_sd', 0):.3f} "
            f"| {s['hd95_mean']:.2f} | "
            f"{s['folding_pct']:.3f} | {s['sdlogj']:.3f} | {t64:.3f} | {t128:.3f} | {speed:.1f} | "
            f"{s['params'] / 1e6:.2f} M | {trained} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
