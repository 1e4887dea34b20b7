"""Every shipped config that trains checkpoints at least every epoch; selection never uses the test split."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*/*.yaml"))
#: datamodules whose validation split is separate from the test split (iNat's "val" is its test set)
REAL_VALIDATION = ("ImageNetLTDataModule", "PlacesLTDataModule")


def _checkpoints(cfg: dict) -> list[dict]:
    callbacks = (cfg.get("trainer") or {}).get("callbacks") or []
    return [c.get("init_args", {}) for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]


def _trains(cfg: dict) -> bool:
    init = cfg["model"].get("init_args", {})
    return not cfg["model"]["class_path"].endswith("DecoupledModule") or init.get("mode") in ("crt", "lws")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_training_configs_checkpoint_every_epoch(path):
    cfg = yaml.safe_load(path.read_text())
    if not _trains(cfg):
        return  # tau_norm / ncm: validate / test only, nothing to resume
    ckpts = _checkpoints(cfg)
    per_epoch = [
        c
        for c in ckpts
        if c.get("save_last") is True
        and c.get("save_top_k", 1) != 0  # with save_top_k 0 Lightning writes last.ckpt only at the end
        and c.get("every_n_epochs", 1) == 1
        and not c.get("every_n_train_steps")
        and c.get("monitor") is None
    ]
    assert len(per_epoch) == 1, f"{path}: needs one ModelCheckpoint saving last.ckpt every epoch"
    run_dir = per_epoch[0]["dirpath"]
    assert run_dir == f"runs/{path.parent.name}/{path.stem}/seed{{seed}}"  # the CLI fills in the seed
    if path.parent.name == "inat2018":  # ~850 steps per epoch: also mid-epoch checkpoints
        steps = [c for c in ckpts if c.get("every_n_train_steps")]
        assert len(steps) == 1 and steps[0]["dirpath"] == f"{run_dir}/steps" and steps[0]["save_last"]
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
