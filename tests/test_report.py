"""The report kit: stopwatch, latency timer, tissue names, mid-plane view, Dice bar figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.report import (
    Stopwatch,
    dice_bar_figure,
    label_name,
    mid_plane,
    time_call,
    write_report,
)


def test_stopwatch_adds_up_stages_and_total():
    watch = Stopwatch()
    with watch.stage("a"):
        pass
    with watch.stage("a"):
        pass
    timings = watch.total()
    assert list(timings) == ["a", "total"] and 0 <= timings["a"] <= timings["total"]


def test_time_call_counts_calls_and_restores_threads():
    calls = []
    before = torch.get_num_threads()
    latency = time_call(lambda: calls.append(torch.get_num_threads()), repeats=3, threads=1)
    assert len(calls) == 4 and set(calls) == {1}  # one warm-up, three timed
    assert torch.get_num_threads() == before
    assert latency.repeats == 3 and 0 <= latency.min_s <= latency.median_s
    assert set(latency.as_dict()) == {"median_s", "min_s", "repeats"}


def test_label_names_and_mid_plane():
    assert [label_name(k) for k in (1, "2", 3, 7, "x")] == ["CSF", "GM", "WM", "7", "x"]
    volume = np.arange(2 * 3 * 5).reshape(2, 3, 5)
    np.testing.assert_array_equal(mid_plane(volume), np.rot90(volume[:, :, 2]))
    np.testing.assert_array_equal(mid_plane(volume[:, :, 0]), np.rot90(volume[:, :, 0]))


def test_dice_bar_figure_in_a_report(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [
        {"model": "none", "dice_per_label": {"1": 0.5, "2": 0.6}},
        {"model": "net", "dice_per_label": {"1": 0.7, "3": 0.9}},
    ]
    uri = dice_bar_figure(rows)
    assert uri.startswith("data:image/png;base64,")
    page = write_report(tmp_path / "r.html", "t", [("Dice", f"<img src='{uri}'>")])
    assert "data:image/png;base64" in page.read_text(encoding="utf-8")
