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
    time_pairs,
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


def test_time_pairs_alternates_and_takes_per_pair_ratios(monkeypatch):
    """A fake clock: a costs 1 s, b 3 s, except in a 'slow spell' (pairs 2 and 3) where the
    machine runs both 10x slower: per-pair ratios stay exactly 3, while the medians see it."""
    import medistill.report as report

    clock = [0.0]
    order = []
    spell = {"on": False}

    def tick(name, cost):
        def call():
            order.append(name)
            clock[0] += cost * (10.0 if spell["on"] else 1.0)

        return call

    monkeypatch.setattr(report.time, "perf_counter", lambda: clock[0])
    a, b = tick("a", 1.0), tick("b", 3.0)

    def a_with_spell():
        timed = len([n for n in order if n == "a"]) - 1  # after the one warm-up call
        spell["on"] = timed in (2, 3)
        a()

    before = torch.get_num_threads()
    t = time_pairs(a_with_spell, b, pairs=6, warmup=1, threads=1)
    assert torch.get_num_threads() == before
    assert order[:2] == ["a", "b"]  # warm-up
    assert order[2:] == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert t.pairs == 6 and t.ratio_median == t.ratio_p10 == t.ratio_p90 == pytest.approx(3.0)
    assert t.a_median_s == pytest.approx(1.0) and t.b_median_s == pytest.approx(3.0)
    assert set(t.as_dict()) == {
        "a_median_s",
        "b_median_s",
        "ratio_median",
        "ratio_p10",
        "ratio_p90",
        "pairs",
    }


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
