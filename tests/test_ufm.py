"""Markou et al.'s claim on the unconstrained-features model, at a small size (K = 10)."""

import pytest
import torch

from lt_lightning.nn.backbones import UnconstrainedFeatures
from lt_lightning.ufm import run_ufm, steps_to_reach


def test_unconstrained_features_backbone():
    ufm = UnconstrainedFeatures(5, 3, seed=1)
    idx = torch.tensor([4, 0, 4])
    out = ufm(idx)
    torch.testing.assert_close(out, ufm.features[idx])
    out.sum().backward()
    assert ufm.features.grad[4].eq(2).all() and ufm.features.grad[1:4].eq(0).all()
    with pytest.raises(TypeError, match="sample indices"):
        ufm(torch.zeros(2, 3))


@pytest.mark.slow
def test_implicit_etf_collapses_fastest():
    runs = {
        m: run_ufm(m, num_classes=10, per_class=10, dim=20, steps=100, seed=0)
        for m in ("learned", "fixed_etf", "implicit_etf")
    }
    reach = {m: steps_to_reach(r.nc1, 0.3) for m, r in runs.items()}
    assert None not in reach.values(), reach
    assert reach["implicit_etf"] < reach["fixed_etf"] < reach["learned"], reach
    nc3 = {m: r.nc3[49] for m, r in runs.items()}
    assert nc3["implicit_etf"] < nc3["fixed_etf"] < nc3["learned"], nc3
    assert all(r.accuracy[-1] == 1.0 for r in runs.values())


def test_steps_to_reach():
    assert steps_to_reach([3, 0.5, 2, 0.4, 0.2], 1.0) == 4
    assert steps_to_reach([3, 2], 1.0) is None
