"""Issue 20, items 5-8: what the command line checks before a run starts (lt_lightning.cli.guards).

Process counts above the CPU cores or GPUs present, an accelerator the machine has not and a negative
``log_every_n_steps`` are refused in one line before anything is built; one fit at a time holds a run
folder (a second one refuses, naming the holder's process; a stale lock is taken over); a run folder
that cannot be written is refused before training, and a full disk during training is one line with the
previous ``last.ckpt`` intact.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from lt_lightning.checkpoints import CheckpointWriteError, load_checkpoint_file
from lt_lightning.cli import build_cli, format_error, main
from lt_lightning.cli.guards import LOCK_NAME, RunFolderLock, cpu_cores, requested_processes
from tests.cli.helpers import FIT_SCRIPT, QUIET, cli_env, digits

RUN = Path("runs/digits_lt/joint/seed0")


def _refused(tmp_path, monkeypatch, *args: str, config: str = "joint") -> str:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        build_cli(["fit", "--config", digits(config), "--trainer.max_epochs", "1", *QUIET, *args])
    assert not (tmp_path / "runs").exists()  # refused before anything was built or written
    message = format_error(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------- process counts
@pytest.mark.parametrize(
    ("devices", "expected"),
    [(3, 3), ("3", 3), ([0, 1], 2), ("0,1,2", 3), ("auto", None), (-1, None), ("-1", None), (None, None)],
)
def test_requested_processes_reads_every_form_of_devices(devices, expected):
    assert requested_processes(devices) == expected


def test_cpu_devices_above_the_cores_are_refused_before_anything_starts(tmp_path, monkeypatch):
    too_many = str(cpu_cores() + 1)
    message = _refused(tmp_path, monkeypatch, "--trainer.accelerator", "cpu", "--trainer.devices", too_many)
    assert message.startswith(f"--trainer.devices {too_many}: ") and f"at most {cpu_cores()}" in message
    # what the issue saw: 99999 DDP workers until the out-of-memory killer fired
    assert "at most" in _refused(
        tmp_path, monkeypatch, "--trainer.accelerator", "cpu", "--trainer.devices", "99999"
    )


def test_gpu_devices_above_the_gpus_present_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    message = _refused(tmp_path, monkeypatch, "--trainer.accelerator", "gpu", "--trainer.devices", "3")
    assert message == "--trainer.devices 3: this machine has 2 GPU(s); give at most 2 (or auto)"


def test_an_accelerator_the_machine_has_not_is_refused(tmp_path, monkeypatch):
    message = _refused(tmp_path, monkeypatch, "--trainer.accelerator", "tpu")
    assert message.startswith("--trainer.accelerator tpu: this machine has no TPU")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in _refused(tmp_path, monkeypatch, "--trainer.accelerator", "gpu")


@pytest.mark.parametrize("value", ["-1", "-50"])
def test_a_negative_log_every_n_steps_is_refused(tmp_path, monkeypatch, value):
    message = _refused(tmp_path, monkeypatch, "--trainer.log_every_n_steps", value)
    assert (
        message == f"--trainer.log_every_n_steps {value}: must be an integer >= 1 (0 logs no training steps)"
    )


# ---------------------------------------------------------------------------------- the run-folder lock
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / LOCK_NAME).write_text(f"{holder.pid} {socket.gethostname()}\n")
        with pytest.raises(FileExistsError, match=rf"in use by another fit \(process {holder.pid} on "):
            RunFolderLock([str(folder)]).acquire()
        assert (folder / LOCK_NAME).read_text().split()[0] == str(holder.pid)  # untouched
    finally:
        holder.kill()
        holder.wait()
    dead = _dead_pid()
    (folder / LOCK_NAME).write_text(f"{dead} {socket.gethostname()}\n")
    with pytest.warns(UserWarning, match=rf"stale lock .* \(process {dead}\)"):
        lock = RunFolderLock([str(folder)]).acquire()
    assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    lock.release()
    assert not (folder / LOCK_NAME).exists()
    (folder / LOCK_NAME).write_text("garbage")  # unreadable: stale
    with pytest.warns(UserWarning, match="stale lock"):
        RunFolderLock([str(folder)]).acquire().release()
    # a lock of another host cannot be checked: it is honoured
    (folder / LOCK_NAME).write_text(f"{dead} some-other-host\n")
    with pytest.raises(FileExistsError, match="on some-other-host"):
        RunFolderLock([str(folder)]).acquire()


def test_a_lock_on_several_folders_is_all_or_nothing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    b.mkdir()
    (b / LOCK_NAME).write_text(f"1 {socket.gethostname()}\n")  # pid 1 (init) is alive
    with pytest.raises(FileExistsError):
        RunFolderLock([str(a), str(b)]).acquire()
    assert not (a / LOCK_NAME).exists()  # the first lock was given back


class WaitForFile(L.Callback):
    """Holds a fit at its start until ``path`` exists (a second fit is tried meanwhile)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module):
        while not os.path.exists(self.path):
            time.sleep(0.1)


