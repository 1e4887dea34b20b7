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


@pytest.mark.slow
def test_imbalanced_ce_approaches_seli_and_a_fixed_etf_stays_at_the_etf():
    # Thrampoulidis et al. 2022 on the UFM: counts 40/19/9/4/2, CE with a small weight decay
    setting = {"num_classes": 5, "per_class": 40, "imbalance_ratio": 20.0, "dim": 10, "seed": 0}
    learned = run_ufm("learned", steps=1500, weight_decay=1e-3, measure_every=500, **setting)
    assert learned.accuracy[-1] == 1.0
    # far closer to SELI than to the ETF, for the classifier and the class means
    assert learned.seli_w[-1] < 0.5 * learned.etf_w[-1] and learned.etf_w[-1] > 0.3
    assert learned.seli_h[-1] < 0.25 and learned.seli_wh[-1] < 0.15
    assert learned.seli_w[-1] < learned.seli_w[0]  # and still getting closer
    fixed = run_ufm("fixed_etf", steps=200, weight_decay=1e-3, measure_every=200, **setting)
    assert fixed.etf_w[-1] < 1e-6 and fixed.seli_w[-1] > 0.3  # the fixed ETF never moves toward SELI


def test_measure_every_keeps_the_last_step():
    res = run_ufm("learned", num_classes=3, per_class=4, dim=4, steps=7, measure_every=3)
    assert len(res.nc1) == len(res.seli_w) == len(res.etf_w) == 3  # steps 3, 6 and the last, 7
    with pytest.raises(ValueError, match="measure_every must be a positive integer"):
        run_ufm("learned", steps=1, measure_every=0)
