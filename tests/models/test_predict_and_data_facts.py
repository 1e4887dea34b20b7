"""predict_step follows test semantics for every method; evaluation options given now win over a
checkpoint's; the module takes class counts and shot thresholds from the datamodule at setup."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.callbacks import PredictionWriter
from lt_lightning.data.profiles import shot_groups
from lt_lightning.metrics import ShotAccuracy
from lt_lightning.models import (
    DecoupledModule,
    FixedETFModule,
    ImplicitETFModule,
    JointModule,
    TDEModule,
)
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

ONE_STAGE = {
    "joint": (JointModule, {}),
    "fixed_etf": (FixedETFModule, {"loss": "ce", "temperature": 0.1}),
    "tde": (TDEModule, {"alpha": 1.5}),
    "implicit_etf": (ImplicitETFModule, {}),
}


@pytest.fixture(scope="module")
def stage1_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage1")
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    trainer = cpu_trainer(tmp, max_epochs=4)
    trainer.fit(model, datamodule=dm)
    path = tmp / "joint.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def _decoupled(stage1_ckpt, mode, **kwargs):
    # tau_norm picks tau on a validation split apart from the test split
    dm = synthetic_dm(val_per_class=8) if mode == "tau_norm" else synthetic_dm()
    kw = model_kwargs(dm, stage1_checkpoint=stage1_ckpt, mode=mode, **kwargs)
    for k in ("backbone", "backbone_kwargs"):
        kw.pop(k)
    return dm, DecoupledModule(**kw)


def _predict_matches_test(tmp_path, model, dm):
    trainer = cpu_trainer(tmp_path)
    out = trainer.predict(model, datamodule=dm)
    logits = torch.cat([o["logits"] for o in out])
    preds = torch.cat([o["preds"] for o in out])
    targets = torch.cat([o["targets"] for o in out])
    assert logits.shape == (len(dm.test_dataset), dm.num_classes)
    assert torch.equal(preds, logits.argmax(1))
    # the model's own eval-mode forward on the test inputs gives the same logits
    model.eval()
    with torch.no_grad():
        direct = torch.cat([model(x) for x, _ in dm.test_dataloader()])
    torch.testing.assert_close(logits, direct)
    test = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    assert test["test/acc"] == pytest.approx((preds == targets).double().mean().item(), abs=1e-6)
    return logits


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ONE_STAGE))
def test_predict_gives_the_test_logits(tmp_path, name):
    cls, extra = ONE_STAGE[name]
    dm = synthetic_dm()
    model = cls(**model_kwargs(dm, **extra))
    cpu_trainer(tmp_path, max_epochs=2).fit(model, datamodule=dm)
    logits = _predict_matches_test(tmp_path, model, dm)
    if name == "tde":  # counterfactual TDE logits, not the plain causal-norm ones
        model.eval()
        with torch.no_grad():
            x = dm.test_dataset.inputs
            plain = model.head(model.extract_features(x), counterfactual=False)
        assert not torch.allclose(logits, plain)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["crt", "lws", "tau_norm", "ncm"])
def test_predict_decoupled_uses_post_hoc_fitting(tmp_path, stage1_ckpt, mode):
    dm, model = _decoupled(stage1_ckpt, mode, tau_grid=[0.0, 0.5, 1.0])
    if mode in ("crt", "lws"):
        cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    _predict_matches_test(tmp_path, model, dm)
    assert bool(model.post_hoc_ready)  # tau chosen / centroids fitted before predicting


def test_prediction_writer_saves_logits_and_csv(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    writer = PredictionWriter(output_dir=str(tmp_path / "pred"))
    trainer = cpu_trainer(tmp_path, callbacks=[writer])
    out = trainer.predict(model, datamodule=dm, return_predictions=True)
    saved = torch.load(tmp_path / "pred/predictions.pt")
    torch.testing.assert_close(saved["logits"], torch.cat([o["logits"] for o in out]))
    assert torch.equal(saved["index"], torch.arange(len(dm.test_dataset)))
    assert torch.equal(saved["targets"], dm.test_dataset.targets)
    rows = (tmp_path / "pred/predictions.csv").read_text().splitlines()
    assert rows[0] == "index,target,prediction" and len(rows) == len(dm.test_dataset) + 1
    i, y, p = map(int, rows[5].split(","))
    assert (i, y, p) == (4, int(saved["targets"][4]), int(saved["preds"][4]))


def test_predict_accepts_unlabelled_batches():
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm)).eval()
    out = model.predict_step(torch.randn(5, 16), 0)
    assert set(out) == {"logits", "preds"} and out["preds"].shape == (5,)


def test_fixed_tau_wins_over_the_checkpoint_tau(tmp_path, stage1_ckpt):
    dm, model = _decoupled(stage1_ckpt, "tau_norm", tau_grid=[0.5, 1.0, 1.5])
    trainer = cpu_trainer(tmp_path)
    trainer.validate(model, datamodule=dm, verbose=False)
    chosen = float(model.head.tau)
    path = tmp_path / "tau.ckpt"
    trainer.save_checkpoint(path)
    other = 0.0 if chosen != 0.0 else 2.0
    dm2, fixed = _decoupled(stage1_ckpt, "tau_norm", tau=other)
    res = cpu_trainer(tmp_path).test(fixed, datamodule=dm2, ckpt_path=str(path), verbose=False)[0]
    assert float(fixed.head.tau) == other
    _, reference = _decoupled(stage1_ckpt, "tau_norm", tau=other)  # no checkpoint at all
    ref = cpu_trainer(tmp_path).test(reference, datamodule=synthetic_dm(), verbose=False)[0]
    assert res["test/acc"] == ref["test/acc"]
    # without a fixed tau the checkpoint's selected tau is kept
    dm3, free = _decoupled(stage1_ckpt, "tau_norm", tau_grid=[0.5, 1.0, 1.5])
    cpu_trainer(tmp_path).test(free, datamodule=dm3, ckpt_path=str(path), verbose=False)
    assert float(free.head.tau) == chosen


# ---- facts of the data ---------------------------------------------------------------------------------
def _expected_shot_acc(model, dm, many, few):
    metric = ShotAccuracy(
        dm.num_classes, class_counts=dm.class_counts, many_threshold=many, few_threshold=few
    )
    model.eval()
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            metric.update(model(x), y)
    return metric.compute()


@pytest.mark.slow
@pytest.mark.parametrize("pass_counts", [True, False])
def test_python_flow_takes_counts_and_thresholds_from_the_datamodule(tmp_path, pass_counts):
    # The README's "From Python" flow: only num_classes (and maybe class_counts) are passed; the
    # datamodule's thresholds (40, 25) differ from the model's defaults (100, 20).
    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    assert shot_groups(dm.class_counts, 40, 25).tolist() != shot_groups(dm.class_counts, 100, 20).tolist()
    kw = model_kwargs(dm)
    for key in ("many_threshold", "few_threshold") + (() if pass_counts else ("class_counts",)):
        kw.pop(key)
    model = JointModule(**kw)
    trainer = cpu_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert (model.hparams.many_threshold, model.hparams.few_threshold) == (40, 25)
    assert model.class_counts == dm.class_counts
    expected = _expected_shot_acc(model, dm, 40, 25)
    for key in ("many_acc", "medium_acc", "few_acc"):
        assert res[f"test/{key}"] == pytest.approx(float(expected[key]), abs=1e-6, nan_ok=True)


def test_tde_sweep_groups_follow_the_datamodule(tmp_path):
    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    kw = model_kwargs(dm, alpha_grid=[0.0, 1.0])
    kw.pop("many_threshold"), kw.pop("few_threshold")
    model = TDEModule(**kw)
    cpu_trainer(tmp_path).validate(model, datamodule=dm, verbose=False)
    expected = shot_groups(dm.class_counts, 40, 25)
    for metric in model.modules():
        if isinstance(metric, ShotAccuracy):
            assert torch.equal(metric.class_group.cpu(), expected)


def test_datamodule_with_other_k_is_refused(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(synthetic_dm(num_classes=4)))
    with pytest.raises(
        ValueError, match="datamodule has num_classes=6 but the model was built with num_classes=4"
    ):
        cpu_trainer(tmp_path).validate(model, datamodule=dm, verbose=False)


# ---- W&B per-class table at test ------------------------------------------------------------------------
def test_per_class_rows():
    from lt_lightning.models.base import per_class_rows

    rows = per_class_rows(torch.tensor([1.0, float("nan"), 0.25]), [50, 10, 3], torch.tensor([0, 1, 2]))
    assert rows == [[0, 50, 1.0, "many"], [1, 10, None, "medium"], [2, 3, 0.25, "few"]]
    assert per_class_rows(torch.tensor([0.5]), None, None) == [[0, None, 0.5, None]]


def test_test_logs_a_per_class_table_to_wandb(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    from lt_lightning.loggers import WandbLoggerOfflineSafe

    tables = []
    monkeypatch.setattr(
        WandbLogger, "log_table", lambda self, key, columns, data, **kw: tables.append((key, columns, data))
    )
    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    model = JointModule(**model_kwargs(dm))
    logger = WandbLoggerOfflineSafe(mode="disabled", save_dir=str(tmp_path))
    cpu_trainer(tmp_path, logger=logger).test(model, datamodule=dm, verbose=False)
    ((key, columns, rows),) = tables
    assert key == "test/per_class" and columns == ["class", "train_count", "accuracy", "shot_group"]
    names = ["many", "medium", "few"]
    assert [r[1] for r in rows] == dm.class_counts
    assert [r[3] for r in rows] == [names[g] for g in shot_groups(dm.class_counts, 40, 25).tolist()]
    model.eval()
    with torch.no_grad():
        x, y = dm.test_dataset.inputs, dm.test_dataset.targets
        pred = model(x).argmax(1)
    for k, _, acc, _ in rows:
        assert acc == pytest.approx((pred[y == k] == k).double().mean().item())