@pytest.mark.slow
def test_a_second_fit_in_the_same_run_folder_refuses_naming_the_first(tmp_path):
    go = tmp_path / "go"
    args = [
        "--config",
        digits("joint"),
        "--trainer.max_epochs",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ]
    hold = (
        f"--trainer.callbacks+={{class_path: tests.cli.test_guards.WaitForFile, init_args: {{path: '{go}'}}}}"
    )
    first = subprocess.Popen(
        [sys.executable, str(FIT_SCRIPT), "none", *args, hold],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = tmp_path / RUN / LOCK_NAME
        while not lock.exists():  # the first fit holds the folder (and waits at its start)
            assert first.poll() is None, first.communicate()[1][-3000:]
            time.sleep(0.2)
        second = subprocess.run(
            [sys.executable, str(FIT_SCRIPT), "none", *args],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        go.touch()
        out, err = first.communicate(timeout=300)
    assert second.returncode == 1
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("lt-lightning: error:")]
    assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"is in use by another fit (process {first.pid} on " in errors[0]
    assert first.returncode == 0, err[-3000:]
    assert not lock.exists()  # released at the end of the fit
    checkpoints = sorted(p.name for p in (tmp_path / RUN).iterdir() if p.suffix == ".ckpt")
    assert checkpoints == ["last.ckpt"]  # one run's file, written once per epoch; no last-v1.ckpt


# ---------------------------------------------------------------------------------- unwritable folders
def test_a_read_only_run_folder_is_refused_before_training(tmp_path, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if str(path).endswith(LOCK_NAME):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.chdir(tmp_path)
    trained = []
    monkeypatch.setattr(
        "lt_lightning.models.LongTailModule.on_train_start", lambda self: trained.append(1), raising=False
    )
    with pytest.raises(CheckpointWriteError) as info:
        build_cli(["fit", "--config", digits("joint"), "--trainer.max_epochs", "1", *QUIET])
    message = format_error(info.value)
    assert "the file system is read-only" in message and str(RUN) in message and "\n" not in message
    assert not trained  # noticed before the first epoch, not after it


@pytest.mark.slow
def test_a_full_disk_during_training_is_one_line_and_keeps_last_ckpt(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real_save, calls = torch.save, []

    def full_from_the_third_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= 1:  # epoch 0: last.ckpt (the configs write one file per epoch)
            return real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_from_the_third_save)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", digits("joint"), "--trainer.max_epochs", "2", *QUIET])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("lt-lightning: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    assert "the disk is full" in errors[0] and "the previous checkpoint there is intact" in errors[0]
    assert load_checkpoint_file(tmp_path / RUN / "last.ckpt")["epoch"] == 0  # epoch 0's, intact
    assert not [p for p in (tmp_path / RUN).iterdir() if p.name.endswith(".tmp")]
