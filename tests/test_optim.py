"""AGD (lt_lightning.optim) against a slow per-parameter float64 reference written from the formulas
(Bernstein et al. 2023; Markou et al.'s nc/optimisers/agd.py), its initialisation, its refusals, and
the LongTailModule option ``optimizer: agd``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lt_lightning.models import ImplicitETFModule, JointModule
from lt_lightning.optim import AGD, agd_orthogonal_init_, agd_scale
from tests.models.helpers import D, cpu_trainer, model_kwargs, synthetic_dm


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


# ---- the LongTailModule option ----------------------------------------------------------------------


class _BiasFreeMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(D, 32, bias=False), nn.ReLU(), nn.Linear(32, 32, bias=False), nn.ReLU()
        )
        self.out_features = 32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _agd_module(dm, **kwargs) -> ImplicitETFModule:
    args = model_kwargs(dm, backbone=_BiasFreeMLP(), neck="l2", feature_scale=5.0, optimizer="agd", gain=10.0)
    args.update(kwargs)
    return ImplicitETFModule(**args)


@pytest.mark.slow
def test_module_agd_initialises_at_fit_setup_and_trains(tmp_path):
    torch.manual_seed(0)
    dm = synthetic_dm()
    model = _agd_module(dm)
    model.setup("fit")
    for p in model.trainable_parameters():
        sv = torch.linalg.svdvals(p.detach())
        torch.testing.assert_close(sv, torch.full_like(sv, agd_scale(p.shape)), rtol=1e-5, atol=1e-6)
    before = [p.detach().clone() for p in model.trainable_parameters()]
    model.setup("fit")  # a second setup (a second fit) does not re-initialise
    assert all(torch.equal(a, p) for a, p in zip(before, model.trainable_parameters()))
    trainer = cpu_trainer(tmp_path, max_epochs=4)
    trainer.fit(model, datamodule=dm)
    assert isinstance(trainer.optimizers[0], AGD) and trainer.optimizers[0].depth == 2
    logged = trainer.callback_metrics
    assert "train/agd_log_step_epoch" in logged
    assert logged["train/loss_epoch"] < 1.0  # CE at K=6 starts near log 6 = 1.79
    val = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert val["val/acc"] > 0.6


@pytest.mark.slow
def test_resumed_and_loaded_agd_weights_are_not_reinitialised(tmp_path):
    torch.manual_seed(0)
    dm = synthetic_dm()
    model = _agd_module(
        dm, backbone="mlp", backbone_kwargs={"in_features": D, "hidden": [32], "batchnorm": True}
    )
    with pytest.raises(ValueError, match=r"backbone\.layers\.2\.weight.*bias or a BatchNorm"):
        model.setup("fit")  # BatchNorm1d affine: refused by name before any training
    model = _agd_module(dm)
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "a.ckpt"
    trainer.save_checkpoint(ckpt)
    trained = [p.detach().clone() for p in model.trainable_parameters()]
    # resume: Lightning restores the checkpoint after setup's init
    resumed = _agd_module(dm)
    cpu_trainer(tmp_path, max_epochs=1).fit(resumed, datamodule=dm, ckpt_path=ckpt)
    assert all(torch.equal(a, p) for a, p in zip(trained, resumed.trainable_parameters()))
    # load_from_checkpoint, then a new fit: not re-initialised
    loaded = ImplicitETFModule.load_from_checkpoint(ckpt, backbone=_BiasFreeMLP())
    loaded.setup("fit")
    assert all(torch.equal(a, p) for a, p in zip(trained, loaded.trainable_parameters()))


def test_agd_option_guards():
    dm = synthetic_dm()
    with pytest.raises(ValueError, match="lr_schedule='constant'"):
        JointModule(**model_kwargs(dm, optimizer="agd", lr_schedule="cosine"))
    with pytest.raises(ValueError, match="gain"):
        JointModule(**model_kwargs(dm, optimizer="agd", gain=-1.0))
    model = JointModule(**model_kwargs(dm, optimizer="agd", backbone=_BiasFreeMLP()))
    with pytest.raises(ValueError, match=r"'head\.bias'"):  # the linear head's bias
        model.setup("fit")
