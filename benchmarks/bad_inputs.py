"""The bad-input suite as a table: case, command, exit code, one-line message, partial output.

Runs every case of ``tests/bad_inputs.py`` in-process (as ``tests/cli/test_bad_input_suite.py``
does) and prints a Markdown table; exit status 1 if any case misbehaves.

    python benchmarks/bad_inputs.py [--out runs/bad_inputs.md] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.bad_inputs import CASES, make_inputs, run_case  # noqa: E402


def _cell(text: str, width: int = 110) -> str:
    text = " ".join(text.split()).replace("|", "/")
    return text if len(text) <= width else text[: width - 3] + "..."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table here")
    parser.add_argument("--only", nargs="*", help="case names")
    args = parser.parse_args()
    names = args.only or sorted(CASES, key=lambda n: (CASES[n].family, n))
    unknown = [n for n in names if n not in CASES]
    if unknown:
        print(
            f"error: --only: no case named {unknown[0]!r} (names as in the table, e.g. "
            f"{next(iter(CASES))!r})",
            file=sys.stderr,
        )
        return 2
    lines = [
        "| case | family | command | exit | message | partial output | ok |",
        "|---|---|---|---|---|---|---|",
    ]
    bad = 0
    with tempfile.TemporaryDirectory(prefix="medistill-bad-inputs-") as tmp:
        root = Path(tmp)
        inputs = make_inputs(root / "inputs")
        for name in names:
            case = CASES[name]
            case_dir = root / name
            outcome = run_case(case, case_dir, inputs)
            ok = (
                outcome.code == 2
                and len(outcome.lines) == 1
                and "Traceback" not in outcome.stderr
                and case.expect in outcome.stderr
                and not outcome.changed
            )
            bad += not ok
            message = outcome.lines[0] if outcome.lines else ""
            command = _cell(" ".join(_command(case, case_dir, inputs)).replace(str(root), "T"), 90)
            lines.append(
                f"| {name} | {case.family} | `{command}` | {outcome.code} | "
                f"{_cell(message.replace(str(root), 'T'))} | "
                f"{'yes' if outcome.changed else 'no'} | {'ok' if ok else 'FAIL'} |"
            )
    lines.append("")
    lines.append(f"{len(names)} cases, {len(names) - bad} refused cleanly, {bad} failed")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 1 if bad else 0


def _command(case, case_dir: Path, inputs: Path) -> list[str]:
    """The case's command line, rebuilt in a scratch folder (the case folder already holds what
    the run left, which must be nothing new)."""
    scratch = case_dir.with_name(case_dir.name + ".show")
    scratch.mkdir(exist_ok=True)
    return ["medistill", *case.build(scratch, inputs)]


if __name__ == "__main__":
    sys.exit(main())
