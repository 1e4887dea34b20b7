"""lt_lightning.optim: AGD against a slow per-parameter float64 reference written from the formulas
(Bernstein et al. 2023; Markou et al.'s nc/optimisers/agd.py), its initialisation and refusals; the
learning-rate schedule against the formulas (and Tang's ``scheduler.step()``-first loop); the optimizer
as an injected callable and the record a checkpoint keeps of it. AGD's initialisation inside a fit
(the ``AGDInit`` callback) is in tests/models/test_hooks.py."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from lt_lightning.optim import (
    AGD,
    LRSchedule,
    agd_orthogonal_init_,
    agd_scale,
    default_optimizer,
    describe_optimizer,
    lr_factor,
    optimizer_class,
    optimizer_from_config,
)


def _slices(t: torch.Tensor) -> list[torch.Tensor]:
    """Every ``[out, in]`` kernel position of a 2-d or 4-d weight (views)."""
    if t.dim() == 2:
        return [t]
    return [t[:, :, i, j] for i in range(t.shape[2]) for j in range(t.shape[3])]


def reference_agd_step(
    weights: list[torch.Tensor], grads: list[torch.Tensor], gain: float
) -> list[torch.Tensor]:
    """One AGD step, one kernel position at a time, with Python-float G and step size."""
    depth = len(weights)
    scales = []
    for w in weights:
        s = math.sqrt(w.shape[0] / w.shape[1])
        if w.dim() == 4:
            s /= math.sqrt(w.shape[2] * w.shape[3])
        scales.append(s)
    g_total = 0.0
    for s, g in zip(scales, grads):
        for gs in _slices(g):
            g_total += s * math.sqrt(float((gs**2).sum()))
    g_total /= depth
    eta = math.log((1 + math.sqrt(1 + 4 * g_total)) / 2)
    out = []
    for s, w, g in zip(scales, weights, grads):
        new = w.clone()
        for ns, gs in zip(_slices(new), _slices(g)):
            norm = math.sqrt(float((gs**2).sum()))
            if norm > 0:
                ns -= gain * eta / depth * s * gs / norm
        out.append(new)
    return out


class _BiasFreeNet(nn.Module):
    """conv (3x3 and 1x1) + linear layers without biases: what AGD trains."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 6, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(6, 4, 1, bias=False)
        self.fc1 = nn.Linear(4 * 5 * 5, 12, bias=False)
        self.fc2 = nn.Linear(12, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)
        return self.fc2(torch.relu(self.fc1(h)))


def _loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(net(x), y)


@pytest.mark.parametrize("steps", [1, 4])
def test_agd_steps_match_the_reference(steps):
    torch.manual_seed(0)
    net = _BiasFreeNet().double()
    x, y = torch.randn(16, 2, 5, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    weights = [p.detach().clone() for p in net.parameters()]
    opt = AGD(net.named_parameters(), gain=10.0)
    ref_net = _BiasFreeNet().double()
    for _ in range(steps):
        opt.zero_grad()
        _loss(net, x, y).backward()
        opt.step()
        # the reference from its own copy of the weights and its own gradients
        with torch.no_grad():
            for p, w in zip(ref_net.parameters(), weights):
                p.copy_(w)
        ref_net.zero_grad()
        _loss(ref_net, x, y).backward()
        weights = reference_agd_step(weights, [p.grad for p in ref_net.parameters()], gain=10.0)
    for p, w in zip(net.parameters(), weights):
        torch.testing.assert_close(p.detach(), w, rtol=1e-10, atol=1e-12)
    assert opt.depth == 4
    assert opt.last_log_step.dtype == torch.float64 and opt.last_log_step.ndim == 0


def test_zero_gradient_slice_does_not_move_and_closure_loss_is_returned():
    w = nn.Parameter(torch.randn(3, 2, 1, 2, dtype=torch.float64))
    opt = AGD([w], gain=1.0)
    before = w.detach().clone()

    def closure():
        opt.zero_grad()
        loss = (w[:, :, 0, 0] ** 2).sum()  # kernel position (0, 1) gets a zero gradient
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and torch.isfinite(loss)
    torch.testing.assert_close(w.detach()[:, :, 0, 1], before[:, :, 0, 1], rtol=0, atol=0)
    assert not torch.equal(w.detach()[:, :, 0, 0], before[:, :, 0, 0])
    assert torch.isfinite(w).all()


def test_gradscaler_step_equals_the_unscaled_step():
    # precision 16-mixed: Lightning calls scaler.step(optimizer) after scaling the loss; AGD sees the
    # unscaled gradients (and its normalised update would not care about the scale anyway)
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    b = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    opt_a, opt_b = AGD(a.parameters(), gain=10.0), AGD(b.parameters(), gain=10.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    nn.functional.cross_entropy(a(x), y).backward()
    opt_a.step()
    scaler.scale(nn.functional.cross_entropy(b(x), y)).backward()
    scaler.step(opt_b)
    scaler.update()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (8, 4, 3, 3), (4, 8, 1, 1), (6, 6, 7, 7)])
