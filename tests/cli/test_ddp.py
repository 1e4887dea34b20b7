"""Real 2-process CPU DDP runs of the ``lt-lightning`` CLI: fit + validate + test per method.

Each run goes through a subprocess (Lightning's ``ddp`` launcher re-executes the script for rank 1),
with the NC callback measuring every epoch and drawing figures on rank 0 only. A collective inside
rank-0-only code (e.g. reading ``trainer.log_dir`` to save figures with the CSV logger) would hang the
job, which the timeout turns into a failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import cli_env, digits

SCRIPT = Path(__file__).with_name("ddp_cli_script.py")
DDP = ["--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "2"]

pytestmark = [pytest.mark.slow, pytest.mark.ddp]


def _run(out: Path, method: str, stages: str, *extra: str, wandb: bool = False) -> tuple[dict, str]:
    env = cli_env(out, "offline" if wandb else "disabled")
    cmd = [sys.executable, str(SCRIPT), stages, str(out), "--config", digits(method), *DDP]
    proc = subprocess.run(cmd + list(extra), env=env, cwd=out, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads((out / f"metrics_rank{r}.json").read_text()) for r in (0, 1)]
    for stage in stages.split(","):
        r0, r1 = records[0][stage], records[1][stage]
        for key in r0:
            if key.startswith(("val/", "test/", "nc/")):  # reduced over ranks: identical on both
                assert r0[key] == r1[key], f"{stage}: {key} differs across ranks"
    # the reduced values are logged with sync_dist=False on purpose: no advice to sync them
    assert "self.log('val/acc'" not in proc.stderr and "self.log('test/acc'" not in proc.stderr
    return records[0], proc.stderr


def _check_nc(record: dict, out: Path) -> None:
    assert "nc/train/nc1" in record["fit"] and "nc/val/acc" in record["fit"]
    assert 0.0 <= record["test"]["test/acc"] <= 1.0
    figures = list(out.glob("runs/digits_lt/*/seed0/nc_figures/*.png"))  # in the run folder
    assert len(figures) == 2 * 2 * 7  # 2 epochs x (train, val) x 7 figures (SELI, reliability), rank 0 only


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("joint")
    record, _ = _run(out, "joint", "fit,validate,test")
    return out, record


def test_joint_csv(stage1):
    out, record = stage1
    _check_nc(record, out)
    assert (out / "runs/digits_lt/joint/seed0/last.ckpt").is_file()


@pytest.mark.parametrize("method", ["fixed_etf", "fixed_etf_ce", "implicit_etf", "tde"])
def test_stage1_method_csv(tmp_path, method):
    record, _ = _run(tmp_path, method, "fit,validate,test")
    _check_nc(record, tmp_path)


def test_fixed_etf_wandb_offline(tmp_path):
    record, _ = _run(tmp_path, "fixed_etf", "fit,validate,test", wandb=True)
    assert "nc/val/nc1" in record["fit"]
    runs = list((tmp_path / "runs/digits_lt/fixed_etf/seed0/wandb").glob("offline-run-*"))
    assert len(runs) == 1  # one W&B run, written by rank 0


@pytest.mark.parametrize("method", ["crt", "lws"])
def test_stage2_fit_csv(tmp_path, stage1, method):
    ckpt = stage1[0] / "runs/digits_lt/joint/seed0/last.ckpt"
    record, _ = _run(tmp_path, method, "fit,validate,test", "--model.init_args.stage1_checkpoint", str(ckpt))
    _check_nc(record, tmp_path)


@pytest.mark.parametrize("method", ["tau_norm", "ncm"])
def test_stage2_post_hoc_csv(tmp_path, stage1, method):
    ckpt = stage1[0] / "runs/digits_lt/joint/seed0/last.ckpt"
    record, _ = _run(tmp_path, method, "validate,test", "--model.init_args.stage1_checkpoint", str(ckpt))
    assert 0.0 <= record["test"]["test/acc"] <= 1.0
