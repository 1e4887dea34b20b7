"""τ-norm and NCM (models/decoupled/post_hoc.py): classifiers fitted from data when evaluation starts.

References: τ-norm's accuracy per τ computed by hand from the stage-1 classifier on the validation
split (τ is chosen there, never on the test split); NCM's centroids and predictions by hand from the
stage-1 features (Kang's default: centred, L2-normalised, Euclidean)."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.models import NCMModule, TauNormModule, load_module_from_checkpoint
from lt_lightning.nn.functional import tau_normalize
from tests.models.helpers import cpu_trainer, stage2_kwargs, synthetic_dm

GRID = [0.0, 0.5, 1.0, 2.0]


def _accuracy(features_fn, weight, loader) -> float:
    correct = n = 0
    with torch.no_grad():
        for x, y in loader:
            correct += ((features_fn(x) @ weight.T).argmax(1) == y).sum().item()
            n += len(y)
    return correct / n


def _reference_tau_accuracies(stage1_ckpt, loader) -> list[float]:
    ref = load_module_from_checkpoint(stage1_ckpt).eval()
    return [_accuracy(ref.extract_features, tau_normalize(ref.head.weight, t), loader) for t in GRID]


def test_validate_sweeps_tau_and_keeps_the_best(stage1_ckpt, tmp_path):
    dm = synthetic_dm(val_per_class=30)
    model = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau_grid=GRID))
    res = cpu_trainer(tmp_path).validate(model, datamodule=dm, verbose=False)[0]
    expected = _reference_tau_accuracies(stage1_ckpt, dm.val_dataloader())
    for tau, acc in zip(GRID, expected):
        assert res[f"val/tau_norm/acc@{tau:g}"] == pytest.approx(acc, abs=1e-6)
    best = GRID[expected.index(max(expected))]  # the first best on ties
    assert res["val/tau_norm/best_tau"] == best == float(model.head.tau)
    assert bool(model.post_hoc_ready)


def test_test_chooses_tau_on_the_validation_split_and_logs_it(stage1_ckpt, tmp_path):
    dm = synthetic_dm(val_per_class=30)
    assert not dm.val_is_test
    model = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau_grid=GRID))
    res = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    val_acc = _reference_tau_accuracies(stage1_ckpt, dm.val_dataloader())
    expected = GRID[val_acc.index(max(val_acc))]
    assert res["test/tau_norm/tau"] == pytest.approx(expected) and float(model.head.tau) == expected
    ref = load_module_from_checkpoint(stage1_ckpt).eval()
    test_acc = _accuracy(ref.extract_features, tau_normalize(ref.head.weight, expected), dm.test_dataloader())
    assert res["test/acc"] == pytest.approx(test_acc, abs=1e-6)


def test_select_tau_is_the_sweep_of_a_given_loader(stage1_ckpt):
    dm = synthetic_dm(val_per_class=30)
    model = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau_grid=GRID))
    dm.setup("validate")
    chosen = model.select_tau(dm.val_dataloader())  # from Python, without a trainer
    val_acc = _reference_tau_accuracies(stage1_ckpt, dm.val_dataloader())
    assert chosen == GRID[val_acc.index(max(val_acc))] == float(model.head.tau)
    assert bool(model.post_hoc_ready)


def test_tau_is_never_chosen_on_the_test_split(stage1_ckpt, tmp_path):
    dm = synthetic_dm()  # no val_per_class: validation is the test split
    assert dm.val_is_test
    with pytest.raises(ValueError, match="val_per_class"):
        cpu_trainer(tmp_path).test(TauNormModule(**stage2_kwargs(dm, stage1_ckpt)), datamodule=dm)
    fixed = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau=1.0))  # a fixed tau chooses nothing
    res = cpu_trainer(tmp_path).test(fixed, datamodule=dm, verbose=False)[0]
    assert res["test/tau_norm/tau"] == pytest.approx(1.0)


def test_a_fixed_tau_given_now_wins_over_the_checkpoints(stage1_ckpt, tmp_path):
    dm = synthetic_dm(val_per_class=8)
    model = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau_grid=[0.5, 1.0, 1.5]))
    trainer = cpu_trainer(tmp_path)
    trainer.validate(model, datamodule=dm, verbose=False)
    chosen = float(model.head.tau)
    path = tmp_path / "tau.ckpt"
    trainer.save_checkpoint(path)
    other = 0.0 if chosen != 0.0 else 2.0
    fixed = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau=other))
    res = cpu_trainer(tmp_path).test(fixed, datamodule=dm, ckpt_path=str(path), verbose=False)[0]
    assert float(fixed.head.tau) == other
    reference = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau=other))  # no checkpoint at all
    assert (
        res["test/acc"] == cpu_trainer(tmp_path).test(reference, datamodule=dm, verbose=False)[0]["test/acc"]
    )
    free = TauNormModule(**stage2_kwargs(dm, stage1_ckpt, tau_grid=[0.5, 1.0, 1.5]))
    cpu_trainer(tmp_path).test(free, datamodule=dm, ckpt_path=str(path), verbose=False)
    assert float(free.head.tau) == chosen  # without a fixed tau the checkpoint's selection is kept


@pytest.mark.parametrize(("center", "normalize"), [(True, True), (False, False)])
def test_ncm_centroids_and_predictions_match_the_definition(stage1_ckpt, tmp_path, center, normalize):
    dm = synthetic_dm()
    model = NCMModule(**stage2_kwargs(dm, stage1_ckpt, ncm_center=center, ncm_normalize=normalize))
    res = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    stage1 = load_module_from_checkpoint(stage1_ckpt).eval()

    def transform(f, mu):
        f = f - mu if center else f
        return f / f.norm(dim=1, keepdim=True) if normalize else f

    with torch.no_grad():
        x, y = dm.train_eval_dataset.inputs, dm.train_eval_dataset.targets
        f = stage1.extract_features(x).double()
        mu = f.mean(0)
        g = transform(f, mu)
        centroids = torch.stack([g[y == c].mean(0) for c in range(dm.num_classes)])
        torch.testing.assert_close(model.head.centroids.double(), centroids, atol=1e-5, rtol=1e-5)
        xt, yt = dm.test_dataset.inputs, dm.test_dataset.targets
        pred = torch.cdist(transform(stage1.extract_features(xt).double(), mu), centroids).argmin(1)
    assert res["test/acc"] == pytest.approx((pred == yt).double().mean().item(), abs=1e-6)


def test_fit_ncm_refuses_a_class_without_samples(stage1_ckpt):
    dm = synthetic_dm()
    model = NCMModule(**stage2_kwargs(dm, stage1_ckpt))
    dm.setup("fit")
    x, y = dm.train_eval_dataset.inputs, dm.train_eval_dataset.targets
    keep = y != 4
    with pytest.raises(ValueError, match=r"NCM: classes \[4\] have no training samples"):
        model.fit_ncm([(x[keep], y[keep])])
    assert not bool(model.post_hoc_ready)


def test_a_fitted_classifier_is_not_fitted_again(stage1_ckpt, tmp_path, monkeypatch):
    dm = synthetic_dm()
    model = NCMModule(**stage2_kwargs(dm, stage1_ckpt))
    trainer = cpu_trainer(tmp_path)
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.save_checkpoint(tmp_path / "ncm.ckpt")
    loaded = load_module_from_checkpoint(tmp_path / "ncm.ckpt")
    monkeypatch.setattr(NCMModule, "fit_ncm", lambda *a: pytest.fail("fitted again"))
    cpu_trainer(tmp_path).test(loaded, datamodule=dm, verbose=False)
    assert torch.equal(loaded.head.centroids, model.head.centroids)
