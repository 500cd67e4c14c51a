"""Tuning KD-MRI's distillation (issue 14, item 4), measured on real MRI split by subject.

At a reduced size (default 64x64, N = 400 steps per stage, pooled source with augmentation, as
``cpu-128-pooled`` otherwise), per acceleration: one teacher, the plain student for N and for 2N
steps (the KD student trains 2N steps in all, N of attention transfer then N of imitation, so the
2N student is the equal-compute control), and KD students that each change one setting of the
seed's recipe (AT then imitation, alpha 0.5, L1 attention distance, teacher conv3 / student conv2):

- ``alpha`` of the imitation loss (0.25, 0.75; the weight of the target term),
- the attention distance (L2),
- the paired layers (teacher conv2 / student conv1, teacher conv4 / student conv2),
- the split of the steps (N/2 attention + N/2 imitation: the same N steps as the plain student;
  N/2 or N/4 attention + 3N/2 or 7N/4 imitation: KD's 2N steps with more of them learning from
  the teacher, also with alpha 0.25),
- imitation only for 2N steps (no attention stage),
- on the N/2 + 3N/2 split: the L2 attention distance, and imitation of every cascade's output
  (``distill.cascade_imitation``, weight 1 or 0.5; not in KD-MRI),
- a student narrower than KD-MRI's (16 channels instead of 32: ``model.student_channels``; 3
  convolutions per cascade, or 5), plain for N and 2N steps and with the chosen KD recipe.

Every setting is chosen on the **validation** subjects of the pooled split and reported on the
test subjects (plain and contrast-inverted); no run trains on either. Stages shared by several
settings (the attention stage of the alpha variants) are trained once.

Usage (from the repository root, background; about 20 minutes per acceleration on 2 idle cores):

    python benchmarks/recon_kd_tuning.py --out runs/recon_tuning [--size 64] [--steps 400]
        [--accelerations 5,8] [--teacher-steps M] [--only "LABEL;LABEL"]

``--teacher-steps M`` trains the teacher for M steps (default N: the students keep N per stage);
``--student-seed S`` trains the students again with another ``loop.seed`` (the same teacher);
``--only`` trains and reports just the named settings (the teacher and the plain student for N
steps always).

Interrupted runs resume (finished stages are skipped). Skips with a message when ../shared/data
is absent.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import recon_results as rr  # its neighbour in benchmarks/ (the script's folder is on sys.path)

ROOT, SHARED = rr.ROOT, rr.SHARED


# label -> list of stages; a stage is (folder, distill mode, steps factor, extra overrides, init)
# steps factor: multiples of N; init: the folder of an earlier stage whose model.pt starts this one
Stage = tuple[str, str, float, list[str], str]


def _kd(
    at: str, at_factor: float, kd: str, kd_factor: float, *extra: str, at_extra: Sequence[str] = ()
) -> list[Stage]:
    """KD-MRI's steps 2 and 3: attention transfer in folder ``at`` (trained once, shared by the
    settings that name it), then imitation in ``kd`` started from its weights; ``extra``
    overrides the imitation stage, ``at_extra`` the attention stage."""
    return [
        (at, "at", at_factor, list(at_extra), ""),
        (kd, "imitation", kd_factor, list(extra), at),
    ]


AT = "at_l1_mid"
SETTINGS: dict[str, list[Stage]] = {
    "student, no KD (N)": [("student", "none", 1, [], "")],
    "student, no KD (2N)": [("student_2n", "none", 2, [], "")],
    "imitation only (2N)": [("imitation_2n", "imitation", 2, [], "")],
    "KD, seed's recipe (N AT + N imitation)": _kd(AT, 1, "kd", 1),
    "KD, alpha 0.25": _kd(AT, 1, "kd_a025", 1, "distill.alpha=0.25"),
    "KD, alpha 0.75": _kd(AT, 1, "kd_a075", 1, "distill.alpha=0.75"),
    "KD, L2 attention distance": _kd(
        "at_l2_mid", 1, "kd_l2", 1, at_extra=["distill.at_distance=l2"]
    ),
    "KD, layers teacher conv2 / student conv1": _kd(
        "at_l1_early", 1, "kd_early", 1, at_extra=["distill.at_layers=[2,1]"]
    ),
    "KD, layers teacher conv4 / student conv2": _kd(
        "at_l1_late", 1, "kd_late", 1, at_extra=["distill.at_layers=[4,2]"]
    ),
    "KD, N/2 AT + N/2 imitation (N in all)": _kd("at_half", 0.5, "kd_half", 0.5),
    "KD, N/2 AT + 3N/2 imitation (2N in all)": _kd("at_half", 0.5, "kd_half_long", 1.5),
    "student, no KD (3N)": [("student_3n", "none", 3, [], "")],
    "KD, N/2 AT + 5N/2 imitation (3N in all)": _kd("at_half", 0.5, "kd_half_longer", 2.5),
    "KD, N/4 AT + 7N/4 imitation (2N in all)": _kd("at_quarter", 0.25, "kd_quarter_long", 1.75),
    "KD, alpha 0.25, N/2 AT + 3N/2 imitation": _kd(
        "at_half", 0.5, "kd_half_long_a025", 1.5, "distill.alpha=0.25"
    ),
    "KD, N/2 AT (L2) + 3N/2 imitation": _kd(
        "at_half_l2", 0.5, "kd_half_long_l2", 1.5, at_extra=["distill.at_distance=l2"]
    ),
    "KD, N/2 AT + 3N/2 imitation, cascade imitation 1": _kd(
        "at_half", 0.5, "kd_half_long_casc1", 1.5, "distill.cascade_imitation=1"
    ),
    "KD, N/2 AT + 3N/2 imitation, cascade imitation 0.5": _kd(
        "at_half", 0.5, "kd_half_long_casc05", 1.5, "distill.cascade_imitation=0.5"
    ),
}
# a narrower student (``model.student_channels``; KD-MRI's student is as wide as its teacher):
# its own plain runs and the KD recipe chosen above, for the latency target. 16 channels and 3
# convolutions per cascade, or 16 and 5 (the teacher's depth at half its width)
for _w, _d in ((16, 3), (16, 5)):  # 24 channels ran no faster than 32 (docs/RESULTS.md)
    _net = [f"model.student_channels={_w}", f"model.student_convs={_d}"]
    _name, _dir = (f"{_w} ch", f"w{_w}") if _d == 3 else (f"{_w} ch x {_d}", f"w{_w}d{_d}")
    SETTINGS[f"student {_name}, no KD (N)"] = [(f"student_{_dir}", "none", 1, _net, "")]
    SETTINGS[f"student {_name}, no KD (2N)"] = [(f"student_2n_{_dir}", "none", 2, _net, "")]
    SETTINGS[f"KD {_name}, N/2 AT + 3N/2 imitation, cascade imitation 0.5"] = _kd(
        f"at_half_{_dir}",
        0.5,
        f"kd_half_long_casc05_{_dir}",
        1.5,
        *_net,
        "distill.cascade_imitation=0.5",
        at_extra=_net,
    )


def _psnr(summary: dict) -> str:
    return f"{summary['psnr_mean']:.2f} +- {summary['psnr_sd']:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "recon_tuning")
    parser.add_argument("--size", type=int, default=64, help="slice side")
    parser.add_argument("--steps", type=int, default=400, help="N: steps of one stage")
    parser.add_argument("--accelerations", default="5,8")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="pooled: per group")
    parser.add_argument("--seed", type=int, default=0, help="pooled: the split's seed")
    parser.add_argument("--teacher-steps", type=int, default=0, help="teacher's steps (0: N)")
    parser.add_argument("--only", default="", help="settings to run, separated by ';'")
    parser.add_argument(
        "--student-seed",
        type=int,
        default=None,
        help="loop.seed of the student runs (initial weights, batches): folders end in _sS and "
        "the group is reported apart; the teacher is the one of the default seed",
    )
    args = parser.parse_args()
    settings = dict(SETTINGS)
    if args.only:
        wanted = ["student, no KD (N)", *(w.strip() for w in args.only.split(";") if w.strip())]
        unknown = [w for w in wanted if w not in SETTINGS]
        if unknown:
            print(f"error: --only: unknown setting {unknown[0]!r}; known: {list(SETTINGS)}")
            return 2
        settings = {label: SETTINGS[label] for label in dict.fromkeys(wanted)}
    if not SHARED.is_dir():
        print(f"skipped: real data not found at {SHARED}")
        return 0
    logging.basicConfig(level=logging.WARNING)
    rr.SOURCE = "pooled"
    from medistill.recon.inference import evaluate

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    source, test = rr.prepare_pooled(out / "data_test", args.test_fraction, args.seed, "test")
    _, val = rr.prepare_pooled(out / "data_val", args.test_fraction, args.seed, "val")
    (out / "split.json").write_text(json.dumps(test["split"], indent=2))
    sets = {"val": val["test"], "test": test["test"], "test, inverted": test["inverted"]}
    n = args.steps
    base = rr.base_overrides(source, args.size, max(1, min(200, n)))
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for acc in [float(a) for a in args.accelerations.split(",") if a]:
        folder = out / f"recon_{acc:g}x"
        tag = f"recon {acc:g}x"
        seed = args.student_seed
        suffix = "" if seed is None else f"_s{seed}"
        group = results.setdefault(
            tag if seed is None else f"{tag}, student seed {seed}", {"_commands": []}
        )

        def stage_overrides(factor: float, acc: float = acc) -> list[str]:
            steps = max(1, int(round(n * factor)))
            return [*base, f"mask.acceleration={acc}", *rr.steps_overrides(steps)]

        teacher = folder / "teacher" / "model.pt"
        teacher_sets = stage_overrides(args.teacher_steps / n if args.teacher_steps else 1)
        rr.train_run("recon-teacher", folder / "teacher", teacher_sets, group["_commands"])
        finals = {"teacher": folder / "teacher"}
        for label, stages in settings.items():
            for sub, mode, factor, extra, init in stages:
                sets_ = [*stage_overrides(factor), f"distill.mode={mode}", *extra]
                if seed is not None:
                    sets_.append(f"loop.seed={seed}")
                if mode != "none":
                    sets_.append(f"distill.teacher={teacher}")
                if init:
                    sets_.append(f"distill.init={folder / (init + suffix) / 'model.pt'}")
                rr.train_run("recon-student", folder / (sub + suffix), sets_, group["_commands"])
            finals[label] = folder / (stages[-1][0] + suffix)
        for label, run in finals.items():
            row = group.setdefault(label, {})
            for name, images in sets.items():
                summary = run / f"eval_{name.replace(', ', '_')}" / "summary.json"
                if not summary.exists():
                    print(f"  evaluating {tag} / {label} on {name}", flush=True)
                    evaluate(run / "model.pt", images, summary.parent)
                row[name] = json.loads(summary.read_text())
        results_path.write_text(json.dumps(results, indent=2))
    lines = []
    for tag, group in results.items():
        lines += [f"### {tag}", "", "| model | val PSNR | test PSNR | test PSNR, inverted |"]
        lines.append("|---|---|---|---|")
        first = group["teacher"]["test"]
        lines.append(
            f"| zero-filled | {group['teacher']['val']['input_psnr_mean']:.2f} | "
            f"{first['input_psnr_mean']:.2f} | "
            f"{group['teacher']['test, inverted']['input_psnr_mean']:.2f} |"
        )
        for label, row in group.items():
            if label.startswith("_"):
                continue
            cells = " | ".join(_psnr(row[k]) for k in ("val", "test", "test, inverted"))
            lines.append(f"| {label} | {cells} |")
        lines.append("")
    text = "\n".join(lines)
    (out / "results.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
