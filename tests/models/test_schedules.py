import math

import pytest

from lt_lightning.models.schedules import lr_factor


def test_warmup_then_multistep_like_yang():
    f = lambda e: lr_factor(  # noqa: E731
        e,
        schedule="multistep",
        max_epochs=200,
        warmup_epochs=5,
        warmup_start_factor=0.0,
        milestones=[160, 180],
        milestone_factors=[0.1, 0.01],
    )
    assert f(0) == 0.0 and f(2.5) == pytest.approx(0.5) and f(5) == 1.0
    assert f(159.9) == 1.0 and f(160) == 0.1 and f(179) == 0.1 and f(180) == 0.01 and f(199) == 0.01


def test_cosine_after_warmup():
    f = lambda e: lr_factor(e, schedule="cosine", max_epochs=10, warmup_epochs=2, warmup_start_factor=1 / 3)  # noqa: E731
    assert f(0) == pytest.approx(1 / 3) and f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(10) == pytest.approx(0.0) and f(12) == pytest.approx(0.0)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        lr_factor(1.0, schedule="linear", max_epochs=3)


def _tang_lrs(make_scheduler, base_lr: float, epochs: int) -> list[float]:
    """The lr of each epoch in Tang's (and Kang's) loop under PyTorch >= 1.1: ``scheduler.step()`` first."""
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(1, epochs + 1):
        sched.step()  # at the start of the epoch, as run_networks.py does
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _our_lrs(tmp_path, epochs: int, **kwargs) -> list[float]:
    import lightning as L

    from lt_lightning.models import JointModule
    from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, lr_interval="epoch", **kwargs))
    seen: dict[int, set[float]] = {}

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault(trainer.current_epoch, set()).add(trainer.optimizers[0].param_groups[0]["lr"])

    cpu_trainer(tmp_path, max_epochs=epochs, callbacks=[Record()]).fit(model, datamodule=dm)
    assert all(len(v) == 1 for v in seen.values())
    return [next(iter(seen[e])) for e in range(epochs)]


@pytest.mark.parametrize("schedule", ["cosine", "multistep"])
def test_lr_epoch_offset_reproduces_tangs_scheduler_step_at_epoch_start(tmp_path, schedule):
    import torch

    epochs, lr = 5, 0.2
    if schedule == "cosine":
        ref = _tang_lrs(
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, epochs, eta_min=0.0), lr, epochs
        )
        kw = {"lr_schedule": "cosine"}
    else:
        ref = _tang_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 4], gamma=0.1), lr, epochs)
        kw = {"lr_schedule": "multistep", "milestones": [2, 4], "milestone_factors": [0.1, 0.01]}
    ours = _our_lrs(tmp_path, epochs, lr=lr, lr_epoch_offset=1, **kw)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert ref[-1] == pytest.approx(0.0 if schedule == "cosine" else lr * 0.01)
    # without the offset the schedule is the one written down: epoch 0 at the full lr
    plain = _our_lrs(tmp_path, epochs, lr=lr, **kw)
    assert plain[0] == pytest.approx(lr) and plain != pytest.approx(ref)


@pytest.mark.parametrize("bad", [-1, 0.5, True])
def test_lr_epoch_offset_bad_values(bad):
    from lt_lightning.models import JointModule

    with pytest.raises(ValueError, match="lr_epoch_offset"):
        JointModule(num_classes=3, backbone="mlp", backbone_kwargs={"in_features": 4}, lr_epoch_offset=bad)
