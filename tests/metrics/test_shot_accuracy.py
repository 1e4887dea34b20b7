"""ShotAccuracy against sklearn and a per-class Python loop written from REFERENCE.md ("Data")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from lt_lightning.metrics import ShotAccuracy

pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def reference_group_acc(preds, target, groups):
    """Mean per-class accuracy of each group's classes present in ``target`` (NaN for none)."""
    out = {}
    for g, name in enumerate(("many", "medium", "few")):
        accs = []
        for c in range(len(groups)):
            if groups[c] != g:
                continue
            idx = [i for i in range(len(target)) if target[i] == c]
            if idx:
                accs.append(sum(preds[i] == c for i in idx) / len(idx))
        out[f"{name}_acc"] = float(np.mean(accs)) if accs else math.nan
        out[f"{name}_classes"] = float(sum(1 for x in groups if x == g))
    return out


def _data(n, k, seed, absent=()):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, k, (n,), generator=g)
    for c in absent:
        target[target == c] = (c + 1) % k
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), target] += 0.8  # better than chance, not perfect
    return logits, target


@pytest.mark.parametrize("absent", [(), (2, 7)])
@pytest.mark.parametrize("splits", [1, [5, 17, 18, 60]])
def test_matches_sklearn_and_reference(absent, splits):
    counts = [500, 300, 150, 100, 60, 20, 19, 8, 3, 1]  # thresholds 100 / 20 hit exactly at 100 and 20
    logits, target = _data(97, 10, seed=len(absent), absent=absent)
    metric = ShotAccuracy(10, class_counts=counts)
    for lb, tb in zip(logits.tensor_split(splits), target.tensor_split(splits)):
        metric.update(lb, tb)
    res = metric.compute()
    preds = logits.argmax(1)
    assert res["acc"] == pytest.approx(accuracy_score(target, preds), abs=1e-15)
    assert res["balanced_acc"] == pytest.approx(balanced_accuracy_score(target, preds), abs=1e-15)
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    for key, val in reference_group_acc(preds.tolist(), target.tolist(), groups).items():
        assert res[key] == pytest.approx(val, abs=1e-15), key


def test_predicted_but_absent_class_does_not_count_as_zero():
    """The MulticlassAccuracy(average="macro") trap: class 2 predicted, never a target."""
    preds, target = torch.tensor([0, 2, 1, 1]), torch.tensor([0, 0, 1, 1])
    metric = ShotAccuracy(3, class_counts=[200, 50, 5])
    metric.update(preds, target)
    res = metric.compute()
    assert res["balanced_acc"] == pytest.approx(0.75)
    assert res["balanced_acc"] == pytest.approx(balanced_accuracy_score(target, preds))
    assert math.isnan(res["few_acc"]) and res["few_classes"] == 1.0


def test_empty_group_is_nan_with_size_zero():
    metric = ShotAccuracy(3, class_counts=[5000, 50, 30])  # like CIFAR-10-LT r=100: no few-shot class
    metric.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1]))
    res = metric.compute()
    assert math.isnan(res["few_acc"]) and res["few_classes"] == 0.0
    assert res["many_acc"] == 1.0 and res["medium_acc"] == 0.5


def test_without_groups_only_overall_keys_and_mask():
    metric = ShotAccuracy(4)
    preds, target = torch.tensor([0, 1, 2, 3, 3]), torch.tensor([0, 1, 2, 2, 3])
    metric.update(preds, target, mask=torch.tensor([True, True, True, False, True]))
    res = metric.compute()
    assert set(res) == {"acc", "balanced_acc"}
    assert res["acc"] == 1.0
    assert metric.per_class_accuracy().tolist() == [1.0, 1.0, 1.0, 1.0]


def test_shot_groups_argument_equals_class_counts():
    logits, target = _data(50, 4, seed=3)
    a = ShotAccuracy(4, class_counts=[300, 90, 30, 4])
    b = ShotAccuracy(4, shot_groups=torch.tensor([0, 1, 1, 2]))
    a.update(logits, target)
    b.update(logits, target)
    assert a.compute() == b.compute()


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0,), {}, "num_classes"),
        ((3,), {"class_counts": [1, 2]}, "class_counts"),
        ((3,), {"class_counts": [1, 2, 3], "shot_groups": [0, 1, 2]}, "either"),
        ((3,), {"shot_groups": [0, 1, 5]}, "shot_groups"),
    ],
)
def test_bad_init(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShotAccuracy(*args, **kwargs)


@pytest.mark.parametrize(
    "preds, target, match",
    [
        (torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), r"\[3, 3\]"),
        (torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long), "preds must be"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), "preds must be"),
        (torch.zeros(3, dtype=torch.long), torch.zeros(3), "target must be"),
    ],
)
def test_bad_update(preds, target, match):
    with pytest.raises(ValueError, match=match):
        ShotAccuracy(3).update(preds, target)


# ---- torchmetrics conventions: tensors from compute, plot, the functional form --------------------------
def test_compute_returns_tensors_and_functional_agrees():
    from sklearn.metrics import balanced_accuracy_score

    from lt_lightning.metrics.functional import shot_accuracy

    g = torch.Generator().manual_seed(3)
    target = torch.randint(0, 5, (200,), generator=g)
    logits = torch.randn(200, 5, generator=g) + 2.0 * torch.nn.functional.one_hot(target, 5)
    counts = [300, 120, 50, 15, 4]
    metric = ShotAccuracy(5, class_counts=counts)
    for lb, tb in zip(logits.split(37), target.split(37)):
        metric.update(lb, tb)
    res = metric.compute()
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and v.dtype == torch.float64 for v in res.values())
    one_shot = shot_accuracy(logits, target, 5, class_counts=counts)
    assert set(one_shot) == set(res) and all(torch.equal(one_shot[k], res[k]) for k in res)
    assert float(res["balanced_acc"]) == pytest.approx(balanced_accuracy_score(target, logits.argmax(1)))
    # few = classes 3 and 4 (< 20 images): the mean of their two per-class accuracies
    pred = logits.argmax(1)
    few = [float((pred[target == c] == c).double().mean()) for c in (3, 4)]
    assert float(res["few_acc"]) == pytest.approx(sum(few) / 2)


def test_empty_group_is_nan_without_host_reads():
    metric = ShotAccuracy(3, class_counts=[500, 50, 5])
    metric.update(torch.tensor([0, 1]), torch.tensor([0, 1]))  # no few-shot class in the targets
    res = metric.compute()
    assert torch.isnan(res["few_acc"]) and float(res["few_classes"]) == 1.0


def test_plot_draws_a_figure():
    import matplotlib

    matplotlib.use("Agg")
    metric = ShotAccuracy(3, class_counts=[500, 50, 5])
    metric.update(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]))
    fig, ax = metric.plot()
    assert fig is not None and ax is not None
    fig, _ = metric.plot([metric.compute(), metric.compute()])  # a curve over two "epochs"
    assert len(fig.axes) >= 1
