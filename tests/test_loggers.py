"""lt_lightning.loggers: the W&B mode decision, an offline run that gets the full CLI config (and the
per-class table every CLI run logs), and a failed offline run set aside so that ``wandb sync`` never
uploads it."""

from __future__ import annotations

import json

import pytest

from lt_lightning.loggers import FAILED_RUNS_DIR, wandb_mode
from lt_lightning.spec import SHOT_GROUP_NAMES, shot_groups
from tests.cli.helpers import digits, run_cli


def test_wandb_mode_decision(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent-home-for-netrc")
    assert wandb_mode() == "offline"  # no key: never try the network
    assert wandb_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode() == "offline"
    assert wandb_mode("online") == "online"  # asked for: the argument wins over the environment
    with pytest.raises(ValueError, match="unknown W&B mode 'cloud'"):
        wandb_mode("cloud")


@pytest.mark.slow
def test_an_offline_run_gets_the_full_config_and_the_per_class_table(tmp_path):
    args = ["fit", "-c", digits("joint"), "--trainer.max_epochs", "1", "--trainer.callbacks", "[]"]
    proc = run_cli(tmp_path, *args, "--test_after_fit", "true", "--run_group", "grp-17", wandb="offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "runs/digits_lt/joint/seed0"  # the run folder: W&B, CSV log and config together
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "config.yaml").is_file()
    assert f"W&B offline run in runs/digits_lt/joint/seed0/wandb/{runs[0].name}" in proc.stdout
    # W&B's own chatter is silenced; ours says where the run is
    assert "wandb: Tracking run" not in proc.stderr and "wandb: Run data is saved" not in proc.stderr
    assert "anonymous" not in proc.stderr + proc.stdout  # W&B's deprecation line for Lightning's default
    # An offline run keeps its records in run-*.wandb (protobuf); the config update is stored as JSON
    # text. The data and trainer sections only reach W&B through our full-config callback, not through
    # Lightning's hyper-parameter logging.
    blob = next(runs[0].glob("run-*.wandb")).read_bytes()
    for text in (b"lt_lightning.data.DigitsLTDataModule", b"max_epochs", b"lt_lightning.models.JointModule"):
        assert text in blob, text
    # named <dataset>/<method>/seed<s>, grouped, tagged with the method, dataset and recipe followed
    for text in (b"digits_lt/joint/seed0", b"grp-17", b"method:joint", b"dataset:digits_lt", b"follows:own"):
        assert text in blob, text
    assert b"torch.optim.SGD" in blob  # the injected optimizer's record
    # the CLI adds PerClassTable to every run: one row per class, the data's counts and shot groups
    (table,) = runs[0].glob("files/media/table/test/per_class_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"] == ["class", "train_count", "accuracy", "shot_group"]
    counts = [row[1] for row in table["data"]]
    assert [row[0] for row in table["data"]] == list(range(10)) and counts == sorted(counts, reverse=True)
    names = dict(enumerate(SHOT_GROUP_NAMES))
    assert [row[3] for row in table["data"]] == [names[int(g)] for g in shot_groups(counts, 60, 20)]
    # its accuracies average to the group accuracies the run printed
    printed = dict(line.split() for line in proc.stdout.splitlines() if line.startswith("test/"))
    for group in SHOT_GROUP_NAMES:
        accs = [row[2] for row in table["data"] if row[3] == group]
        assert sum(accs) / len(accs) == pytest.approx(float(printed[f"test/{group}_acc"]), abs=1e-4)


@pytest.mark.slow
def test_a_failed_offline_run_is_set_aside(tmp_path):
    # diverges in the first epoch: NonFiniteError
    lr = ["--model.init_args.optimizer.init_args.lr", "1e8"]
    proc = run_cli(tmp_path, "fit", "-c", digits("joint"), *lr, wandb="offline")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "NonFiniteError" in proc.stderr
    # `wandb sync <run>/wandb` (or `wandb sync <run>`) takes every <dir>/*.wandb one level down: none left
    run_dir = tmp_path / "runs/digits_lt/joint/seed0"
    assert list((run_dir / "wandb").glob("*/*.wandb")) == []
    assert list(run_dir.glob("*/*.wandb")) == []
    failed = list((run_dir / FAILED_RUNS_DIR).glob("offline-run-*"))
    assert len(failed) == 1 and list(failed[0].glob("run-*.wandb"))  # kept for inspection
    assert "set aside" in proc.stdout
