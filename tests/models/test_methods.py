"""Every method trains on CPU, checkpoints round-trip, and bad configuration is rejected."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.models import (
    DecoupledModule,
    FixedETFModule,
    ImplicitETFModule,
    JointModule,
    TDEModule,
    load_module_from_checkpoint,
)
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

METHODS = {
    "joint": (JointModule, {}),
    "fixed_etf_dr": (FixedETFModule, {"loss": "dr"}),
    "fixed_etf_ce": (FixedETFModule, {"loss": "ce", "temperature": 0.1}),
    "fixed_etf_mixup": (FixedETFModule, {"loss": "dr", "mixup_alpha": 1.0}),
    "tde": (TDEModule, {"alpha": 1.0}),
    "implicit_etf": (ImplicitETFModule, {}),
}


def _eval_loss_and_acc(model, dm):
    model.eval()
    losses, correct, n = [], 0, 0
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            logits = model(x)
            losses.append(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            correct += (logits.argmax(1) == y).sum().item()
            n += len(y)
    return torch.stack(losses).sum().item() / n, correct / n


def _train_loss(model, dm):
    """The training objective over the whole (small) training set as one batch, in eval mode."""
    dm.setup()
    model.eval()
    with torch.no_grad():
        x, y = dm.train_eval_dataset.inputs, dm.train_eval_dataset.targets
        feats = model.extract_features(x)
        loss = model.compute_loss(model.forward_head(feats), feats, y, y).item()
    model.train()
    return loss


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_and_beats_chance(tmp_path, name):
    cls, extra = METHODS[name]
    dm = synthetic_dm()
    dm.setup()
    model = cls(**model_kwargs(dm, **extra))
    torch.manual_seed(0)
    loss_before = _train_loss(model, dm)
    trainer = cpu_trainer(tmp_path, max_epochs=8)
    trainer.fit(model, datamodule=dm)
    loss_after = _train_loss(model, dm)
    assert loss_after < 0.7 * loss_before, (loss_before, loss_after)
    _, acc = _eval_loss_and_acc(model, dm)
    assert acc > 1.0 / dm.num_classes + 0.4, acc
    results = trainer.validate(model, datamodule=dm, verbose=False)[0]
    for key in ("val/acc", "val/balanced_acc", "val/many_acc", "val/medium_acc", "val/few_acc"):
        assert key in results
    assert results["val/acc"] == pytest.approx(acc, abs=1e-6)


def test_joint_classifier_really_trains_and_etf_stays_frozen(tmp_path):
    dm = synthetic_dm()
    joint = JointModule(**model_kwargs(dm))
    w0 = joint.head.weight.detach().clone()
    etf = FixedETFModule(**model_kwargs(dm))
    e0 = etf.head.etf.clone()
    assert "head.etf" in etf.state_dict() and not any(p is etf.head.etf for p in etf.parameters())
    for m in (joint, etf):
        cpu_trainer(tmp_path, max_epochs=1).fit(m, datamodule=dm)
    assert not torch.allclose(joint.head.weight, w0)
    assert torch.equal(etf.head.etf, e0)


@pytest.mark.parametrize("name", ["joint", "fixed_etf_dr", "tde", "implicit_etf"])
def test_checkpoint_round_trip(tmp_path, name):
    cls, extra = METHODS[name]
    dm = synthetic_dm()
    model = cls(
        **model_kwargs(dm, **extra, etf_seed=3) if cls is FixedETFModule else model_kwargs(dm, **extra)
    )
    trainer = cpu_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module_from_checkpoint(str(path))
    assert type(loaded) is cls
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    if cls is TDEModule:
        assert loaded.head.embed.abs().sum() > 0  # the moving average was saved, not re-initialised
    x = next(iter(dm.test_dataloader()))[0]
    model.eval(), loaded.eval()
    assert torch.equal(model(x), loaded(x))


def test_fixed_etf_needs_d_at_least_k_minus_1():
    dm = synthetic_dm(num_classes=12)
    with pytest.raises(ValueError, match=r"d >= K-1|fixdim"):
        FixedETFModule(
            **model_kwargs(dm, backbone_kwargs={"in_features": 16, "hidden": [32], "out_features": 8})
        )
    model = FixedETFModule(
        **model_kwargs(
            dm, fixdim=True, backbone_kwargs={"in_features": 16, "hidden": [32], "out_features": 8}
        )
    )
    assert model.feature_dim == 12


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (JointModule, {"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
        (JointModule, {"lr_schedule": "step"}, "unknown lr_schedule 'step'"),
        (JointModule, {"milestones": [1, 2], "milestone_factors": [0.1]}, "differ in length"),
        (JointModule, {"mixup_alpha": -1.0}, "mixup_alpha must be >= 0"),
        (JointModule, {"backbone": "vgg"}, "unknown backbone 'vgg'"),
        (JointModule, {"class_counts": [1, 2]}, "class_counts has 2 entries"),
        (JointModule, {"trainable_backbone": ["nope"]}, r"prefixes \['nope'\] match no backbone parameter"),
        (FixedETFModule, {"loss": "mse"}, "unknown loss 'mse'"),
        (TDEModule, {"num_heads": 5}, "num_heads=5 must divide"),
    ],
)
def test_bad_configuration(cls, kwargs, match):
    dm = synthetic_dm()
    with pytest.raises(ValueError, match=match):
        cls(**model_kwargs(dm, **kwargs))


def test_tde_eval_logits_are_counterfactual(tmp_path):
    dm = synthetic_dm()
    model = TDEModule(**model_kwargs(dm, alpha=1.5))
    cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    x = next(iter(dm.test_dataloader()))[0]
    model.eval()
    feats = model.extract_features(x)
    from lt_lightning.nn.functional import causal_norm_logits

    expected = causal_norm_logits(feats, model.head.weight, embed=model.head.embed, alpha=1.5)
    torch.testing.assert_close(model(x), expected)
    plain = causal_norm_logits(feats, model.head.weight)
    assert not torch.allclose(model(x), plain)


def test_tde_alpha_sweep_logged(tmp_path):
    dm = synthetic_dm()
    model = TDEModule(**model_kwargs(dm, alpha=1.0, alpha_grid=[0.0, 1.0, 2.0]))
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    res = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert res["val/tde_alpha/acc@1"] == pytest.approx(res["val/acc"], abs=1e-6)
    assert res["val/tde_alpha/best_alpha"] in (0.0, 1.0, 2.0)
    best = res["val/tde_alpha/best_alpha"]
    assert res[f"val/tde_alpha/acc@{best:g}"] == max(res[f"val/tde_alpha/acc@{a:g}"] for a in (0, 1, 2))


# ---- two-stage decoupling ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stage1_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage1")
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm))
    trainer = cpu_trainer(tmp, max_epochs=6)
    trainer.fit(model, datamodule=dm)
    path = tmp / "joint.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def _stage2(stage1_ckpt, mode, **kwargs):
    dm = synthetic_dm(sampler="class" if mode in ("crt", "lws") else "instance")
    kw = model_kwargs(dm, stage1_checkpoint=stage1_ckpt, mode=mode, **kwargs)
    for k in ("backbone", "backbone_kwargs"):
        kw.pop(k)
    return dm, DecoupledModule(**kw)


def test_crt_trains_only_a_fresh_classifier(tmp_path, stage1_ckpt):
    stage1 = load_module_from_checkpoint(stage1_ckpt)
    dm, model = _stage2(stage1_ckpt, "crt", bn_mode="frozen")
    assert not torch.equal(model.head.weight, stage1.head.weight)  # re-initialised
    backbone0 = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    cpu_trainer(tmp_path, max_epochs=3).fit(model, datamodule=dm)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, backbone0[k]), k  # frozen, BN statistics included (bn_mode=frozen)
    _, acc = _eval_loss_and_acc(model, dm)
    assert acc > 0.6


def test_crt_reestimate_updates_bn_statistics_only(tmp_path, stage1_ckpt):
    dm, model = _stage2(stage1_ckpt, "crt", bn_mode="reestimate")
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    after = model.backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("running" in k or "num_batches" in k for k in changed)


def test_lws_learns_scales_only_and_round_trips(tmp_path, stage1_ckpt):
    stage1 = load_module_from_checkpoint(stage1_ckpt)
    dm, model = _stage2(stage1_ckpt, "lws", bn_mode="frozen")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.scales"]
    trainer = cpu_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, datamodule=dm)
    assert not torch.allclose(model.head.scales, torch.ones(dm.num_classes))
    torch.testing.assert_close(model.head.base_weight, stage1.head.weight)
    path = tmp_path / "lws.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_module_from_checkpoint(str(path))
    assert torch.equal(loaded.head.scales, model.head.scales)


def test_tau_norm_selects_tau_on_validation(tmp_path, stage1_ckpt):
    dm, model = _stage2(stage1_ckpt, "tau_norm", tau_grid=[0.0, 0.5, 1.0, 1.5])
    trainer = cpu_trainer(tmp_path)
    res = trainer.validate(model, datamodule=dm, verbose=False)[0]
    accs = [res[f"val/tau_norm/acc@{t:g}"] for t in (0.0, 0.5, 1.0, 1.5)]
    best = res["val/tau_norm/best_tau"]
    assert accs[[0.0, 0.5, 1.0, 1.5].index(best)] == max(accs)
    assert float(model.head.tau) == best
    # independent check of one point of the curve: tau = 0 is the plain stage-1 classifier without bias
    stage1 = load_module_from_checkpoint(stage1_ckpt)
    stage1.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in dm.val_dataloader():
            pred = (stage1.extract_features(x) @ stage1.head.weight.T).argmax(1)
            correct += (pred == y).sum().item()
            n += len(y)
    assert res["val/tau_norm/acc@0"] == pytest.approx(correct / n, abs=1e-6)
    # test without a prior validate would select tau on this dm's val split, which is its test split: refused
    # (tests/models/test_recipe_guards.py covers selection on a held-out split)
    dm2, model2 = _stage2(stage1_ckpt, "tau_norm", tau_grid=[0.0, 0.5, 1.0, 1.5])
    with pytest.raises(ValueError, match="val_per_class"):
        cpu_trainer(tmp_path).test(model2, datamodule=dm2, verbose=False)


def test_ncm_centroids_match_definition(tmp_path, stage1_ckpt):
    dm, model = _stage2(stage1_ckpt, "ncm")
    res = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    stage1 = load_module_from_checkpoint(stage1_ckpt)
    stage1.eval()
    with torch.no_grad():
        x, y = dm.train_eval_dataset.inputs, dm.train_eval_dataset.targets
        f = stage1.extract_features(x).double()
        mu = f.mean(0)
        g = f - mu
        g = g / g.norm(dim=1, keepdim=True)
        cents = torch.stack([g[y == c].mean(0) for c in range(dm.num_classes)])
        torch.testing.assert_close(model.head.centroids.double(), cents, atol=1e-5, rtol=1e-5)
        xt, yt = dm.test_dataset.inputs, dm.test_dataset.targets
        ft = stage1.extract_features(xt).double() - mu
        ft = ft / ft.norm(dim=1, keepdim=True)
        pred = torch.cdist(ft, cents).argmin(1)
    assert res["test/acc"] == pytest.approx((pred == yt).double().mean().item(), abs=1e-6)


def test_stage2_errors(tmp_path, stage1_ckpt):
    with pytest.raises(FileNotFoundError, match="stage-1 checkpoint not found"):
        _stage2(str(tmp_path / "missing.ckpt"), "crt")
    dm = synthetic_dm(num_classes=5)
    kw = model_kwargs(dm, stage1_checkpoint=stage1_ckpt, mode="crt")
    kw.pop("backbone"), kw.pop("backbone_kwargs")
    with pytest.raises(ValueError, match="has 6 classes but the data has num_classes=5"):
        DecoupledModule(**kw)
    with pytest.raises(ValueError, match="unknown decoupled mode 'cb'"):
        _stage2(stage1_ckpt, "cb")
    dm, model = _stage2(stage1_ckpt, "ncm")
    with pytest.raises(ValueError, match="nothing to train"):
        cpu_trainer(tmp_path).fit(model, datamodule=dm)
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a checkpoint of an lt_lightning module"):
        _stage2(str(bad), "crt")


def test_stage2_rejects_a_new_representation(stage1_ckpt):
    with pytest.raises(ValueError, match=r"do not set \['neck'\]"):
        _stage2(stage1_ckpt, "crt", neck="bn")
    _stage2(stage1_ckpt, "crt", neck="none", fixdim=False)  # defaults are fine (the CLI passes them)


def test_schedules_need_max_epochs_but_constant_does_not(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, lr_schedule="constant"))
    cpu_trainer(tmp_path, max_epochs=-1, max_steps=3).fit(model, datamodule=dm)
    assert model.global_step == 3
    cosine = JointModule(**model_kwargs(dm, lr_schedule="cosine"))
    with pytest.raises(ValueError, match="set trainer max_epochs"):
        cpu_trainer(tmp_path, max_epochs=-1, max_steps=3).fit(cosine, datamodule=dm)


def test_per_epoch_lr_interval_holds_the_rate_within_an_epoch(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, lr=0.1, lr_schedule="cosine", lr_interval="epoch"))
    seen = []

    class Record(__import__("lightning").Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))

    cpu_trainer(tmp_path, max_epochs=4, callbacks=[Record()]).fit(model, datamodule=dm)
    by_epoch = {}
    for epoch, lr in seen:
        by_epoch.setdefault(epoch, set()).add(lr)
    assert all(len(v) == 1 for v in by_epoch.values())
    import math

    for epoch, (lr,) in ((e, tuple(v)) for e, v in by_epoch.items()):
        assert lr == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * epoch / 4)))


def test_mixup_resumes_exactly_at_an_epoch_boundary(tmp_path):
    def fresh():
        torch.manual_seed(0)
        dm = synthetic_dm()
        return dm, FixedETFModule(**model_kwargs(dm, mixup_alpha=1.0))

    dm, straight = fresh()
    cpu_trainer(tmp_path / "a", max_epochs=2).fit(straight, datamodule=dm)
    dm, first = fresh()
    t = cpu_trainer(tmp_path / "b", max_epochs=1)
    t.fit(first, datamodule=dm)
    t.save_checkpoint(tmp_path / "one.ckpt")
    dm, resumed = fresh()
    cpu_trainer(tmp_path / "c", max_epochs=2).fit(
        resumed, datamodule=dm, ckpt_path=str(tmp_path / "one.ckpt")
    )
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, atol=1e-6, rtol=1e-6)


def test_tde_momentum_follows_the_learning_rate(tmp_path):
    dm = synthetic_dm()
    model = TDEModule(**model_kwargs(dm, embed_momentum="lr", lr=0.01, momentum=0.5))
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert model.head.momentum == pytest.approx(1 - 0.1 * min(50 * 0.01, 1.0))
    assert trainer.optimizers[0].param_groups[0]["momentum"] == 0.5  # SGD's momentum is its own
    with pytest.raises(ValueError, match="embed_momentum must be a number in \\[0, 1\\] or 'lr'"):
        TDEModule(**model_kwargs(dm, embed_momentum="epoch"))
