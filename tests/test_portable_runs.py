"""Portable runs: per-seed run folders, no silent overwrite, stage 2 checkpoints that need no stage-1 file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace

from lt_lightning.cli import build_cli, main, substitute_seed
from lt_lightning.models import DecoupledModule

CONFIGS = Path(__file__).parents[1] / "configs"
FAST = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "2"]


def test_seed_placeholder_is_filled_everywhere():
    config = Namespace(
        trainer=Namespace(
            callbacks=[Namespace(init_args=Namespace(dirpath="runs/x/joint/seed{seed}/steps"))]
        ),
        model=Namespace(init_args=Namespace(stage1_checkpoint="runs/x/joint/seed{seed}/last.ckpt", lr=0.1)),
        extra={"path": "a{seed}b"},
    )
    substitute_seed(config, 7)
    assert config.trainer.callbacks[0].init_args.dirpath == "runs/x/joint/seed7/steps"
    assert config.model.init_args.stage1_checkpoint == "runs/x/joint/seed7/last.ckpt"
    assert config.extra == {"path": "a7b"} and config.model.init_args.lr == 0.1
    with pytest.raises(ValueError, match=r"model.init_args.stage1_checkpoint=.*seed_everything"):
        substitute_seed(Namespace(model=Namespace(init_args=Namespace(stage1_checkpoint="s{seed}"))), None)


def _test_metrics(config: str, ckpt: Path | str) -> dict[str, float]:
    cli = build_cli(["test", "-c", str(CONFIGS / config), "--ckpt_path", str(ckpt)])
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}


@pytest.mark.slow
def test_stage2_checkpoint_evaluates_without_the_stage1_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_cli(["fit", "-c", str(CONFIGS / "digits_lt/joint.yaml"), *FAST])
    stage1 = tmp_path / "runs/digits_lt/joint/seed0"
    assert (stage1 / "last.ckpt").is_file()  # runs/<dataset>/<method>/seed<s>/
    for mode in ("crt", "lws"):
        cli = build_cli(["fit", "-c", str(CONFIGS / f"digits_lt/{mode}.yaml"), *FAST])
        assert cli.model.hparams.stage1_checkpoint == "runs/digits_lt/joint/seed0/last.ckpt"
    crt, lws = (tmp_path / f"runs/digits_lt/{m}/seed0/last.ckpt" for m in ("crt", "lws"))
    before = {m: _test_metrics(f"digits_lt/{m}.yaml", p) for m, p in (("crt", crt), ("lws", lws))}
    shutil.rmtree(stage1)  # the stage-1 run is gone (moved, deleted, or on another machine)
    for mode, ckpt in (("crt", crt), ("lws", lws)):
        after = _test_metrics(f"digits_lt/{mode}.yaml", ckpt)
        assert after == before[mode] and "test/few_acc" in after
    # --ckpt_path may name the run folder by {seed} too
    assert _test_metrics("digits_lt/crt.yaml", "runs/digits_lt/crt/seed{seed}/last.ckpt") == before["crt"]
    # from Python too: the architecture comes from the stage-2 hyper-parameters, the weights from its state
    model = DecoupledModule.load_from_checkpoint(str(crt), weights_only=True)
    state = torch.load(crt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.hparams.stage1_module["class_path"] == "lt_lightning.models.joint.JointModule"


@pytest.mark.slow
def test_fit_refuses_a_folder_holding_a_previous_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    joint = ["fit", "-c", str(CONFIGS / "digits_lt/joint.yaml"), *FAST]
    build_cli(joint)
    folder = tmp_path / "runs/digits_lt/joint/seed0"
    first = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]
    with pytest.raises(SystemExit) as info:
        main(joint)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "holds checkpoints of a previous run" in err and "--overwrite_run true" in err
    assert torch.equal(
        torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]["head.weight"], first["head.weight"]
    )  # untouched
    # another seed gets its own folder; stage 2 of that seed reads it
    build_cli([*joint, "--seed_everything", "1", "--model.init_args.seed", "1"])
    assert (tmp_path / "runs/digits_lt/joint/seed1/last.ckpt").is_file()
    cli = build_cli(["fit", "-c", str(CONFIGS / "digits_lt/crt.yaml"), *FAST, "--seed_everything", "1"])
    assert cli.model.hparams.stage1_checkpoint == "runs/digits_lt/joint/seed1/last.ckpt"
    # asked to: the old checkpoints go, the new run's last.ckpt is the only one (no last-v1.ckpt)
    build_cli([*joint, "--overwrite_run", "true", "--data.init_args.seed", "3"])
    names = sorted(p.name for p in folder.glob("*.ckpt"))
    assert "last.ckpt" in names and not any("-v" in n for n in names)
    new = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]["head.weight"]
    assert not torch.equal(new, first["head.weight"])
