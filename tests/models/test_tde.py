"""TDEModule (models/tde.py): counterfactual evaluation logits (the functional causal-norm logits of
tests/nn/test_functional.py are the reference), the α sweep at validation, α chosen on a held-out
validation split (never on test), and the moving-average momentum that follows the learning rate."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.models import TDEModule
from lt_lightning.nn.functional import causal_norm_logits
from tests.models.helpers import cpu_trainer, model_kwargs, sgd, synthetic_dm


def test_eval_logits_are_counterfactual(tmp_path):
    dm = synthetic_dm()
    model = TDEModule(**model_kwargs(dm, alpha=1.5))
    cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    assert model.head.embed.abs().sum() > 0  # the moving average was collected
    x = next(iter(dm.test_dataloader()))[0]
    model.eval()
    with torch.no_grad():
        feats = model.extract_features(x)
        expected = causal_norm_logits(feats, model.head.weight, embed=model.head.embed, alpha=1.5)
        torch.testing.assert_close(model(x), expected)
        assert not torch.allclose(model(x), causal_norm_logits(feats, model.head.weight))


def test_the_alpha_sweep_is_logged_at_validation(tmp_path):
    dm = synthetic_dm()
    model = TDEModule(**model_kwargs(dm, alpha=1.0, alpha_grid=[0.0, 1.0, 2.0]))
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    res = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert res["val/tde_alpha/acc@1"] == pytest.approx(res["val/acc"], abs=1e-6)  # alpha 1 is the model's
    best = res["val/tde_alpha/best_alpha"]
    assert res[f"val/tde_alpha/acc@{best:g}"] == max(res[f"val/tde_alpha/acc@{a:g}"] for a in (0, 1, 2))


def test_alpha_from_validation_is_used_and_logged_at_test(tmp_path):
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
    trainer.save_checkpoint(tmp_path / "tde.ckpt")  # the chosen alpha travels with the checkpoint
    assert float(TDEModule.load_from_checkpoint(tmp_path / "tde.ckpt").selected_alpha) == expected


def test_alpha_from_validation_refuses_a_validation_split_that_is_the_test_split(tmp_path):
    dm = synthetic_dm()
    assert dm.val_is_test
    model = TDEModule(**model_kwargs(dm, alpha_grid=[0.0, 1.0], alpha_from_validation=True))
    with pytest.raises(ValueError, match="val_per_class"):
        cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    with pytest.raises(ValueError, match="alpha_grid"):
        TDEModule(**model_kwargs(dm, alpha_grid=[], alpha_from_validation=True))
    fresh = TDEModule(**model_kwargs(synthetic_dm(val_per_class=5), alpha_from_validation=True))
    with pytest.raises(ValueError, match="no alpha was selected yet"):
        cpu_trainer(tmp_path).test(fresh, datamodule=synthetic_dm(val_per_class=5), verbose=False)


def test_the_embed_momentum_follows_the_learning_rate(tmp_path):
    dm = synthetic_dm()
    model = TDEModule(**model_kwargs(dm, embed_momentum="lr", optimizer=sgd(lr=0.01, momentum=0.5)))
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert model.head.momentum == pytest.approx(1 - 0.1 * min(50 * 0.01, 1.0))
    assert trainer.optimizers[0].param_groups[0]["momentum"] == 0.5  # SGD's momentum is its own


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_heads": 5}, "num_heads=5 must divide"),
        ({"embed_momentum": "epoch"}, r"embed_momentum must be a number in \[0, 1\] or 'lr'"),
        ({"alpha_grid": [-1.0]}, "alpha_grid values must be >= 0"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TDEModule(**model_kwargs(synthetic_dm(), **kwargs))


def test_the_sweep_on_the_test_split_warns_once_and_test_states_its_alpha(tmp_path, capsys):
    dm = synthetic_dm()
    assert dm.val_is_test
    model = TDEModule(**model_kwargs(dm, alpha=1.5, alpha_grid=[0.0, 1.0]))
    trainer = cpu_trainer(tmp_path, max_epochs=2)
    with pytest.warns(UserWarning, match="validates on its TEST split") as caught:
        trainer.fit(model, datamodule=dm)
        trainer.validate(model, datamodule=dm, verbose=False)
    assert sum("TEST split" in str(w.message) for w in caught) == 1  # once, not per validation epoch
    assert "Test uses the configured alpha=1.5" in str(
        next(w.message for w in caught if "TEST" in str(w.message))
    )
    trainer.test(model, datamodule=dm, verbose=False)
    assert "[lt-lightning] TDE test: alpha = 1.5 (configured)" in capsys.readouterr().out


def test_no_warning_with_a_real_validation_split_or_without_a_sweep(tmp_path, recwarn):
    for dm, grid in ((synthetic_dm(val_per_class=5), [0.0, 1.0]), (synthetic_dm(), [])):
        model = TDEModule(**model_kwargs(dm, alpha_grid=grid))
        cpu_trainer(tmp_path, max_epochs=1).fit(model, datamodule=dm)
    assert not [w for w in recwarn if "TEST split" in str(w.message)]
