"""LongTailModule (models/base.py): the run's facts (given, checked against the datamodule, never
patched: bug 2 of issue 15), the training step (mixup seeded per batch, the finite flags), the
optimizer and schedule it is given, and the representation options (channels_last, compile)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.data.augment import Mixup
from lt_lightning.losses import logit_adjusted_cross_entropy
from lt_lightning.metrics import ShotAccuracy
from lt_lightning.models import JointModule, TDEModule
from lt_lightning.models.base import CLASS_PATH_KEY, finite_flags
from lt_lightning.models.parts import TrainMeans, compile_parts
from lt_lightning.optim import LRSchedule
from lt_lightning.spec import shot_groups
from tests.models.helpers import D, cpu_trainer, model_kwargs, sgd, synthetic_dm


# ---- construction ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes must be an int >= 2"),
        ({"num_classes": True}, "num_classes must be an int >= 2"),
        ({"class_counts": [1, 2]}, "class_counts has 2 entries but num_classes=6"),
        ({"shot_groups": [0, 1]}, r"shot_groups must have shape \[6\]"),
        ({"shot_groups": [0, 1, 2, 3, 0, 0]}, "integer ids 0 \\(many\\), 1 \\(medium\\), 2 \\(few\\)"),
        ({"backbone": "vgg"}, "unknown backbone 'vgg'"),
        ({"trainable_backbone": ["nope"]}, r"prefixes \['nope'\] match no backbone parameter"),
        ({"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lrate": 1}}}, "has no arguments"),
        ({"optimizer": {"class_path": "torch.nn.Linear"}}, "optimizer"),
        ({"optimizer": "sgd"}, "optimizer must be an optimizer class or callable"),
        ({"lr_schedule": {"name": "step"}}, "unknown lr_schedule 'step'"),
        ({"lr_schedule": {"milestones": [1, 2], "milestone_factors": [0.1]}}, "differ in length"),
        ({"lr_schedule": {"name": "cosine", "gamma": 0.1}}, r"lr_schedule has no fields \['gamma'\]"),
        ({"mixup": {"alpha": -1.0}}, "Mixup alpha must be a finite number >= 0"),
        ({"mixup": 0.2}, "mixup must be a Mixup"),
    ],
)
def test_bad_configuration_is_refused_at_construction(kwargs, match):
    dm = synthetic_dm()
    with pytest.raises(ValueError, match=match):
        JointModule(**model_kwargs(dm, **kwargs))


def test_the_default_optimizer_is_sgd_lr_0_1_momentum_0_9_weight_decay_5e_4():
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, optimizer=None, lr_schedule=None))
    opt = model.optimizer(model.named_trainable_parameters())
    assert type(opt) is torch.optim.SGD
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 5e-4)
    assert model.lr_schedule == LRSchedule("cosine") == LRSchedule()  # the default schedule


def test_the_optimizer_gets_every_trainable_parameter_by_name(tmp_path):
    seen = []

    def factory(params):
        params = list(params)
        seen.extend(n for n, _ in params)
        return torch.optim.SGD([p for _, p in params], lr=0.01)

    dm = synthetic_dm()
    with pytest.warns(UserWarning, match="cannot be recorded"):
        model = JointModule(**model_kwargs(dm, optimizer=factory))
    model.backbone.layers[1].weight.requires_grad_(False)
    cpu_trainer(tmp_path, max_epochs=1, max_steps=1).fit(model, datamodule=dm)
    assert seen == [n for n, p in model.named_parameters() if p.requires_grad]
    assert "backbone.layers.1.weight" not in seen and "head.weight" in seen


# ---- the run's facts (bug 2 of issue 15) ----------------------------------------------------------------
def _other_facts(dm) -> dict[str, dict]:
    """For each linked fact, module arguments that disagree with ``dm`` in that fact only."""
    counts = list(dm.class_counts)
    counts[0] += 7
    other_k = synthetic_dm(num_classes=4)
    return {
        "class_counts": {"class_counts": counts},
        "shot_groups": {"shot_groups": [2 - g for g in dm.shot_groups]},
        "num_classes": {
            "num_classes": 4,
            "class_counts": other_k.class_counts,
            "shot_groups": other_k.shot_groups,
        },
    }


@pytest.mark.parametrize("fact", ["num_classes", "class_counts", "shot_groups"])
@pytest.mark.parametrize("stage", ["fit", "validate", "test"])
def test_a_fact_that_differs_from_the_datamodule_is_refused_naming_both(tmp_path, fact, stage):
    # Before: the module adopted the datamodule's counts into its hparams (so its checkpoint recorded
    # B) while its long-tail loss kept training on the counts it was built with (A).
    dm = synthetic_dm()
    built = _other_facts(dm)[fact]
    model = JointModule(**model_kwargs(dm, loss="logit_adjusted", **built))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=f"built with {fact}=") as info:
        getattr(cpu_trainer(tmp_path, max_epochs=1), stage)(model, datamodule=dm)
    message = str(info.value)
    assert str(built[fact]) in message and str(getattr(dm, fact)) in message  # both values named
    assert f"pass {fact}=dm.{fact}" in message
    assert model.hparams[fact] == built[fact]  # never patched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing trained


def test_the_loss_trains_on_the_counts_the_hyper_parameters_record(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, loss="logit_adjusted", la_tau=1.0))
    cpu_trainer(tmp_path, max_epochs=1, max_steps=2).fit(model, datamodule=dm)
    recorded = model.hparams.class_counts
    assert recorded == dm.class_counts
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(8, dm.num_classes, generator=g), torch.arange(8) % dm.num_classes
    torch.testing.assert_close(
        model.compute_loss(logits, None, y, y), logit_adjusted_cross_entropy(logits, y, recorded, tau=1.0)
    )


def _reference_shot_accuracy(model, dm, groups):
    metric = ShotAccuracy(dm.num_classes, shot_groups=groups)
    model.eval()
    with torch.no_grad():
        for x, y in dm.test_dataloader():
            metric.update(model(x), y)
    return metric.compute()


@pytest.mark.parametrize("pass_counts", [True, False])
def test_a_module_given_no_shot_groups_evaluates_with_the_datamodules(tmp_path, pass_counts):
    # The README's "From Python" flow: the datamodule's thresholds (40, 25) are not the defaults (100, 20).
    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    groups = shot_groups(dm.class_counts, 40, 25).tolist()
    assert groups == dm.shot_groups != shot_groups(dm.class_counts).tolist()
    kwargs = model_kwargs(dm, shot_groups=None, **({} if pass_counts else {"class_counts": None}))
    model = JointModule(**kwargs)
    trainer = cpu_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    for metric in (m for m in model.modules() if isinstance(m, ShotAccuracy)):
        assert metric.class_group.tolist() == groups
    # the datamodule owns them: used, not written into the hyper-parameters (nor the counts)
    assert model.hparams.shot_groups is None
    assert model.hparams.class_counts == (dm.class_counts if pass_counts else None)
    expected = _reference_shot_accuracy(model, dm, groups)
    for key in ("many_acc", "medium_acc", "few_acc"):
        assert res[f"test/{key}"] == pytest.approx(float(expected[key]), abs=1e-6)


def test_tde_sweep_groups_follow_the_datamodule(tmp_path):
    dm = synthetic_dm(many_threshold=40, few_threshold=25)
    model = TDEModule(**model_kwargs(dm, shot_groups=None, alpha_grid=[0.0, 1.0]))
    cpu_trainer(tmp_path).validate(model, datamodule=dm, verbose=False)
    sweeps = [m for m in model.alpha_sweep.modules() if isinstance(m, ShotAccuracy)]
    assert len(sweeps) == 2 and all(m.class_group.tolist() == dm.shot_groups for m in sweeps)


def test_without_a_datamodule_nothing_is_checked(tmp_path):
    dm = synthetic_dm()
    dm.setup("fit")
    model = JointModule(**model_kwargs(dm, class_counts=[1] * dm.num_classes))
    loader = torch.utils.data.DataLoader(dm.train_dataset, batch_size=32)
    cpu_trainer(tmp_path, max_epochs=1).fit(model, train_dataloaders=loader)
    assert model.global_step == len(loader)


# ---- the training step ----------------------------------------------------------------------------------
def test_finite_flags_are_device_booleans_of_the_loss_and_the_features():
    f, loss = torch.ones(3, 2), torch.tensor(1.0)
    assert finite_flags(loss, f).tolist() == [True, True]
    assert finite_flags(loss * torch.nan, f).tolist() == [False, True]
    assert finite_flags(loss, f.index_fill(0, torch.tensor([1]), torch.inf)).tolist() == [True, False]
    assert finite_flags(loss, f).dtype == torch.bool and finite_flags(loss, f).shape == (2,)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("batch_idx", [0, 5])
def test_a_mixup_step_is_the_mixup_of_seed_epoch_rank_and_batch_index(batch_idx):
    dm = synthetic_dm()
    torch.manual_seed(0)
    model = JointModule(**model_kwargs(dm, mixup=Mixup(1.0), seed=3)).train()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, D, generator=g), torch.arange(16) % dm.num_classes
    loss = model.training_step((x, y), batch_idx)
    # reference: the same mix drawn by hand, from the batch's identity alone (no state)
    xm, ya, yb, lam = Mixup(1.0)(x, y, seed=3, epoch=0, rank=0, batch_idx=batch_idx)
    logits = model(xm)
    expected = lam * F.cross_entropy(logits, ya) + (1 - lam) * F.cross_entropy(logits, yb)
    torch.testing.assert_close(loss, expected)
    assert 0.0 < lam < 1.0
    other = Mixup(1.0)(x, y, seed=3, epoch=0, rank=0, batch_idx=batch_idx + 1)[3]
    assert other != lam  # another batch index is another mix: the identity really is used


def test_no_mixup_state_is_saved(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, mixup=Mixup(1.0)))
    trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=2)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert not [k for k in ckpt if "mixup" in k]  # 0.1 saved "lt_lightning_mixup_state"
    assert ckpt["hyper_parameters"]["mixup"] == {"alpha": 1.0}
    assert ckpt[CLASS_PATH_KEY] == "lt_lightning.models.joint.JointModule"


# ---- schedules in a run ------------------------------------------------------------------------------
def test_schedules_need_max_epochs_but_constant_does_not(tmp_path):
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, lr_schedule=LRSchedule("constant")))
    cpu_trainer(tmp_path, max_epochs=-1, max_steps=3).fit(model, datamodule=dm)
    assert model.global_step == 3
    cosine = JointModule(**model_kwargs(dm, lr_schedule=LRSchedule("cosine")))
    with pytest.raises(ValueError, match="set trainer max_epochs"):
        cpu_trainer(tmp_path, max_epochs=-1, max_steps=3).fit(cosine, datamodule=dm)


class _RecordLR(L.Callback):
    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.current_epoch, trainer.optimizers[0].param_groups[0]["lr"]))


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_the_cosine_schedule_in_a_run(tmp_path, interval):
    dm = synthetic_dm()
    schedule = LRSchedule("cosine", interval=interval)
    model = JointModule(**model_kwargs(dm, optimizer=sgd(lr=0.1), lr_schedule=schedule))
    record = _RecordLR()
    trainer = cpu_trainer(tmp_path, max_epochs=4, callbacks=[record])
    trainer.fit(model, datamodule=dm)
    per_epoch = trainer.num_training_batches
    for step, (epoch, lr) in enumerate(record.seen):
        at = epoch if interval == "epoch" else step / per_epoch  # epoch: held within the epoch
        assert lr == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * at / 4)), abs=1e-12), (step, epoch)


# ---- representation options --------------------------------------------------------------------------
@pytest.mark.slow
def test_channels_last_gives_the_same_values_and_keys():
    torch.manual_seed(0)
    plain = JointModule(num_classes=10, backbone="resnet32")
    torch.manual_seed(0)
    cl = JointModule(num_classes=10, backbone="resnet32", channels_last=True)
    conv = next(m for m in cl.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 32, 32)
    plain.eval(), cl.eval()
    torch.testing.assert_close(cl(x), plain(x), atol=1e-5, rtol=1e-5)
    assert cl.state_dict().keys() == plain.state_dict().keys()


def test_compile_is_off_on_a_cpu_with_a_warning():
    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, compile_backbone=True))
    with pytest.warns(UserWarning, match="compile_backbone=True is off on cpu"):
        model.setup("fit")
    assert model._compiled == {}
    with pytest.raises(ValueError, match="compile_backbone must be false, true or 'step', got 'all'"):
        compile_parts(model, "all", torch.device("cpu"))


@pytest.mark.parametrize("option, parts", [(True, {"backbone"}), ("step", {"representation", "loss"})])
def test_compiled_parts_are_the_ones_a_step_uses(monkeypatch, option, parts):
    # torch.compile replaced by a recorder: which callables are compiled, with which mode, and that the
    # step calls them (a GPU compiles for real; the outputs are the eager ones by torch.compile's contract)
    compiled: dict[str, object] = {}

    def fake_compile(fn, mode=None):
        calls = []

        def run(*args, **kwargs):
            calls.append(1)
            return fn(*args, **kwargs)

        compiled[getattr(fn, "__name__", type(fn).__name__)] = (mode, calls)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    dm = synthetic_dm()
    torch.manual_seed(0)
    plain = JointModule(**model_kwargs(dm))
    torch.manual_seed(0)
    model = JointModule(**model_kwargs(dm, compile_backbone=option))
    model._compiled = compile_parts(model, option, torch.device("cuda"))
    assert set(model._compiled) == parts
    assert model.state_dict().keys() == plain.state_dict().keys()
    x, y = torch.randn(8, D), torch.randint(0, 6, (8,))
    torch.testing.assert_close(model(x), plain(x))
    torch.testing.assert_close(model.training_step((x, y), 0), plain.training_step((x, y), 0))
    assert all(calls for _, calls in compiled.values()), compiled
    modes = {mode for mode, _ in compiled.values()}
    assert modes == ({None} if option is True else {"reduce-overhead"})  # CUDA graphs for "step"


# ---- training logs -----------------------------------------------------------------------------------
def test_train_means_are_sample_weighted_means_of_the_batches():
    torch.manual_seed(0)
    means, losses, hits, sizes = TrainMeans(), [], [], [5, 3, 8, 1]
    for n in sizes:
        loss, logits, y = torch.rand(()), torch.randn(n, 4), torch.randint(0, 4, (n,))
        means.add(loss, logits, y)
        losses.append(float(loss) * n)
        hits.append(int((logits.argmax(1) == y).sum()))
    loss, acc = means.pop(lambda t: t)
    assert float(loss) == pytest.approx(sum(losses) / sum(sizes), rel=1e-6)
    assert float(acc) == pytest.approx(sum(hits) / sum(sizes), rel=1e-6)
    assert means.pop(lambda t: t) == (None, None)  # popped: the next epoch starts empty
    means.add(torch.tensor(2.0), None, torch.zeros(4, dtype=torch.long))  # mixup: no accuracy
    loss, acc = means.pop(lambda t: t)
    assert float(loss) == 2.0 and acc is None


def test_a_step_logs_only_on_the_logger_s_steps_and_the_epoch_means_match(tmp_path, monkeypatch):
    dm = synthetic_dm()
    torch.manual_seed(0)
    model = JointModule(**model_kwargs(dm))
    logged, batches = [], []
    original_log, original_step = JointModule.log, JointModule.training_step

    def log(self, name, value, *args, **kwargs):
        logged.append((self.trainer.global_step, name))
        return original_log(self, name, value, *args, **kwargs)

    def step(self, batch, batch_idx):
        loss = original_step(self, batch, batch_idx)
        batches.append((float(loss.detach()), len(batch[1])))
        return loss

    monkeypatch.setattr(JointModule, "log", log)
    monkeypatch.setattr(JointModule, "training_step", step)
    trainer = cpu_trainer(tmp_path, max_epochs=1, log_every_n_steps=3, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    step_logs = [s for s, name in logged if name == "train/loss_step"]
    assert step_logs == [s for s in range(trainer.global_step) if (s + 1) % 3 == 0]
    assert {name for _, name in logged} == {"train/loss_step", "train/loss_epoch", "train/loss", "train/acc"}
    mean = sum(v * n for v, n in batches) / sum(n for _, n in batches)
    assert float(trainer.callback_metrics["train/loss_epoch"]) == pytest.approx(mean, rel=1e-5)