def test_orthogonal_init_singular_values(shape):
    torch.manual_seed(0)
    w = torch.empty(shape, dtype=torch.float64)
    agd_orthogonal_init_([w])
    scale = math.sqrt(shape[0] / shape[1]) / (math.sqrt(shape[2] * shape[3]) if len(shape) == 4 else 1.0)
    assert agd_scale(w.shape) == pytest.approx(scale)
    for ws in _slices(w):
        sv = torch.linalg.svdvals(ws)
        assert sv.shape == (min(shape[:2]),)
        torch.testing.assert_close(sv, torch.full_like(sv, scale), rtol=1e-10, atol=1e-12)
    w2 = torch.empty(shape, dtype=torch.float64)
    agd_orthogonal_init_([w2])
    assert not torch.allclose(w, w2)  # random, not a fixed matrix


def test_one_dimensional_parameters_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'0\.bias'.*bias or a BatchNorm"):
        AGD(nn.Sequential(nn.Linear(3, 2)).named_parameters())
    with pytest.raises(ValueError, match=r"'#1'"):
        AGD([torch.zeros(2, 2, requires_grad=True), torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="gain"):
        AGD([torch.zeros(2, 2, requires_grad=True)], gain=0.0)


def test_agd_fits_a_synthetic_problem():
    torch.manual_seed(0)
    k, d, n = 4, 10, 400
    centers = 3 * torch.randn(k, d)
    y = torch.arange(n) % k
    x = centers[y] + torch.randn(n, d)
    net = nn.Sequential(
        nn.Linear(d, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, 32, bias=False),
        nn.ReLU(),
        nn.Linear(32, k, bias=False),
    )
    agd_orthogonal_init_(net.parameters())
    opt = AGD(net.named_parameters(), gain=1.0)
    with torch.no_grad():
        first = nn.functional.cross_entropy(net(x), y)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        last = nn.functional.cross_entropy(net(x), y)
        acc = (net(x).argmax(1) == y).float().mean()
    assert last < 0.3 * first, (first, last)
    assert acc > 0.9


def test_agd_skips_its_update_on_the_device_when_found_inf_is_set():
    # the finite guard's (and GradScaler's) protocol: found_inf != 0 makes the step a no-op, NaN-safe
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3, bias=False))
    opt = AGD(net.parameters())
    before = net[0].weight.detach().clone()
    net[0].weight.grad = torch.full_like(before, torch.nan)
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    assert torch.equal(net[0].weight, before)
    net[0].weight.grad = torch.ones_like(before)
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    assert not torch.equal(net[0].weight, before) and torch.isfinite(net[0].weight).all()


# ---- the schedule ------------------------------------------------------------------------------------
def reference_factor(epoch, *, schedule, max_epochs, warmup=0.0, start=0.0, milestones=(), factors=()):
    """The schedule as written in the papers, one case at a time."""
    if epoch < warmup:
        return start + (1 - start) * epoch / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        t = min(max((epoch - warmup) / (max_epochs - warmup), 0.0), 1.0)
        return (1 + math.cos(math.pi * t)) / 2
    passed = [f for m, f in zip(milestones, factors) if epoch >= m]
    return passed[-1] if passed else 1.0


