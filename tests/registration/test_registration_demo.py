"""The registration demo with the optimisation teacher, end to end on a tiny run: students are
distilled from the optimiser's cached fields, the table has the teacher (and SyN when antspyx is
installed) next to the students, and the report states the speed ratios."""

from __future__ import annotations

import json

from medistill.cli.main import main


def test_demo_distils_from_the_optimiser_and_reports_speed(tmp_path, capsys):
    out = tmp_path / "demo"
    tiny = [
        "loop.steps=2", "loop.progress=false", "data.subjects=3", "data.pairs=2",
        "distill.teacher_config=fast",
        'distill.teacher_set=["affine.iterations=[5,5]","deformable.iterations=[5]"]',
    ]  # fmt: skip
    args = ["demo", "--out", str(out)]
    for item in tiny:
        args += ["--set", item]
    code = main(args)
    stdout = capsys.readouterr().out
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    models = [r["model"] for r in summary["rows"]]
    assert models[0] == "no registration"
    assert "teacher: optimiser" in models
    assert {"student (no KD)", "student + L1 KD", "student + ALDK"} <= set(models)
    assert summary["teacher"] == "optimise"
    assert not (out / "teacher.pt").exists()
    for name in ("student.pt", "student_l1.pt", "student_aldk.pt"):
        assert (out / name).exists()
    index = json.loads((out / "flow_cache" / "index.json").read_text())
    assert index["key"]["teacher_sha256"]  # keyed by the optimiser's settings
    assert summary["speed"]["teacher: optimiser"] > 0
    assert summary["speed"]["student + ALDK"] > 0
    report = (out / "report.html").read_text()
    assert "the student's time" in report
    assert "teacher: optimiser" in stdout
