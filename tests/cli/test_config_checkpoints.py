"""Every shipped config that trains checkpoints at least every epoch into its per-seed run folder, and
selection never uses the test split. Read as the CLI resolves each config (shared blocks included)."""

from __future__ import annotations

import pytest

from lt_lightning.cli.lightning_cli import config_class
from tests.cli.helpers import CONFIGS, resolved_config

PATHS = sorted(
    p for p in CONFIGS.glob("*/*.yaml") if not p.name.startswith("_")
)  # _base.yaml: included blocks
#: datamodules whose validation split is separate from the test split (iNat's "val" is its test set)
REAL_VALIDATION = ("ImageNetLTDataModule", "PlacesLTDataModule")


def _checkpoints(cfg: dict) -> list[dict]:
    callbacks = cfg["trainer"].get("callbacks") or []
    return [c.get("init_args") or {} for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]


def test_configs_are_found():
    assert len(PATHS) >= 70 and (CONFIGS / "digits_lt/joint.yaml") in PATHS


def _writes_last_once(c: dict) -> bool:
    """``last.ckpt`` at each save, written once: the latest checkpoint named ``last`` (``save_last: true``
    would write the same checkpoint a second time under the epoch's name)."""
    return (
        c.get("filename") == "last"
        and c.get("save_top_k", 1) == 1
        and not c.get("save_last")
        and c.get("monitor") is None
        and c.get("enable_version_counter") is False  # a resumed older run's last.ckpt is overwritten
    )


@pytest.mark.slow  # about 0.3 s a config
@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_training_configs_checkpoint_every_epoch(path):
    cfg = resolved_config(path)
    if not config_class(cfg["model"]).trains:
        assert not _checkpoints(cfg)  # tau_norm / ncm: validate / test only, nothing to resume
        return
    ckpts = _checkpoints(cfg)
    per_epoch = [
        c
        for c in ckpts
        if _writes_last_once(c)
        and c.get("every_n_epochs") in (None, 1)
        and not c.get("every_n_train_steps")
        and not c.get("train_time_interval")
        and c.get("monitor") is None
    ]
    assert len(per_epoch) == 1, f"{path}: needs one ModelCheckpoint saving last.ckpt every epoch"
    run_dir = per_epoch[0]["dirpath"]
    assert run_dir == f"runs/{path.parent.name}/{path.stem}/seed{{seed}}"  # the CLI fills in the seed
    if path.parent.name == "inat2018":  # ~850 steps per epoch: also mid-epoch checkpoints
        steps = [c for c in ckpts if c.get("every_n_train_steps")]
        assert len(steps) == 1 and steps[0]["dirpath"] == f"{run_dir}/steps" and _writes_last_once(steps[0])
    data = cfg["data"]["class_path"].rpartition(".")[2]
    # held-out training images (val_per_class) are a validation split apart from the test split too
    real_validation = (
        data in REAL_VALIDATION or (cfg["data"].get("init_args") or {}).get("val_per_class", 0) > 0
    )
    best = [c for c in ckpts if c.get("monitor")]
    for c in best:  # selection on a validation metric only, and only where validation is not the test split
        assert c["monitor"].startswith("val/") and c["mode"] == "max" and c["filename"] == "best"
        assert real_validation
    if real_validation:
        assert len(best) == 1 and best[0]["dirpath"] == run_dir