@pytest.mark.parametrize("epoch", [0, 0.5, 2.5, 4.99, 5, 6, 159.9, 160, 179, 180, 199])
def test_warmup_then_multistep_like_yang(epoch):
    kw = {"max_epochs": 200, "warmup_epochs": 5, "warmup_start_factor": 0.0}
    got = lr_factor(epoch, schedule="multistep", milestones=[160, 180], milestone_factors=[0.1, 0.01], **kw)
    ref = reference_factor(
        epoch, schedule="multistep", max_epochs=200, warmup=5, milestones=(160, 180), factors=(0.1, 0.01)
    )
    assert got == pytest.approx(ref, abs=1e-15)


def test_cosine_after_warmup():
    f = functools.partial(
        lr_factor, schedule="cosine", max_epochs=10, warmup_epochs=2, warmup_start_factor=1 / 3
    )
    assert f(0) == pytest.approx(1 / 3) and f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(10) == pytest.approx(0.0) and f(12) == pytest.approx(0.0)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        lr_factor(1.0, schedule="linear", max_epochs=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "step"}, "unknown lr_schedule 'step'"),
        ({"interval": "batch"}, "interval must be 'step' or 'epoch'"),
        ({"epoch_offset": -1}, "epoch_offset must be an int >= 0"),
        ({"epoch_offset": 0.5}, "epoch_offset must be an int >= 0"),
        ({"epoch_offset": True}, "epoch_offset must be an int >= 0"),
        ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
        ({"warmup_start_factor": 1.5}, "warmup_start_factor in \\[0, 1\\]"),
        ({"milestones": [1, 2], "milestone_factors": [0.1]}, "differ in length"),
        ({"milestones": [5, 2], "milestone_factors": [0.1, 0.01]}, "milestones must be increasing"),
    ],
)
def test_lr_schedule_refuses_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LRSchedule(**kwargs)


def test_lr_schedule_records_round_trip():
    schedule = LRSchedule("multistep", "epoch", 1, 2.0, 0.1, [3, 6], [0.1, 0.01])
    record = schedule.to_config()
    assert record["milestones"] == [3, 6] and isinstance(record["milestone_factors"], list)
    assert LRSchedule.from_config(record) == schedule and LRSchedule.from_config(schedule) is schedule
    assert LRSchedule.from_config(None) == LRSchedule("cosine", "step")
    with pytest.raises(ValueError, match=r"lr_schedule has no fields \['gamma'\]"):
        LRSchedule.from_config({"gamma": 0.1})
    with pytest.raises(ValueError, match="lr_schedule must be an LRSchedule or a dict"):
        LRSchedule.from_config("cosine")


def test_is_constant_and_the_factor_with_an_offset():
    assert LRSchedule("constant").is_constant
    assert not LRSchedule("constant", warmup_epochs=2).is_constant
    assert LRSchedule("constant", warmup_epochs=1, epoch_offset=1).is_constant  # the warm-up is skipped
    assert not LRSchedule("cosine").is_constant
    s = LRSchedule("cosine", epoch_offset=1)
    assert s.factor(0, 4) == pytest.approx(lr_factor(1, schedule="cosine", max_epochs=4))


def _optimizer(lr=0.2):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def test_build_steps_per_epoch_is_asked_once_at_the_first_step_not_at_construction():
    asked = []
    opt = _optimizer()
    config = LRSchedule("cosine").build(opt, max_epochs=4, steps_per_epoch=lambda: asked.append(1) or 10)
    scheduler = config["scheduler"]
    assert config["interval"] == "step" and asked == []  # not at construction (Lightning #20550)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert asked == [1]  # once, then cached
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(
            0.2 * reference_factor(step / 10, schedule="cosine", max_epochs=4), abs=1e-12
        )


