"""JointModule (models/joint.py): its ``loss`` / ``reweight`` / ``posthoc_tau`` options against the loss
functions of lt_lightning.losses (tested against the papers' formulas in tests/test_losses.py): the
right loss is used, DRW switches at its epoch (and resumes exactly), post-hoc adjustment shifts
evaluation logits and the reported bias, LDAM gets the cosine head; the classifier trains."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses import class_balanced_weights, ldam_loss, logit_adjusted_cross_entropy
from lt_lightning.models import JointModule
from lt_lightning.nn.heads import LinearHead, NormedLinearHead
from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm


def _batch(dm, n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, generator=g), torch.randint(0, dm.num_classes, (n,), generator=g)


def _loss_of(module, x, y):
    f = module.extract_features(x)
    return module.compute_loss(module.forward_head(f), f, y, y), module.head(f)


@pytest.mark.parametrize("loss", ["ce", "logit_adjusted", "balanced_softmax", "ldam"])
def test_loss_option_uses_the_loss_function(loss):
    dm = synthetic_dm()
    dm.setup("fit")
    torch.manual_seed(0)
    m = JointModule(**model_kwargs(dm, loss=loss, la_tau=0.7))
    x, y = _batch(dm)
    got, logits = _loss_of(m, x, y)
    counts = dm.class_counts
    expected = {
        "ce": lambda: F.cross_entropy(logits, y),
        "logit_adjusted": lambda: logit_adjusted_cross_entropy(logits, y, counts, tau=0.7),
        "balanced_softmax": lambda: logit_adjusted_cross_entropy(logits, y, counts, tau=1.0),
        "ldam": lambda: ldam_loss(logits, y, counts, max_margin=0.5, scale=30.0),
    }[loss]()
    torch.testing.assert_close(got, expected)
    assert isinstance(m.head, NormedLinearHead if loss == "ldam" else LinearHead)


def test_drw_switches_at_its_epoch_with_class_balanced_weights(tmp_path):
    dm = synthetic_dm()
    m = JointModule(**model_kwargs(dm, loss="ldam", reweight="drw", drw_epoch=2))
    seen = {}

    orig = m.loss_weight

    def spy():
        w = orig()
        seen[m.current_epoch] = None if w is None else w.clone()
        return w

    m.loss_weight = spy
    cpu_trainer(tmp_path, max_epochs=4, limit_train_batches=2, limit_val_batches=1).fit(m, datamodule=dm)
    assert seen[0] is None and seen[1] is None
    expected = class_balanced_weights(dm.class_counts, 0.9999)
    torch.testing.assert_close(seen[2], expected)
    torch.testing.assert_close(seen[3], expected)


def test_class_balanced_reweight_is_on_from_the_start():
    dm = synthetic_dm()
    dm.setup("fit")
    m = JointModule(**model_kwargs(dm, reweight="cb", cb_beta=0.99))
    x, y = _batch(dm)
    got, logits = _loss_of(m, x, y)
    w = class_balanced_weights(dm.class_counts, 0.99)
    torch.testing.assert_close(got, F.cross_entropy(logits, y, weight=w))


@pytest.mark.slow
def test_drw_resumes_exactly_across_the_switch(tmp_path):
    def fresh():
        torch.manual_seed(0)
        dm = synthetic_dm()
        return dm, JointModule(**model_kwargs(dm, loss="ldam", reweight="drw", drw_epoch=1))

    dm, straight = fresh()
    cpu_trainer(tmp_path / "a", max_epochs=2).fit(straight, datamodule=dm)
    dm, first = fresh()
    t = cpu_trainer(tmp_path / "b", max_epochs=1)
    t.fit(first, datamodule=dm)
    t.save_checkpoint(tmp_path / "one.ckpt")
    # written after epoch 0 finished: the run resumes at epoch 1, where DRW is on
    assert torch.load(tmp_path / "one.ckpt", weights_only=False)["lt_lightning_drw_active"] is True
    dm, resumed = fresh()
    cpu_trainer(tmp_path / "c", max_epochs=2).fit(
        resumed, datamodule=dm, ckpt_path=str(tmp_path / "one.ckpt")
    )
    for k, v in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, atol=1e-6, rtol=1e-6)
    # and the run really did change after the switch: without DRW the second epoch differs
    dm, plain = fresh()
    plain.hparams.drw_epoch = 5
    cpu_trainer(tmp_path / "d", max_epochs=2).fit(plain, datamodule=dm)
    assert not torch.allclose(plain.head.raw_weight, straight.head.raw_weight)


def test_posthoc_adjustment_shifts_eval_logits_and_reported_bias():
    dm = synthetic_dm()
    dm.setup("fit")
    m = JointModule(**model_kwargs(dm, posthoc_tau=1.5))
    x, _ = _batch(dm)
    prior = torch.tensor(dm.class_counts, dtype=torch.float64)
    prior = (prior / prior.sum()).log().float()
    m.eval()
    raw = m.head(m.extract_features(x))
    torch.testing.assert_close(m(x), raw - 1.5 * prior)
    m.train()  # training logits are not adjusted
    torch.testing.assert_close(m.forward_head(m.extract_features(x)), m.head(m.extract_features(x)))
    m.eval()
    w, b = m.classifier_weight_bias()
    torch.testing.assert_close(m.extract_features(x) @ w.T + b, m(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss": "focal"}, "unknown loss"),
        ({"reweight": "resample"}, "unknown reweight"),
        ({"la_tau": -1.0}, "la_tau"),
        ({"ldam_scale": 0.0}, "ldam_scale"),
        ({"cb_beta": 1.0}, "cb_beta"),
        ({"drw_epoch": -1}, "drw_epoch"),
        ({"loss": "ldam", "class_counts": None}, "class_counts"),
    ],
)
def test_bad_options(kwargs, match):
    dm = synthetic_dm()
    with pytest.raises(ValueError, match=match):
        JointModule(**model_kwargs(dm, **kwargs))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["balanced_softmax", "ldam"])
def test_long_tail_losses_train_and_help_the_few(tmp_path, loss):
    """On the synthetic LT problem both losses beat chance and do not lose few-shot accuracy vs CE."""
    results = {}
    for name in ("ce", loss):
        torch.manual_seed(0)
        dm = synthetic_dm()
        kw = {"loss": name}
        m = JointModule(**model_kwargs(dm, **kw))
        t = cpu_trainer(tmp_path / name, max_epochs=6)
        t.fit(m, datamodule=dm)
        results[name] = t.test(m, datamodule=dm, verbose=False)[0]
    assert results[loss]["test/acc"] > 2.0 / 6
    assert results[loss]["test/few_acc"] >= results["ce"]["test/few_acc"] - 0.05


def test_the_linear_classifier_really_trains(tmp_path):
    dm = synthetic_dm()
    joint = JointModule(**model_kwargs(dm))
    w0 = joint.head.weight.detach().clone()
    cpu_trainer(tmp_path, max_epochs=1).fit(joint, datamodule=dm)
    assert not torch.allclose(joint.head.weight, w0)


@pytest.mark.parametrize("option", [{"loss": "logit_adjusted"}, {"reweight": "cb"}, {"posthoc_tau": 1.0}])
def test_every_option_that_reads_the_counts_needs_them(option):
    dm = synthetic_dm()
    with pytest.raises(ValueError, match="need the training class_counts"):
        JointModule(**model_kwargs(dm, class_counts=None, **option))
    with pytest.raises(ValueError, match="all > 0"):
        JointModule(**model_kwargs(dm, class_counts=[5, 4, 3, 2, 1, 0], **option))
    JointModule(**model_kwargs(dm, class_counts=None))  # plain CE does not


def test_frozen_random_classifier_is_yangs_ce_baseline(tmp_path):
    # Yang's models/resnet_cifar.py Classifier: nn.Linear, kaiming-normal weight, weight and bias frozen
    dm = synthetic_dm()
    joint = JointModule(**model_kwargs(dm), classifier_init="kaiming_normal", freeze_classifier=True)
    assert isinstance(joint.head, LinearHead) and joint.head.init == "kaiming_normal"
    assert not any(p.requires_grad for p in joint.head.parameters())
    assert all(not n.startswith("head.") for n, _ in joint.named_trainable_parameters())
    w0, b0 = joint.head.weight.detach().clone(), joint.head.bias.detach().clone()
    b_params = [p.detach().clone() for p in joint.backbone.parameters()]
    cpu_trainer(tmp_path, max_epochs=1).fit(joint, datamodule=dm)
    assert torch.equal(joint.head.weight, w0) and torch.equal(joint.head.bias, b0)
    assert any(
        not torch.equal(p, q) for p, q in zip(joint.backbone.parameters(), b_params)
    )  # the rest trains


def test_classifier_init_option():
    dm = synthetic_dm()
    assert JointModule(**model_kwargs(dm)).head.init == "default"  # the default is unchanged
    with pytest.raises(ValueError, match="unknown classifier_init 'orthogonal'"):
        JointModule(**model_kwargs(dm), classifier_init="orthogonal")
    with pytest.raises(ValueError, match="applies to the linear classifier, not the cosine one"):
        JointModule(**model_kwargs(dm), loss="ldam", classifier_init="kaiming_normal")
