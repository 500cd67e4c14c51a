"""summarize: mean and sample SD ignoring NaN."""

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
