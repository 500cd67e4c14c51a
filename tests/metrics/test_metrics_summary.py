"""summarize, summarize_rows, per_label_means: mean and sample SD ignoring NaN; write_metrics."""

import math

import numpy as np
import pytest
import torch

from medistill.metrics import summarize


def test_summarize_ignores_nan():
    mean, sd = summarize([1.0, 2.0, 3.0, float("nan")])
    assert mean == pytest.approx(2.0)
    assert sd == pytest.approx(1.0)  # sample SD of 1, 2, 3


def test_summarize_arrays_and_edge_cases():
    assert summarize(np.array([[4.0, 8.0]])) == (pytest.approx(6.0), pytest.approx(math.sqrt(8)))
    assert summarize(torch.tensor([5.0])) == (5.0, 0.0)
    m, s = summarize([float("nan")])
    assert math.isnan(m) and math.isnan(s)


def test_summarize_rows_names_sd_and_skips_missing_columns():
    from medistill.metrics.summary import summarize_rows

    rows = [{"dice": 0.5, "sdlogj": 0.1}, {"dice": 0.7, "sdlogj": float("nan")}, {"dice": 0.9}]
    out = summarize_rows(rows, {"dice_mean": "dice", "sdlogj": "sdlogj", "tre_mean": "tre"})
    assert list(out) == ["dice_mean", "dice_sd", "sdlogj", "sdlogj_sd"]
    assert out["dice_mean"] == pytest.approx(0.7) and out["dice_sd"] == pytest.approx(0.2)
    assert out["sdlogj"] == pytest.approx(0.1) and out["sdlogj_sd"] == 0.0
    only_mean = summarize_rows(rows, {"dice_mean": "dice"}, sd=False)
    assert only_mean == {"dice_mean": pytest.approx(0.7)}


def test_per_label_means_use_string_keys_and_ignore_nan():
    from medistill.metrics.summary import nanmean, per_label_means

    rows = [{"dice_mean": 0.6, "dice_1": 0.4, "dice_2": "nan"}, {"dice_1": "0.6", "dice_2": 0.8}]
    assert per_label_means(rows) == {"1": pytest.approx(0.5), "2": pytest.approx(0.8)}
    assert nanmean({1: 0.2, 2: float("nan"), 3: 0.4}) == pytest.approx(0.3)
    assert math.isnan(nanmean([]))


def test_write_metrics_writes_csv_and_json_and_keeps_its_old_import_path(tmp_path):
    import json

    from medistill.io.atomic import write_metrics as old
    from medistill.metrics.summary import write_metrics

    assert old is write_metrics
    write_metrics(tmp_path / "out", [{"a": 1}, {"a": 2, "b": 3}], {"a_mean": np.float64(1.5)})
    assert (tmp_path / "out" / "metrics.csv").read_text().splitlines() == ["a,b", "1,", "2,3"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"a_mean": 1.5}
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
