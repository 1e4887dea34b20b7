"""Guards that keep a recipe from silently training something else than it says (issue 8)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from lt_lightning.models import JointModule


def test_trainable_backbone_without_weights_fails_at_construction():
    # Places-LT trains only layer4 of a pretrained ResNet: without the weights that is a frozen random net
    with pytest.raises(ValueError, match="weights_path"):
        JointModule(num_classes=5, backbone="resnet18", trainable_backbone=["net.layer4"])
    with pytest.raises(ValueError, match="weights_path"):
        JointModule(
            num_classes=5,
            backbone="resnet18",
            backbone_kwargs={"weights_path": None},
            trainable_backbone=["net.layer4"],
        )


def test_trainable_backbone_with_weights_freezes_all_but_the_prefix(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    model = JointModule(
        num_classes=5,
        backbone="resnet18",
        backbone_kwargs={"weights_path": str(path)},
        trainable_backbone=["net.layer4"],
    )
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("net.layer4") for n in trainable)


# ---- tau / alpha are chosen on a held-out validation split, never on test (issue 8 item 7) -------------


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

    tmp = tmp_path_factory.mktemp("stage1")
    dm = synthetic_dm(val_per_class=30)
    model = JointModule(**model_kwargs(dm))
    trainer = cpu_trainer(tmp, max_epochs=4)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp / "joint.ckpt")
    return str(tmp / "joint.ckpt")


def _accuracy(features_fn, weight, loader) -> float:
    correct = n = 0
    with torch.no_grad():
        for x, y in loader:
            correct += ((features_fn(x) @ weight.T).argmax(1) == y).sum().item()
            n += len(y)
    return correct / n


def test_tau_norm_chooses_tau_on_validation_and_logs_it_at_test(tmp_path, stage1):
    from lt_lightning.models import DecoupledModule, load_module_from_checkpoint
    from lt_lightning.nn.functional import tau_normalize
    from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

    grid = [0.0, 0.5, 1.0, 2.0]
    dm = synthetic_dm(val_per_class=30)
    assert not dm.val_is_test
    kw = model_kwargs(dm, stage1_checkpoint=stage1, mode="tau_norm", tau_grid=grid)
    kw.pop("backbone"), kw.pop("backbone_kwargs")
    model = DecoupledModule(**kw)
    res = cpu_trainer(tmp_path).test(model, datamodule=dm, verbose=False)[0]
    # independent: the first best tau by top-1 on the validation split (not the test split)
    ref = load_module_from_checkpoint(stage1).eval()
    val_acc = [
        _accuracy(ref.extract_features, tau_normalize(ref.head.weight, t), dm.val_dataloader()) for t in grid
    ]
    expected = grid[val_acc.index(max(val_acc))]
    assert res["test/tau_norm/tau"] == pytest.approx(expected)
    assert float(model.head.tau) == pytest.approx(expected)


def test_tau_norm_refuses_to_choose_on_the_test_split(tmp_path, stage1):
    from lt_lightning.models import DecoupledModule
    from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

    dm = synthetic_dm()  # no val_per_class: validation is the test split
    assert dm.val_is_test
    kw = model_kwargs(dm, stage1_checkpoint=stage1, mode="tau_norm")
    kw.pop("backbone"), kw.pop("backbone_kwargs")
    with pytest.raises(ValueError, match="val_per_class"):
        cpu_trainer(tmp_path).test(DecoupledModule(**kw), datamodule=dm, verbose=False)
    # a fixed tau is not a selection: allowed
    fixed = DecoupledModule(**{**kw, "tau": 1.0})
    res = cpu_trainer(tmp_path).test(fixed, datamodule=dm, verbose=False)[0]
    assert res["test/tau_norm/tau"] == pytest.approx(1.0)


def test_tde_alpha_from_validation_is_used_and_logged_at_test(tmp_path):
    from lt_lightning.models import TDEModule
    from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

    grid = [0.0, 1.0, 3.0]
    dm = synthetic_dm(val_per_class=30)
    model = TDEModule(**model_kwargs(dm, alpha=1.0, alpha_grid=grid, alpha_from_validation=True))
    trainer = cpu_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, datamodule=dm)
    val = {k: float(v) for k, v in trainer.callback_metrics.items()}
    accs = [val[f"val/tde_alpha/acc@{a:g}"] for a in grid]
    expected = grid[accs.index(max(accs))]
    assert float(model.selected_alpha) == expected == val["val/tde_alpha/best_alpha"]
    res = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert res["test/tde_alpha/alpha"] == pytest.approx(expected)
    # the chosen alpha travels with the checkpoint
    trainer.save_checkpoint(tmp_path / "tde.ckpt")
    again = TDEModule.load_from_checkpoint(tmp_path / "tde.ckpt")
    assert float(again.selected_alpha) == expected


def test_tde_alpha_from_validation_refuses_val_equal_test(tmp_path):
    from lt_lightning.models import TDEModule
    from tests.models.helpers import cpu_trainer, model_kwargs, synthetic_dm

    dm = synthetic_dm()
    model = TDEModule(**model_kwargs(dm, alpha_grid=[0.0, 1.0], alpha_from_validation=True))
    with pytest.raises(ValueError, match="val_per_class"):
        cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    with pytest.raises(ValueError, match="alpha_grid"):
        TDEModule(**model_kwargs(dm, alpha_grid=[], alpha_from_validation=True))
