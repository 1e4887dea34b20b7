"""The contract every method of ``lt_lightning.models.__all__`` keeps, parametrised over the package's own
list: it trains (or, with nothing to train, says so), its checkpoint reloads through both load paths
with identical outputs, ``predict_step`` gives the logits ``forward`` gives, it evaluates under
``bf16-true`` (bug 3 of issue 15: τ-norm/NCM fitting crashed there), it trains under ``bf16-mixed``,
and a run checkpointed mid-epoch and resumed equals the uninterrupted run bit for bit (CPU).

The reference is the module's own eval-mode ``forward`` (and, for resume, the uninterrupted run); the
method-specific maths is checked against references in the method's own test module.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

import lt_lightning.models as models
from lt_lightning.data.augment import Mixup
from lt_lightning.models import LongTailModule, Stage2Module, load_module_from_checkpoint
from lt_lightning.optim import LRSchedule
from tests.models.helpers import cpu_trainer, model_kwargs, stage2_kwargs, synthetic_dm

#: every LongTailModule class the package exports, by name
MODEL_CLASSES = {
    name: obj
    for name in models.__all__
    if isinstance(obj := getattr(models, name), type) and issubclass(obj, LongTailModule)
}
#: bases a method subclasses: they assign no head, so there is nothing of their own to run
ABSTRACT = {"LongTailModule", "Stage2Module"}
COSINE = LRSchedule("cosine")

Build = Callable[..., LongTailModule]
#: name -> (datamodule options, builder(dm, stage1 checkpoint), the class the builder returns)
CASES: dict[str, tuple[dict, Build, str]] = {
    "JointModule": (
        {},
        lambda dm, s1: models.JointModule(
            **model_kwargs(dm, loss="ldam", reweight="drw", drw_epoch=1, lr_schedule=COSINE)
        ),
        "JointModule",
    ),
    "FixedETFModule": (
        {},
        lambda dm, s1: models.FixedETFModule(**model_kwargs(dm, mixup=Mixup(1.0), lr_schedule=COSINE)),
        "FixedETFModule",
    ),
    "ImplicitETFModule": (
        {},
        lambda dm, s1: models.ImplicitETFModule(**model_kwargs(dm, lr_schedule=COSINE)),
        "ImplicitETFModule",
    ),
    "TDEModule": (
        {},
        lambda dm, s1: models.TDEModule(**model_kwargs(dm, alpha_grid=[0.0, 1.0], lr_schedule=COSINE)),
        "TDEModule",
    ),
    "CRTModule": (
        {"sampler": "class"},
        lambda dm, s1: models.CRTModule(**stage2_kwargs(dm, s1, lr_schedule=COSINE)),
        "CRTModule",
    ),
    "LWSModule": (
        {"sampler": "class"},
        lambda dm, s1: models.LWSModule(**stage2_kwargs(dm, s1, bn_mode="frozen", lr_schedule=COSINE)),
        "LWSModule",
    ),
    "TauNormModule": (
        {},
        lambda dm, s1: models.TauNormModule(**stage2_kwargs(dm, s1, tau_grid=[0.0, 0.5, 1.0])),
        "TauNormModule",
    ),
    "NCMModule": ({}, lambda dm, s1: models.NCMModule(**stage2_kwargs(dm, s1)), "NCMModule"),
    "WeightBalancingModule": (
        {},
        lambda dm, s1: models.WeightBalancingModule(**stage2_kwargs(dm, s1, lr_schedule=COSINE)),
        "WeightBalancingModule",
    ),
    "DecoupledModule": (
        {"sampler": "stratified"},
        lambda dm, s1: models.DecoupledModule(mode="lws", **stage2_kwargs(dm, s1, lr_schedule=COSINE)),
        "LWSModule",
    ),
}
METHODS = sorted(CASES)
TRAINING = [n for n in METHODS if MODEL_CLASSES[CASES[n][2]].trains]


def _build(name: str, stage1: str, seed: int = 0) -> tuple[object, LongTailModule]:
    dm_kwargs, build, _ = CASES[name]
    # a validation split apart from the test split: tau-norm chooses tau on it
    dm = synthetic_dm(val_per_class=8, **dm_kwargs)
    torch.manual_seed(seed)
    return dm, build(dm, stage1)


def _ready(model: LongTailModule, dm, tmp_path) -> None:
    """Train one epoch, or fit a post-hoc classifier by testing."""
    if type(model).trains:
        cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    else:
        cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)


def _test_inputs(dm) -> torch.Tensor:
    dm.setup("test")
    return dm.test_dataset.inputs


def test_every_exported_method_has_a_case():
    # a class added to __all__ without a case here would be left out of every contract test
    assert set(CASES) | ABSTRACT == set(MODEL_CLASSES)
    assert {name for name, cls in MODEL_CLASSES.items() if not cls.trains} <= set(CASES)


def test_the_abstract_bases_have_no_head(stage1_ckpt):
    dm = synthetic_dm()
    bases = [
        LongTailModule(**model_kwargs(dm)),
        Stage2Module(**stage2_kwargs(dm, stage1_ckpt)),
    ]
    for base in bases:
        assert not hasattr(base, "head")  # a method would have one: none is skipped by ABSTRACT


@pytest.mark.parametrize("name", METHODS)
def test_the_builder_returns_the_class(name, stage1_ckpt):
    _, model = _build(name, stage1_ckpt)
    assert type(model).__name__ == CASES[name][2]
    assert isinstance(model, LongTailModule) and hasattr(model, "head")


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_class_facts_name_real_options(name):
    cls = MODEL_CLASSES[name]
    options: set[str] = set()
    for klass in cls.__mro__:
        for method in ("__init__", "__new__"):
            fn = klass.__dict__.get(method)
            if fn is not None and klass is not object:
                options |= set(inspect.signature(fn).parameters)
    # the CLI honours or refuses these by name: a misspelt one would silently do nothing
    assert set(cls.evaluation_options) <= options, cls.evaluation_options
    assert set(cls.fitted_options) <= options, cls.fitted_options
    assert not set(cls.evaluation_options) & set(cls.fitted_options)
    assert cls.is_stage2 == issubclass(cls, Stage2Module)


@pytest.mark.parametrize("name", METHODS)
def test_trains_a_few_steps_or_says_it_has_nothing_to_train(name, stage1_ckpt, tmp_path):
    dm, model = _build(name, stage1_ckpt)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer = cpu_trainer(tmp_path, max_epochs=1, max_steps=3, limit_val_batches=0)
    if not type(model).trains:
        assert not trainable
        with pytest.raises(ValueError, match="nothing to train"):
            trainer.fit(model, datamodule=dm)
        return
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3
    params = dict(model.named_parameters())
    assert trainable and all(not torch.equal(params[n], p) for n, p in trainable.items())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert all(torch.equal(params[n], p) for n, p in frozen.items())  # stage 2: the representation
    assert model.finite_flags is not None and model.finite_flags.dtype == torch.bool
    assert model.finite_flags.tolist() == [True, True]


@pytest.mark.parametrize("name", METHODS)
def test_checkpoint_round_trip_through_both_load_paths(name, stage1_ckpt, tmp_path):
    dm, model = _build(name, stage1_ckpt)
    _ready(model, dm, tmp_path)
    trainer = cpu_trainer(tmp_path)
    trainer.validate(model, datamodule=dm, verbose=False)  # attach, then save what the model holds
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    exported = MODEL_CLASSES[name]
    loaded = {
        "load_module_from_checkpoint": load_module_from_checkpoint(path),
        f"{name}.load_from_checkpoint": exported.load_from_checkpoint(path),
        f"{type(model).__name__}.load_from_checkpoint": type(model).load_from_checkpoint(path),
    }
    x = _test_inputs(dm)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    state = model.state_dict()
    for how, other in loaded.items():
        assert type(other) is type(model), how
        assert other.state_dict().keys() == state.keys(), how
        assert all(torch.equal(other.state_dict()[k], v) for k, v in state.items()), how
        other.eval()
        with torch.no_grad():
            assert torch.equal(other(x), expected), how


@pytest.mark.parametrize("name", METHODS)
def test_predict_step_gives_the_forward_logits_and_the_test_predictions(name, stage1_ckpt, tmp_path):
    dm, model = _build(name, stage1_ckpt)
    if type(model).trains:
        cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    # post-hoc methods: predict fits the classifier itself first (nothing else ran)
    out = cpu_trainer(tmp_path).predict(model, datamodule=dm)
    logits = torch.cat([o["logits"] for o in out])
    preds, targets = torch.cat([o["preds"] for o in out]), torch.cat([o["targets"] for o in out])
    if isinstance(model, Stage2Module):
        assert bool(model.post_hoc_ready)
    x = _test_inputs(dm)
    model.eval()
    with torch.no_grad():
        assert torch.equal(logits, model(x))
    assert torch.equal(preds, logits.argmax(1)) and torch.equal(targets, dm.test_dataset.targets)
    res = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    assert res["test/acc"] == pytest.approx((preds == targets).double().mean().item(), abs=1e-6)


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
@pytest.mark.parametrize("name", METHODS)
def test_evaluates_under_bfloat16(name, stage1_ckpt, tmp_path, precision):
    dm, model = _build(name, stage1_ckpt)
    if type(model).trains:
        cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    # the same model (post-hoc: unfitted, so the fitting itself runs under the precision)
    half = copy.deepcopy(model) if type(model).trains else _build(name, stage1_ckpt)[1]
    ref = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    res = cpu_trainer(tmp_path, precision=precision).test(half, datamodule=dm, verbose=False)[0]
    # bf16-true runs the model in bfloat16; bf16-mixed autocasts it and keeps float32 weights
    expected_dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    assert next(half.parameters()).dtype == expected_dtype
    if isinstance(half, Stage2Module):
        assert bool(half.post_hoc_ready)
    assert math.isfinite(res["test/acc"])
    # bfloat16 rounding moves a few predictions, not the accuracy
    assert res["test/acc"] == pytest.approx(ref["test/acc"], abs=0.05)


def _training_loss(model: LongTailModule, dm) -> float:
    """The training objective over the whole (small) training set as one batch, in eval mode."""
    dm.setup("fit")
    model.eval()
    with torch.no_grad():
        x, y = dm.train_eval_dataset.inputs, dm.train_eval_dataset.targets
        features = model.extract_features(x)
        loss = model.compute_loss(model.forward_head(features), features, y, y).item()
    model.train()
    return loss


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINING)
def test_learns_the_synthetic_problem(name, stage1_ckpt, tmp_path):
    dm, model = _build(name, stage1_ckpt)
    before = _training_loss(model, dm)
    trainer = cpu_trainer(tmp_path, max_epochs=8)
    trainer.fit(model, datamodule=dm)
    # LWS and weight balancing start at the trained stage-1 classifier (and the latter trades its plain
    # CE for the class-balanced loss under MaxNorm)
    if not isinstance(model, (models.LWSModule, models.WeightBalancingModule)):
        assert _training_loss(model, dm) < 0.7 * before
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert res["test/acc"] > 1.0 / dm.num_classes + 0.4, res
    for key in ("test/balanced_acc", "test/many_acc", "test/medium_acc", "test/few_acc"):
        assert math.isfinite(res[key]), key


@pytest.mark.parametrize("name", TRAINING)
def test_trains_under_bf16_mixed(name, stage1_ckpt, tmp_path):
    dm, model = _build(name, stage1_ckpt)
    trainer = cpu_trainer(tmp_path, max_epochs=2, precision="bf16-mixed")
    trainer.fit(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    floats = [v for v in model.state_dict().values() if v.is_floating_point()]
    assert all(torch.isfinite(v).all() for v in floats)
    assert all(v.dtype == torch.float32 for v in floats)  # autocast works on copies
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert res["test/acc"] > 1.5 / dm.num_classes  # it learned something


class _Killed(Exception):
    """Stands for a kill -9: the run ends without any of Lightning's end-of-run work."""


