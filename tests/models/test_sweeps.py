"""models/sweeps.py: one pass over the data scores a grid of post-hoc settings (TDE's α, τ-norm's τ); each
value's result equals a ShotAccuracy fed that value's logits alone plus its mean cross-entropy, and the
best is the maximum, ties going to the lowest cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.metrics import ShotAccuracy
from lt_lightning.models.sweeps import AccuracySweep


def test_each_value_scores_its_own_logits():
    g = torch.Generator().manual_seed(0)
    values, k = [0.0, 0.5, 2.0], 4
    sweep = AccuracySweep(values, k, shot_groups=[0, 0, 1, 2])
    references = [ShotAccuracy(k, shot_groups=[0, 0, 1, 2]) for _ in values]
    for _ in range(3):
        logits, y = torch.randn(len(values), 10, k, generator=g), torch.randint(0, k, (10,), generator=g)
        sweep.update(logits, y)
        for ref, one in zip(references, logits):
            ref.update(one, y)
    seen = []
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        seen.append((torch.randn(len(values), 10, k, generator=g), torch.randint(0, k, (10,), generator=g)))
    for t, (got, ref) in enumerate(zip(sweep.compute(), references)):
        expected = ref.compute()
        assert got.keys() == {*expected.keys(), "nll"}
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], equal_nan=True)
        # mean cross-entropy from the definition: -log softmax of the true class, sample by sample
        nll = [-torch.log_softmax(lg[t].double(), 1)[i, y[i]] for lg, y in seen for i in range(len(y))]
        torch.testing.assert_close(got["nll"].double(), torch.stack(nll).mean())
    sweep.reset()
    assert all(float(m.total.sum()) == 0 for m in sweep.metrics)


def test_best_is_the_first_maximum_and_nan_never_wins():
    results = [{"acc": torch.tensor(0.5)}, {"acc": torch.tensor(math.nan)}, {"acc": torch.tensor(0.7)}]
    assert AccuracySweep.best(results) == 2
    assert AccuracySweep.best([{"acc": 0.7}, {"acc": 0.7}]) == 0
    assert AccuracySweep.best([{"acc": math.nan}, {"acc": 0.0}]) == 1


def test_ties_in_accuracy_go_to_the_lowest_cross_entropy():
    results = [
        {"acc": 0.9, "nll": torch.tensor(0.40)},
        {"acc": 0.8, "nll": torch.tensor(0.10)},  # lower loss, but not the best accuracy
        {"acc": 0.9, "nll": torch.tensor(0.30)},
        {"acc": 0.9, "nll": torch.tensor(0.35)},
    ]
    assert AccuracySweep.best(results) == 2
    assert AccuracySweep.best([{"acc": 0.9, "nll": 0.2}, {"acc": 0.9, "nll": 0.2}]) == 0


def test_bad_input():
    with pytest.raises(ValueError, match="at least one value"):
        AccuracySweep([], 3)
    with pytest.raises(ValueError, match="expected 2 logit sets, got 3"):
        AccuracySweep([0.0, 1.0], 3).update(torch.zeros(3, 4, 3), torch.zeros(4, dtype=torch.long))
