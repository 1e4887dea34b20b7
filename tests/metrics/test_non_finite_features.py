"""Non-finite input to the NC metrics is named, on the float32 and float64 paths and in the streaming
Metric (moved from tests/reliability/)."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.metrics import NeuralCollapse
from lt_lightning.metrics.functional import neural_collapse


def test_nc_metrics_reject_non_finite_features():
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(20, 4, generator=g, dtype=torch.float64), torch.arange(20) % 3
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64)
    features[5, 1] = torch.nan
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        neural_collapse(features, labels, weight)
    metric = NeuralCollapse(3, 4)  # no per-batch check (validate_args=False): caught at compute
    metric.update(features, labels)
    metric.set_classifier(weight)
    with pytest.raises(ValueError, match="not finite"):
        metric.compute()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("row", [0, 150, 299])  # among a class's shift samples, past them, the last row
def test_float32_nc_path_rejects_non_finite_features_anywhere(value, row):
    # the float32 path checks finiteness on its class statistics, not with a pass over the features:
    # a non-finite value in any row must still be reported as such
    g = torch.Generator().manual_seed(1)
    features, labels = torch.randn(300, 6, generator=g), torch.arange(300) % 2
    weight = torch.randn(2, 6, generator=g)
    features[row, 3] = value
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        neural_collapse(features, labels, weight)
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        neural_collapse(features, labels, weight, precision="float64")


def test_float32_nc_overflow_is_named_apart_from_non_finite_input():
    g = torch.Generator().manual_seed(2)
    features = torch.randn(40, 3, generator=g) * 1e30  # finite, squares overflow
    labels, weight = torch.arange(40) % 2, torch.randn(2, 3, generator=g)
    with pytest.raises(ValueError, match="overflowed"):
        neural_collapse(features, labels, weight)
