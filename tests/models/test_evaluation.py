"""models/evaluation.py: the validation, test and predict steps every method shares, against sklearn and a
plain per-class loop over the module's own logits (group accuracy: the mean of the per-class
accuracies of the group's classes, Kang et al.)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from lt_lightning.models import JointModule
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm


def reference_shot_accuracy(pred: np.ndarray, target: np.ndarray, groups: list[int]) -> dict[str, float]:
    """acc, balanced_acc and many/medium/few accuracy, one class at a time."""
    per_class = {c: float(np.mean(pred[target == c] == c)) for c in np.unique(target)}
    out = {"acc": float(np.mean(pred == target)), "balanced_acc": balanced_accuracy_score(target, pred)}
    for g, name in enumerate(("many", "medium", "few")):
        accs = [a for c, a in per_class.items() if groups[c] == g]
        out[f"{name}_acc"] = float(np.mean(accs)) if accs else float("nan")
    return out


@pytest.mark.parametrize("stage", ["validate", "test"])
def test_evaluation_logs_the_reference_accuracies_and_loss(tmp_path, stage):
    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    torch.manual_seed(0)
    model = JointModule(**model_kwargs(dm))
    trainer = cpu_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    prefix = "val" if stage == "validate" else "test"
    res = getattr(trainer, stage)(model, datamodule=dm, verbose=False)[0]
    dm.setup("test")
    x, y = dm.test_dataset.inputs, dm.test_dataset.targets  # validation is the test split here
    model.eval()
    with torch.no_grad():
        logits = model(x)
    expected = reference_shot_accuracy(logits.argmax(1).numpy(), y.numpy(), dm.shot_groups)
    for key, value in expected.items():
        assert res[f"{prefix}/{key}"] == pytest.approx(value, abs=1e-6), key
    assert res[f"{prefix}/loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert 0 < expected["few_acc"] < expected["many_acc"]  # the groups really differ on this problem


def test_predict_step_with_and_without_labels():
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm)).eval()
    x, y = torch.randn(5, 16), torch.arange(5)
    unlabelled = model.predict_step(x, 0)
    assert set(unlabelled) == {"logits", "preds"} and unlabelled["preds"].shape == (5,)
    labelled = model.predict_step((x, y), 0)
    assert set(labelled) == {"logits", "preds", "targets"} and torch.equal(labelled["targets"], y)
    with torch.no_grad():
        assert torch.equal(labelled["logits"], model(x))
    assert torch.equal(labelled["preds"], labelled["logits"].argmax(1))


# bf16-true converts the whole module to bfloat16; ShotAccuracy's counts are int64, so they stay exact
def test_accuracy_counts_stay_exact_under_bf16_true(tmp_path):
    dm = synthetic_dm(test_per_class=300)  # running counts pass integers bfloat16 cannot hold (> 256)
    model = JointModule(**model_kwargs(dm))
    res = cpu_trainer(tmp_path, precision="bf16-true").test(model, datamodule=dm, verbose=False)[0]
    model.eval()
    with torch.no_grad():  # the bfloat16 model's own predictions, counted exactly
        pred = torch.cat([model(x.bfloat16()).argmax(1) for x, _ in dm.test_dataloader()])
    assert res["test/acc"] == pytest.approx(
        (pred == dm.test_dataset.targets).double().mean().item(), abs=1e-6
    )


@pytest.mark.parametrize("method", ["joint", "tde"])  # TDE has a validation step of its own
@pytest.mark.parametrize("stage", ["validate", "test"])
def test_evaluation_logs_calibration_and_group_precision(tmp_path, stage, method):
    from sklearn.metrics import precision_score
    from torchmetrics.functional.classification import multiclass_calibration_error

    from lt_lightning.models import TDEModule
    from tests.metrics.test_calibration import numpy_ece

    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    torch.manual_seed(0)
    model = (JointModule if method == "joint" else TDEModule)(**model_kwargs(dm))
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    prefix = "val" if stage == "validate" else "test"
    res = getattr(trainer, stage)(model, datamodule=dm, verbose=False)[0]
    dm.setup("test")
    x, y = dm.test_dataset.inputs, dm.test_dataset.targets
    model.eval()
    with torch.no_grad():
        probs = model(x).softmax(1)
    ece = multiclass_calibration_error(probs, y, dm.num_classes, n_bins=15, norm="l1").item()
    assert res[f"{prefix}/ece"] == pytest.approx(ece, abs=1e-6)
    conf, pred, target = probs.max(1).values.numpy(), probs.argmax(1).numpy(), y.numpy()
    precision = precision_score(
        target, pred, labels=list(range(dm.num_classes)), average=None, zero_division=0
    )
    groups = np.asarray(dm.shot_groups)
    for g, name in enumerate(("many", "medium", "few")):
        members = np.flatnonzero(groups == g)
        keep = np.isin(target, members)
        expected = numpy_ece(conf[keep], (pred == target)[keep].astype(float))
        assert res[f"{prefix}/ece/{name}"] == pytest.approx(expected, abs=1e-6), name
        assert res[f"{prefix}/precision/{name}"] == pytest.approx(precision[members].mean(), abs=1e-6), name