def test_build_per_epoch_and_constant():
    opt = _optimizer()
    config = LRSchedule("cosine", interval="epoch").build(opt, max_epochs=4, steps_per_epoch=lambda: 1 / 0)
    assert config["interval"] == "epoch"
    for epoch in range(4):  # stepped once per epoch: the factor of the epoch, steps_per_epoch never asked
        assert opt.param_groups[0]["lr"] == pytest.approx(
            0.2 * reference_factor(epoch, schedule="cosine", max_epochs=4)
        )
        opt.step()
        config["scheduler"].step()
    assert LRSchedule("constant").build(_optimizer(), max_epochs=None, steps_per_epoch=lambda: 1) is None
    with pytest.raises(ValueError, match="set trainer max_epochs"):
        LRSchedule("cosine").build(_optimizer(), max_epochs=-1, steps_per_epoch=lambda: 1)


def _tang_lrs(make_scheduler, base_lr: float, epochs: int) -> list[float]:
    """The lr of each epoch in Tang's (and Kang's) loop under PyTorch >= 1.1: ``scheduler.step()`` first."""
    opt = _optimizer(base_lr)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(1, epochs + 1):
        sched.step()  # at the start of the epoch, as run_networks.py does
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _our_lrs(tmp_path, epochs: int, lr: float, schedule: LRSchedule) -> list[float]:
    import lightning as L

    from lt_lightning.models import JointModule
    from tests.models.helpers import cpu_trainer, model_kwargs, sgd, synthetic_dm

    dm = synthetic_dm()
    model = JointModule(**model_kwargs(dm, optimizer=sgd(lr=lr), lr_schedule=schedule))
    seen: dict[int, set[float]] = {}

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.setdefault(trainer.current_epoch, set()).add(trainer.optimizers[0].param_groups[0]["lr"])

    cpu_trainer(tmp_path, max_epochs=epochs, callbacks=[Record()]).fit(model, datamodule=dm)
    assert all(len(v) == 1 for v in seen.values())
    return [next(iter(seen[e])) for e in range(epochs)]


@pytest.mark.parametrize("schedule", ["cosine", "multistep"])
def test_epoch_offset_reproduces_tangs_scheduler_step_at_epoch_start(tmp_path, schedule):
    epochs, lr = 5, 0.2
    if schedule == "cosine":
        ref = _tang_lrs(
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, epochs, eta_min=0.0), lr, epochs
        )
        fields = {"name": "cosine"}
    else:
        ref = _tang_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 4], gamma=0.1), lr, epochs)
        fields = {"name": "multistep", "milestones": (2, 4), "milestone_factors": (0.1, 0.01)}
    ours = _our_lrs(tmp_path, epochs, lr, LRSchedule(interval="epoch", epoch_offset=1, **fields))
    assert ours == pytest.approx(ref, abs=1e-12)
    assert ref[-1] == pytest.approx(0.0 if schedule == "cosine" else lr * 0.01)
    # without the offset the schedule is the one written down: epoch 0 at the full lr
    plain = _our_lrs(tmp_path, epochs, lr, LRSchedule(interval="epoch", **fields))
    assert plain[0] == pytest.approx(lr) and plain != pytest.approx(ref)


# ---- the optimizer as a part ---------------------------------------------------------------------------
def test_the_default_optimizer():
    opt = default_optimizer()([nn.Parameter(torch.zeros(2))])
    assert type(opt) is torch.optim.SGD
    assert (opt.defaults["lr"], opt.defaults["momentum"], opt.defaults["weight_decay"]) == (0.1, 0.9, 5e-4)
    assert optimizer_from_config(None).keywords == default_optimizer().keywords


