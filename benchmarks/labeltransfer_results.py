"""Label-transfer ablation (LT-Net, one-shot segmentation) on held-out labelled subjects.

Data: T1-like images synthesised from the label maps in ../shared/data/labelmaps: map 0 is the
labelled atlas, maps 1..15 give unlabelled training images, the last 4 maps are the held-out
labelled subjects (their labels are used only for scoring). With tissue labels the real brains of
../shared/data/brain3d (OASIS A/B tissue maps, the VoxelMorph subject's aseg) are scored too, on
the OASIS 3-class scheme (1 CSF + GM, 2 WM).

Rows: no registration; forward-only registration (VoxelMorph-style: G_F with L_sim + L_smooth);
forward-only plus each cycle term (image, transformation, anatomy, difference) and plus the GAN;
full LT-Net; LT-Net balanced (G_F starts from the trained forward-only row, G_B pre-trained on
random smooth fields for steps/4, cycle terms on G_B only until steps/2, each term scaled by its
size at the first joint step), also with the cycle terms' pull on G_F capped at half the forward
terms' (loss.cycle_share 0.5); with --student, a registration network (a `medistill train
student` checkpoint or a built-in model such as `brain`) applied atlas -> image for label
transfer; with --optimiser, the registration optimiser atlas -> image (no training); with
--forward-registration NAME, two rows on top of that registration network (e.g. the built-in
distilled student `brain`): G_F is the network itself, fine-tuned forward-only (L_sim + L_smooth,
lr --student-lr), then LT-Net balanced from that G_F (G_B pre-trained, cycle pull capped at
--cycle-share), and that LT-Net row with each term (GAN, image, anatomy, transformation,
difference cycle) switched off in turn (run them by name with --only), and with --gan-weights W,...
that row with the GAN's weight scaled to each W; with --pretrain-target V, that row without the GAN
(or at --pretrain-gan W) and with G_B pre-trained until it inverts unseen fields to V voxels (at
most --pretrain-steps steps, on --pretrain-source fields, G_B at --backward-lr, a U-Net or the
registration network --backward-registration; the warm-up and joint phases keep their lengths after
that bound); and (with --forward-registration) the equal-step control of those rows: forward-only
training of the fine-tuned G_F continued for the steps they train G_F after the pre-training (3/4
of --steps; equal when the pre-training runs to its bound). Dice per structure and
mean, HD95 (mm, mean over structures), folding, seconds per image, and G_F's field spread / length
at the end of training.

With --structures every row is also scored on every structure of the held-out label maps (the
41 raw labels of the atlas; the images are the same, only the label maps differ), whatever
--labels the models were trained with: ``eval_structures/`` in each row's folder, the table
"every structure".

Usage (from the repository root; background; hours at --scale 1 on 2 CPU cores):

    nohup python benchmarks/labeltransfer_results.py --out runs/lt_results \\
        [--student runs/results/student1_aldk/model.pt] [--scale 1.0] > lt.log 2>&1 &

Resumable: finished rows (model.pt and eval/summary.json present) are not recomputed; an
interrupted training resumes from its last.pt. Skips with a message when ../shared/data is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from real_brains import ROOT, SHARED, write_real_brains

sys.path.insert(0, str(ROOT / "src"))
ALL_CYCLE = ("gan", "cyc", "anatomy", "trans", "diff")

BALANCED = "LT-Net balanced (G_F from forward-only, G_B pre-trained)"
CAPPED = "LT-Net balanced, cycle pull on G_F capped (cycle_share 0.5)"
# issue 15 on top of the distilled registration student (--forward-registration NAME)
ON_STUDENT = "forward-only, G_F = the registration student, fine-tuned"
LT_ON_STUDENT = "LT-Net balanced on the fine-tuned student (G_B pre-trained, cycle_share {share:g})"
# the ablation of issue 15 on that start: the LT-Net row with one term switched off
TERM_NAMES = {
    "gan": "the GAN",
    "cyc": "the image cycle",
    "anatomy": "the anatomy cycle",
    "trans": "the transformation cycle",
    "diff": "the difference cycle",
}
WITHOUT = "LT-Net on the fine-tuned student, cycle_share {share:g}, without {term}"
GAN_SCALED = "LT-Net on the fine-tuned student, cycle_share {share:g}, GAN weight {weight:g}"
PRETRAINED = (
    "LT-Net on the fine-tuned student, cycle_share {share:g}, {gan}, G_B {backward} "
    "pre-trained to {target:g} voxel ({source} fields, at most {steps} steps, lr {lr:g})"
)
# the equal-step control of the rows on the student: forward-only training of G_F continued for
# as many steps as those rows train G_F after G_B's pre-training (3/4 of --steps)
CONTINUED = "forward-only on the fine-tuned student, continued {n} steps"

# row name -> (folder, loss terms switched on besides sim + smooth)
ROWS = {
    "forward-only (VoxelMorph-style)": ("forward", ()),
    "+ image cycle": ("cyc", ("cyc",)),
    "+ transformation cycle": ("trans", ("trans",)),
    "+ anatomy cycle": ("anatomy", ("anatomy",)),
    "+ difference cycle": ("diff", ("diff",)),
    "+ GAN": ("gan", ("gan",)),
    "LT-Net (all terms)": ("ltnet", ALL_CYCLE),
    BALANCED: ("balanced", ALL_CYCLE),
    CAPPED: ("balanced_cap", ALL_CYCLE),
    ON_STUDENT: ("student_fwd", ()),
}


def balanced_start(cfg, start: Path, steps: int, cycle_share: float) -> None:
    """Issue 15's recipe on ``cfg``: ``G_F`` from the checkpoint ``start``, ``G_B`` pre-trained
    for steps/4, the cycle terms on ``G_B`` only until steps/2, every term scaled by its size at
    the first joint step, the cycles' pull on ``G_F`` capped at ``cycle_share`` (0 = uncapped)."""
    cfg.model.forward_init = str(start)
    cfg.loss.balance = "initial"
    cfg.loss.backward_pretrain = steps // 4
    cfg.loss.cycle_start = steps // 2
    cfg.loss.cycle_share = cycle_share


