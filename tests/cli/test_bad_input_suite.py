"""Our own bad-input suite (issue 12): every case of ``tests/bad_inputs.py`` must exit 2 with one
line on stderr naming the option or file, no traceback, nothing new on disk and any existing
output intact."""

from __future__ import annotations

import pytest

from tests.bad_inputs import CASES, make_inputs, run_case


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("bad_inputs") / "inputs")


def test_the_catalogue_is_broad():
    families = {case.family for case in CASES.values()}
    assert len(CASES) >= 60
    assert {"output path", "image", "label map", "checkpoint", "csv", "config"} <= families


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_cleanly(name, inputs, tmp_path):
    case = CASES[name]
    outcome = run_case(case, tmp_path / name, inputs)
    assert outcome.code == 2, outcome.stderr
    assert len(outcome.lines) == 1, outcome.stderr
    assert outcome.lines[0].startswith("medistill: error: "), outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert case.expect in outcome.lines[0], outcome.stderr
    assert not outcome.changed, outcome.changed