def test_optimizer_class_and_description():
    sgd = functools.partial(torch.optim.SGD, lr=0.1, nesterov=True, momentum=0.9)
    assert optimizer_class(sgd) is torch.optim.SGD and optimizer_class(AGD) is AGD
    assert optimizer_class(lambda p: None) is None and optimizer_class(nn.Linear) is None
    wrapped = functools.partial(lambda cls, params, **kw: cls(params, **kw), torch.optim.AdamW, lr=0.01)
    assert optimizer_class(wrapped) is torch.optim.AdamW  # jsonargparse wraps the class in its arguments
    record = describe_optimizer(sgd)
    assert record == {
        "class_path": "torch.optim.sgd.SGD",
        "init_args": {"lr": 0.1, "nesterov": True, "momentum": 0.9},
    }
    rebuilt = optimizer_from_config(record)
    params = [nn.Parameter(torch.zeros(2))]
    assert rebuilt(params).defaults == sgd(params).defaults
    assert describe_optimizer(torch.optim.Adam) == {"class_path": "torch.optim.adam.Adam", "init_args": {}}
    assert describe_optimizer(lambda p: None) is None
    assert describe_optimizer(functools.partial(torch.optim.SGD, lr=torch.tensor(0.1))) is None


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"class_path": "torch.optim.SGD", "init_args": {"lrate": 0.1}}, r"SGD has no arguments \['lrate'\]"),
        ({"class_path": "torch.nn.Linear"}, "not a torch.optim.optimizer.Optimizer"),
        ({"class_path": "evil_package.Optimizer"}, "which is not imported"),
        ({"init_args": {}}, "optimizer must be an optimizer class or callable"),
        ("sgd", "optimizer must be an optimizer class or callable"),
    ],
)
def test_a_bad_optimizer_record_is_refused(record, match):
    with pytest.raises(ValueError, match=match):
        optimizer_from_config(record)


# ---- fused by default on CUDA ------------------------------------------------------------------------------
class _Param:
    """Stands in for a parameter's device and dtype (no GPU here)."""

    def __init__(self, cuda: bool, floating: bool = True) -> None:
        self.is_cuda, self._floating = cuda, floating

    def is_floating_point(self) -> bool:
        return self._floating


@pytest.mark.parametrize(
    "factory, params, fused",
    [
        (functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), [_Param(True)] * 3, True),
        (functools.partial(torch.optim.AdamW, lr=1e-3), [_Param(True)], True),
        (torch.optim.Adam, [_Param(True)], True),
        (functools.partial(torch.optim.SGD, lr=0.1), [_Param(True), _Param(False)], False),  # one on the CPU
        (
            functools.partial(torch.optim.SGD, lr=0.1, fused=False),
            [_Param(True)],
            False,
        ),  # the config's choice
        (functools.partial(torch.optim.SGD, lr=0.1, foreach=True), [_Param(True)], False),
        (functools.partial(torch.optim.RMSprop, lr=0.1), [_Param(True)], False),  # no fused CUDA step
        (lambda params: torch.optim.SGD(params, lr=0.1), [_Param(True)], False),  # cannot be described
        (functools.partial(torch.optim.SGD, lr=0.1), [], False),
    ],
)
def test_fused_by_default_only_for_torchs_fused_optimizers_on_cuda(factory, params, fused):
    from lt_lightning.optim import fused_by_default

    assert fused_by_default(factory, params) is fused


def test_build_optimizer_passes_fused_only_when_chosen(monkeypatch):
    import lt_lightning.optim as optim

    layer = nn.Linear(3, 2)
    named = list(layer.named_parameters())
    factory = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    assert not optim.build_optimizer(factory, named).defaults.get("fused")  # CPU parameters: as configured
    monkeypatch.setattr(optim, "fused_by_default", lambda factory, params: True)
    opt = optim.build_optimizer(factory, named)  # what a GPU run gets (torch's fused SGD also runs on CPU)
    assert opt.defaults["fused"] is True and opt.defaults["momentum"] == 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_module_on_cuda_trains_with_the_fused_step():
    from lt_lightning.models import JointModule
    from lt_lightning.optim import build_optimizer

    model = JointModule(
        num_classes=3, backbone="mlp", backbone_kwargs={"in_features": 4, "hidden": [8]}
    ).cuda()
    opt = build_optimizer(model.optimizer, model.named_trainable_parameters())  # the default SGD
    assert opt.defaults["fused"] is True