def real_eval_set(folder: Path, atlas_labels: Path) -> Path:
    """Real brains with OASIS-scheme labels, the atlas labels mapped to that scheme, a CSV."""
    from medistill.data import tissue_to_oasis
    from medistill.io import load, save

    names = write_real_brains(folder)
    rows = ["image,labels", *(f"{n}.nii.gz,{n}_seg.nii.gz" for n in names)]
    atlas = load(atlas_labels, is_label=True)
    mapped = np.asarray(tissue_to_oasis(atlas.data)).astype(np.int32)
    save(atlas.with_data(mapped), folder / "atlas_oasis_seg.nii.gz")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    return folder / "images.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "lt_results")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count")
    parser.add_argument("--steps", type=int, default=1500, help="training steps at --scale 1")
    parser.add_argument("--preset", default="cpu-64", help="label-transfer preset (cpu-64, ...)")
    parser.add_argument("--labels", default="aseg-tissue", choices=("aseg-tissue", "keep"))
    parser.add_argument(
        "--student", default=None, help="registration checkpoint or built-in name (brain)"
    )
    parser.add_argument(
        "--optimiser",
        default=None,
        help="also the optimiser atlas -> image with this preset (brain, fast) or YAML",
    )
    parser.add_argument("--only", nargs="*", default=None, help="run only these rows")
    parser.add_argument(
        "--forward-registration",
        default=None,
        help="registration checkpoint or built-in name (brain) that is G_F of the two rows "
        "built on the distilled student (they are skipped without it)",
    )
    parser.add_argument(
        "--cycle-share",
        type=float,
        default=0.5,
        help="loss.cycle_share of the LT-Net row on the student",
    )
    parser.add_argument(
        "--student-lr",
        type=float,
        default=1e-4,
        help="learning rate of the two rows on the student (fine-tuning)",
    )
    parser.add_argument(
        "--cycle-weight",
        type=float,
        default=1.0,
        help="weight of each enabled cycle term (cyc, anatomy, trans, diff; the seed's: 1)",
    )
    parser.add_argument(
        "--gan-weights",
        default="",
        help="comma-separated GAN weights: one more row on the student per weight, all terms "
        "with the GAN scaled (the seed's: 1), e.g. 0.1",
    )
    parser.add_argument(
        "--pretrain-target",
        type=float,
        default=0.0,
        help="one more row on the student (without the GAN unless --pretrain-gan): G_B "
        "pre-trained until its inversion residual is at most this (voxels; loss.pretrain_target)",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=1000,
        help="upper bound of that pre-training (loss.backward_pretrain)",
    )
    parser.add_argument(
        "--pretrain-source",
        default="both",
        choices=("random", "forward", "both"),
        help="the fields G_B learns to invert in that pre-training (loss.pretrain_source)",
    )
    parser.add_argument(
        "--backward-lr",
        type=float,
        default=5e-4,
        help="G_B's learning rate in that row (model.backward_lr; G_F keeps --student-lr)",
    )
    parser.add_argument(
        "--pretrain-gan",
        type=float,
        default=0.0,
        help="the GAN's weight in that row (0: without the GAN)",
    )
    parser.add_argument(
        "--backward-registration",
        default=None,
        help="in that row, G_B is this registration checkpoint or built-in model (e.g. brain; "
        "model.backward_registration) instead of a U-Net from scratch",
    )
    parser.add_argument(
        "--structures",
        action="store_true",
        help="also score every row on every structure of the held-out maps (not merged)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra config override, e.g. loop.threads=2",
    )
    args = parser.parse_args()
    if not (SHARED / "labelmaps").is_dir():
        print(f"skipped: real data not found at {SHARED}")
        return 0
    import torch

    from medistill.io import load
    from medistill.labeltransfer import LabelTransferConfig, presets, train
    from medistill.labeltransfer.data import build_data, heldout_subjects, write_eval_set
    from medistill.labeltransfer.demo import identity_row
    from medistill.labeltransfer.evaluate import evaluate, evaluate_transfer
    from medistill.train import load_config

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps = max(2, int(args.steps * args.scale))
    base = [
        "data.source=labelmaps",
        f"data.path={SHARED / 'labelmaps'}",
        f"data.labels={args.labels}",
        "data.heldout=4",
        "data.atlas_index=0",
        "loop.progress=false",
        f"loop.steps={steps}",
        f"loop.lr_decay_steps=[{int(steps * 0.7)}]",
        f"loss.cycle_start={steps // 3}",
        f"loop.checkpoint_every={max(1, min(100, steps // 10))}",
        *args.overrides,
    ]
    cfg = load_config(LabelTransferConfig, args.preset, presets=presets(), overrides=base)
    t0 = time.perf_counter()
    data = build_data(cfg.data)
    images_csv, _, atlas_labels = write_eval_set(
        out / "heldout", data.atlas, heldout_subjects(cfg.data)
    )
    real_csv = None
    # the real brains are 3-D volumes: scored only by 3-D models
    if args.labels == "aseg-tissue" and (SHARED / "brain3d").is_dir() and cfg.model.ndim == 3:
        real_csv = real_eval_set(out / "real", atlas_labels)
    structures_csv = structures_atlas = None
    if args.structures:
        structures_csv, structures_atlas = structures_eval_set(cfg, out)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: {data.description}", flush=True)
    labels = [int(v) for v in data.atlas.values.tolist() if v != 0]
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["no registration"] = {"heldout": identity_row(images_csv, atlas_labels, labels)}
    if structures_csv is not None:
        every = [int(v) for v in np.unique(load(structures_atlas, is_label=True).data) if v != 0]
        results["no registration"]["structures"] = identity_row(
            structures_csv, structures_atlas, every
        )

    def atlas_labels_path(extra) -> Path:
        """The atlas label map an evaluation set is scored with."""
        if extra == "real":
            return out / "real" / "atlas_oasis_seg.nii.gz"
        return structures_atlas if extra == "structures" else atlas_labels

    def score(name: str, run: Path, fn) -> None:
        entry = results.get(name, {})
        sets = (
            ("heldout", images_csv, {}),
            ("real", real_csv, "real"),
            ("structures", structures_csv, "structures"),
        )
        for key, csv_path, extra in sets:
            if csv_path is None:
                continue
            target = run / {"heldout": "eval", "real": "eval_real"}.get(key, "eval_structures")
            if not (target / "summary.json").exists():
                fn(csv_path, target, extra)
            entry[key] = json.loads((target / "summary.json").read_text())
        guard = last_guard(run / "log.jsonl")
        if guard:
            entry["guard"] = guard
        results[name] = entry
        path.write_text(json.dumps(results, indent=2))

    rows = dict(ROWS)
    lt_on_student = LT_ON_STUDENT.format(share=args.cycle_share)
    rows[lt_on_student] = (f"student_lt_cs{args.cycle_share:g}", ALL_CYCLE)
    ablation = set()
    for term, words in TERM_NAMES.items():
        label = WITHOUT.format(share=args.cycle_share, term=words)
        rows[label] = (
            f"student_lt_cs{args.cycle_share:g}_no_{term}",
            tuple(t for t in ALL_CYCLE if t != term),
        )
        ablation.add(label)
    gan_weight: dict[str, float] = {}
    for w in (float(x) for x in args.gan_weights.split(",") if x.strip()):
        label = GAN_SCALED.format(share=args.cycle_share, weight=w)
        rows[label] = (f"student_lt_cs{args.cycle_share:g}_gan{w:g}", ALL_CYCLE)
        ablation.add(label)
        gan_weight[label] = w
    pretrained = None
    if args.pretrain_target > 0:
        backward, gan = args.backward_registration, args.pretrain_gan
        pretrained = PRETRAINED.format(
            share=args.cycle_share,
            gan=f"GAN weight {gan:g}" if gan > 0 else "without the GAN",
            target=args.pretrain_target,
            source=args.pretrain_source,
            backward=f"= {backward}" if backward else "(U-Net)",
            steps=args.pretrain_steps,
            lr=args.backward_lr,
        )
        rows[pretrained] = (
            f"student_lt_cs{args.cycle_share:g}_{f'gan{gan:g}' if gan > 0 else 'no_gan'}_"
            f"pt{args.pretrain_target:g}_{args.pretrain_source}_ps{args.pretrain_steps}_"
            f"blr{args.backward_lr:g}" + (f"_gb_{Path(backward).stem}" if backward else ""),
            ALL_CYCLE if gan > 0 else tuple(t for t in ALL_CYCLE if t != "gan"),
        )
        ablation.add(pretrained)
        if gan > 0:
            gan_weight[pretrained] = gan
    continued_steps = steps - steps // 4  # the G_F steps of the rows after the pre-training
    continued = CONTINUED.format(n=continued_steps)
    rows[continued] = ("student_fwd_more", ())
    for name, (folder, terms) in rows.items():
        if args.only and name not in args.only:
            continue
        run = out / folder
        rcfg = load_config(LabelTransferConfig, args.preset, presets=presets(), overrides=base)
        for term in ALL_CYCLE:
            weight = gan_weight.get(name, 1.0) if term == "gan" else args.cycle_weight
            setattr(rcfg.loss, term, weight if term in terms else 0.0)
        if name in (BALANCED, CAPPED):  # issue 15: a good start for both generators, balanced
            start = out / ROWS["forward-only (VoxelMorph-style)"][0] / "model.pt"
            if not start.exists():
                print(f"skipped {name}: train the forward-only row first ({start})")
                continue
            balanced_start(rcfg, start, steps, 0.5 if name == CAPPED else 0.0)
        if name in (ON_STUDENT, lt_on_student, continued) or name in ablation:
            if not args.forward_registration:
                continue
            rcfg.loop.lr = args.student_lr
            if name == ON_STUDENT:
                rcfg.model.forward_registration = args.forward_registration
            else:  # every other row on the student starts from the fine-tuned one
                start = out / ROWS[ON_STUDENT][0] / "model.pt"
                if not start.exists():
                    print(f"skipped {name}: train the row {ON_STUDENT!r} first ({start})")
                    continue
            if name == continued:
                rcfg.model.forward_init = str(start)
                rcfg.loop.steps = continued_steps
                rcfg.loop.lr_decay_steps = (int(steps * 0.7) - steps // 4,)
            elif name != ON_STUDENT:
                balanced_start(rcfg, start, steps, args.cycle_share)
                if name == pretrained:
                    # G_B pre-trained to a target: the warm-up and joint phases follow the bound
                    extra = args.pretrain_steps - rcfg.loss.backward_pretrain
                    rcfg.loss.backward_pretrain = args.pretrain_steps
                    rcfg.loss.pretrain_target = args.pretrain_target
                    rcfg.loss.pretrain_source = args.pretrain_source
                    rcfg.model.backward_lr = args.backward_lr
                    rcfg.model.backward_registration = args.backward_registration or ""
                    rcfg.loss.cycle_start += extra
                    rcfg.loop.steps += extra
                    rcfg.loop.lr_decay_steps = tuple(d + extra for d in rcfg.loop.lr_decay_steps)
        t = time.perf_counter()
        if not (run / "model.pt").exists():
            print(f"training {name} ({rcfg.loop.steps} steps) in {run}", flush=True)
            train(rcfg, run, resume=(run / "last.pt").exists(), data=data)

        def run_eval(csv_path, target, extra, run=run):
            kw = {}
            if extra in ("real", "structures"):
                kw = {
                    "atlas": out / "heldout" / "atlas.nii.gz",
                    "atlas_labels": atlas_labels_path(extra),
                }
            evaluate(run / "model.pt", csv_path, target, **kw)

        score(name, run, run_eval)
        results[name]["wall_s"] = results[name].get("wall_s", 0.0) + time.perf_counter() - t
        print(f"{name}: Dice {results[name]['heldout']['dice_mean']:.3f}", flush=True)

    atlas_img = load(out / "heldout" / "atlas.nii.gz")

    def atlas_labels_for(extra):
        return load(atlas_labels_path(extra), is_label=True)

    if args.optimiser is not None and (not args.only or "optimiser" in args.only):
        from medistill.labeltransfer.evaluate import score_transfers
        from medistill.optimise import load_optimise_config, register_optimise

        ocfg = load_optimise_config(args.optimiser, [])
        name = f"optimiser atlas -> image ({args.optimiser})"

        def optimiser_eval(csv_path, target, extra):
            lab = atlas_labels_for(extra)

            def transfer(image):
                reg = register_optimise(
                    image, atlas_img, ocfg, moving_labels=lab, label_interp="linear"
                )
                return reg.warped_labels, reg.jacobian, reg.seconds_total

            meta = {"method": "optimise", "config": args.optimiser}
            score_transfers(transfer, lab, csv_path, target, ndim=3, meta=meta)

        score(name, out / f"optimiser_{Path(args.optimiser).stem}", optimiser_eval)
        print(f"{name}: Dice {results[name]['heldout']['dice_mean']:.3f}", flush=True)

    if args.student is not None and (not args.only or "distilled student" in args.only):
        from medistill.builtin import available, resolve_model
        from medistill.registration.model import load_model

        checkpoint = resolve_model(
            Path(args.student) if args.student not in available() else args.student
        )
        model, ckpt, scfg = load_model(checkpoint)
        shape = tuple(scfg.data.shape)
        role = ckpt.get("role")
        detail = f"{scfg.model.cascades} cascade(s)"
        if role == "student":
            detail += f", distillation {scfg.distill.mode}"
        if args.student in available():
            detail = f"built-in '{args.student}', " + detail
        name = f"registration {role} ({detail})"

        def student_eval(csv_path, target, extra):
            with torch.inference_mode():
                evaluate_transfer(
                    model,
                    shape,
                    atlas_img,
                    atlas_labels_for(extra),
                    csv_path,
                    target,
                    meta={"checkpoint": str(args.student)},
                )

        folder = args.student if args.student in available() else Path(args.student).parent.name
        score(name, out / f"student_{folder}", student_eval)
        print(f"{name}: Dice {results[name]['heldout']['dice_mean']:.3f}", flush=True)
    path.write_text(json.dumps(results, indent=2))
    write_table(out, results, steps)
    return 0


def last_guard(log_path: Path) -> dict[str, float]:
    """The collapse guard's last record of a training log (``fwd_spread``, ``fwd_length_vox``,
    the step), and where G_B's pre-training ended early (``pretrain_end``); {} without a log."""
    if not log_path.exists():
        return {}
    found: dict = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if "pretrain_end" in record:
            found["pretrain_end"] = record["pretrain_end"]
        if "fwd_spread" in record:
            found.update(
                step=record.get("step"),
                fwd_spread=record["fwd_spread"],
                fwd_length_vox=record["fwd_length_vox"],
            )
    return found


def structures_eval_set(cfg, out: Path) -> tuple[Path, Path]:
    """The held-out subjects with every structure of their label maps (``data.labels keep``) in
    ``out/structures``; the images must equal those of ``out/heldout`` (checked)."""
    from medistill.io import load
    from medistill.labeltransfer.data import build_data, heldout_subjects, write_eval_set

    keep = dataclasses.replace(cfg.data, labels="keep")
    csv_path, atlas_path, atlas_labels = write_eval_set(
        out / "structures", build_data(keep).atlas, heldout_subjects(keep)
    )
    for name in ["atlas.nii.gz"] + [f"subject{i}.nii.gz" for i in range(4)]:
        a, b = out / "heldout" / name, out / "structures" / name
        if a.exists() and not np.array_equal(load(a).data, load(b).data):
            sys.exit(f"{b}: differs from {a}: the structure labels would score other images")
    return csv_path, atlas_labels


def write_table(out: Path, results: dict, steps: int) -> None:
    """``results.md``: Dice per structure and mean on the held-out (and real) subjects."""
    tissue, oasis = {1: "CSF", 2: "GM", 3: "WM"}, {1: "CSF+GM", 2: "WM"}
    lines = [f"Label transfer ablation ({steps} training steps per row)", ""]
    nan = float("nan")
    for key, title in (
        ("heldout", "held-out synthesised subjects"),
        ("real", "real brains"),
        ("structures", "held-out synthesised subjects, every structure"),
    ):
        names = oasis if key == "real" else tissue
        rows = [(n, r[key]) for n, r in results.items() if key in r]
        if not rows:
            continue
        labels = sorted({int(k) for _, s in rows for k in s.get("dice_per_label", {})})
        if key == "structures":  # too many for one column each
            labels = []
            title += f" ({len(rows[0][1].get('dice_per_label', {}))} structures)"
        head = ["model", "Dice mean", "sd", "HD95 mm", "sd"] + [
            names.get(k, str(k)) for k in labels
        ]
        head += ["folding %", "s / image", "G_F spread / length (vox)"]
        lines += [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for n, s in rows:
            cells = [n, f"{s['dice_mean']:.3f}", f"{s.get('dice_sd', nan):.3f}"]
            cells += [f"{s.get('hd95_mean', nan):.2f}", f"{s.get('hd95_sd', nan):.2f}"]
            cells += [f"{s['dice_per_label'].get(str(k), nan):.3f}" for k in labels]
            cells += [f"{s.get('folding_pct', nan):.3f}", f"{s.get('seconds_per_image', nan):.2f}"]
            guard = results[n].get("guard", {})
            cells.append(
                f"{guard['fwd_spread']:.3f} / {guard['fwd_length_vox']:.2f}" if guard else "-"
            )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
