"""``DecoupledModule(mode=...)`` (models/decoupled/factory.py): a factory whose object is the mode's class,
refusing options of another mode; its ``load_from_checkpoint`` returns the class the checkpoint names."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.models import (
    CRTModule,
    DecoupledModule,
    FixedETFModule,
    JointModule,
    LWSModule,
    NCMModule,
    TauNormModule,
    WeightBalancingModule,
)
from lt_lightning.models.decoupled import MODES, TAU_GRID, decoupled_class
from tests.models.helpers import cpu_trainer, stage2_kwargs, synthetic_dm

EXPECTED = {
    "crt": CRTModule,
    "lws": LWSModule,
    "tau_norm": TauNormModule,
    "ncm": NCMModule,
    "weight_balancing": WeightBalancingModule,
}


def test_the_modes_table_is_the_stage2_classes():
    assert MODES == EXPECTED
    assert all(decoupled_class(mode) is cls for mode, cls in EXPECTED.items())


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_the_object_is_of_the_modes_class_with_its_own_record(stage1_ckpt, mode):
    dm = synthetic_dm()
    model = DecoupledModule(mode=mode, **stage2_kwargs(dm, stage1_ckpt))
    assert type(model) is EXPECTED[mode]
    direct = EXPECTED[mode](**stage2_kwargs(dm, stage1_ckpt))
    assert dict(model.hparams) == dict(direct.hparams)  # no "mode", no other mode's options
    assert DecoupledModule.builds(EXPECTED[mode]) and not DecoupledModule.builds(JointModule)


@pytest.mark.parametrize(
    ("mode", "option", "match"),
    [
        ("crt", {"tau": 1.0}, "tau do not apply to mode 'crt' \\(CRTModule\\)"),
        ("ncm", {"tau_grid": [0.0, 1.0]}, "tau_grid do not apply to mode 'ncm'"),
        ("tau_norm", {"ncm_metric": "cosine"}, "ncm_metric do not apply to mode 'tau_norm'"),
        ("lws", {"ncm_center": False, "tau": 0.5}, "ncm_center, tau do not apply"),
    ],
)
def test_options_of_another_mode_must_keep_their_defaults(stage1_ckpt, mode, option, match):
    dm = synthetic_dm()
    with pytest.raises(ValueError, match=match):
        DecoupledModule(mode=mode, **stage2_kwargs(dm, stage1_ckpt, **option))
    # the defaults themselves are fine (a config lists them, e.g. the CLI passes every default)
    DecoupledModule(mode=mode, **stage2_kwargs(dm, stage1_ckpt, tau=None, tau_grid=list(TAU_GRID)))


def test_an_unknown_mode_lists_the_valid_ones(stage1_ckpt):
    with pytest.raises(ValueError, match="unknown decoupled mode 'cb'; valid: crt, lws, tau_norm, ncm"):
        DecoupledModule(mode="cb", **stage2_kwargs(synthetic_dm(), stage1_ckpt))


def test_load_from_checkpoint_on_the_factory_returns_the_recorded_class(stage1_ckpt, tmp_path):
    dm = synthetic_dm()
    model = DecoupledModule(mode="ncm", **stage2_kwargs(dm, stage1_ckpt))
    trainer = cpu_trainer(tmp_path)
    trainer.test(model, datamodule=dm, verbose=False)
    trainer.save_checkpoint(tmp_path / "ncm.ckpt")
    loaded = DecoupledModule.load_from_checkpoint(tmp_path / "ncm.ckpt")
    assert type(loaded) is NCMModule
    assert torch.equal(loaded.head.centroids, model.head.centroids)
    with pytest.raises(ValueError, match="is a NCMModule checkpoint, not a CRTModule"):
        CRTModule.load_from_checkpoint(tmp_path / "ncm.ckpt")
    with pytest.raises(ValueError, match="is a NCMModule checkpoint, not a FixedETFModule"):
        FixedETFModule.load_from_checkpoint(tmp_path / "ncm.ckpt")