class _KillAt(Callback):
    """Stop the run when training step ``step`` is about to start (after step ``step``'s checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise _Killed


@pytest.mark.parametrize("name", TRAINING)
def test_mid_epoch_resume_equals_the_uninterrupted_run(name, stage1_ckpt, tmp_path):
    k = 3  # steps of epoch 0 before the interruption
    # interrupted by an exception, not max_steps: the schedule's length follows max_steps
    # (estimated_stepping_batches), so a max_steps run is not a prefix of the full one

    def trainer(root, **kwargs):
        return cpu_trainer(root, max_epochs=2, limit_val_batches=0, **kwargs)

    dm, straight = _build(name, stage1_ckpt)
    trainer(tmp_path / "a").fit(straight, datamodule=dm)
    dm, first = _build(name, stage1_ckpt)
    save = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=k, save_top_k=-1)
    killed = trainer(tmp_path / "b", enable_checkpointing=True, callbacks=[save, _KillAt(k)])
    with pytest.raises(_Killed):
        killed.fit(first, datamodule=dm)
    dm, resumed = _build(name, stage1_ckpt, seed=1)  # other initial weights: the checkpoint's must win
    t = trainer(tmp_path / "c")
    t.fit(resumed, datamodule=dm, ckpt_path=str(tmp_path / f"ckpt/epoch=0-step={k}.ckpt"))
    assert t.global_step == straight.trainer.global_step > 2 * k
    expected, got, partial = straight.state_dict(), resumed.state_dict(), first.state_dict()
    assert not all(torch.equal(partial[key], v) for key, v in expected.items())  # the test can fail
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", TRAINING)
def test_trains_under_16_mixed_on_cuda(name, stage1_ckpt, tmp_path):
    dm, model = _build(name, stage1_ckpt)
    trainer = cpu_trainer(tmp_path, max_epochs=2, precision="16-mixed", accelerator="cuda")
    trainer.fit(model, datamodule=dm)
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())
