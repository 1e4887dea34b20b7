"""Checks the command line makes before a run starts: the process count, the trainer's options, and a
lock on the run folder (writable, and used by one fit at a time).

- :func:`check_trainer_options`: ``--trainer.devices`` above the GPUs present (or, on the CPU, above the
  CPU cores this process may use) would start that many DDP workers, until the kernel's out-of-memory
  killer steps in; an accelerator this machine has not (``tpu`` without ``torch_xla``) or a negative
  ``log_every_n_steps`` is refused too. One line each, before anything is built.
- :class:`RunFolderLock`: a lock file in each checkpoint folder holds the PID and host of the fit that
  uses it. A second fit there refuses, naming that process; a lock whose process is gone (a kill -9) is
  stale and taken over. Creating it is also the writability check of the folder, before any training.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn

from lt_lightning.checkpoints import write_failure

__all__ = [
    "LOCK_NAME",
    "RunFolderLock",
    "check_trainer_options",
    "cpu_cores",
    "lock_run_folders",
    "requested_processes",
]

#: the lock file a fit keeps in each of its checkpoint folders
LOCK_NAME = ".lt-lightning.lock"
_GPU = ("gpu", "cuda")


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def requested_processes(devices: Any) -> int | None:
    """The processes per node ``--trainer.devices`` asks for (``None``: ``auto`` or ``-1``, Lightning's
    choice of all devices present, which is never too many)."""
    if devices is None or isinstance(devices, bool):
        return None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if text in ("auto", "-1"):
        return None
    if "," in text:
        return len([d for d in text.split(",") if d.strip()])
    try:
        return int(text)
    except ValueError:
        return None  # Lightning names the bad value itself


def _accelerator_name(accelerator: Any) -> str:
    if isinstance(accelerator, Mapping):  # a {class_path: ...} accelerator: the user's own
        return ""
    return str(accelerator or "auto").lower() if isinstance(accelerator, str) or accelerator is None else ""


def check_trainer_options(trainer: Mapping[str, Any]) -> None:
    """Refuse trainer options that would fail late or run away (one line each), before anything starts.

    Args:
        trainer: the parsed ``trainer`` section (``accelerator``, ``devices``, ``log_every_n_steps``).

    Raises:
        ValueError: an accelerator this machine has not, more processes than GPUs present or CPU cores,
            or a negative ``log_every_n_steps``.
    """
    accelerator = _accelerator_name(trainer.get("accelerator"))
    if accelerator == "tpu":
        from lightning.fabric.accelerators.xla import XLAAccelerator

        if not XLAAccelerator.is_available():
            raise ValueError(
                "--trainer.accelerator tpu: this machine has no TPU (torch_xla is not installed or finds no "
                "device); use --trainer.accelerator cpu, gpu or auto"
            )
    if accelerator in _GPU and not torch.cuda.is_available():
        raise ValueError(
            f"--trainer.accelerator {accelerator}: no CUDA GPU is available here; use --trainer.accelerator cpu "
            "or auto"
        )
    n = requested_processes(trainer.get("devices"))
    if n is not None:
        if n < 1:
            raise ValueError(f"--trainer.devices {trainer.get('devices')!r}: must be at least 1, or auto")
        gpus = torch.cuda.device_count()
        on_gpu = accelerator in _GPU or (accelerator == "auto" and gpus > 0)
        if on_gpu and n > gpus:
            raise ValueError(
                f"--trainer.devices {trainer.get('devices')}: this machine has {gpus} GPU(s); give at most "
                f"{gpus} (or auto)"
            )
        if not on_gpu and accelerator in ("cpu", "auto") and n > cpu_cores():
            raise ValueError(
                f"--trainer.devices {trainer.get('devices')}: one process per device, but this machine gives "
                f"this run {cpu_cores()} CPU core(s); give at most {cpu_cores()} with --trainer.accelerator cpu"
            )
    steps = trainer.get("log_every_n_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(
            f"--trainer.log_every_n_steps {steps!r}: must be an integer >= 1 (0 logs no training steps)"
        )


def _holder(path: str) -> tuple[int, str] | None:
    """``(pid, host)`` recorded in the lock file at ``path`` (``None``: unreadable or malformed)."""
    try:
        with open(path) as f:
            pid_text, _, host = f.read().strip().partition(" ")
        return int(pid_text), host
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunFolderLock(Callback):
    """Lock files in the run folders of one fit (see the module docstring); :meth:`release` removes them,
    as does the end of the fit (a callback's ``teardown``) and the end of the process.

    Args:
        folders: the checkpoint folders of the fit (created if missing).
    """

    def __init__(self, folders: Iterable[str]) -> None:
        self.folders = list(dict.fromkeys(os.path.abspath(f) for f in folders if f))
        self.paths: list[str] = []

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self.release()

    def acquire(self) -> RunFolderLock:
        """Take every folder's lock, or none.

        Raises:
            FileExistsError: another live fit holds a lock (its PID and host named).
            CheckpointWriteError: a folder is not writable (read-only, full, no permission).
        """
        try:
            for folder in self.folders:
                self.paths.append(self._take(folder))
        except BaseException:
            self.release()
            raise
        atexit.register(self.release)
        return self

    def _take(self, folder: str) -> str:
        path = os.path.join(folder, LOCK_NAME)
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):  # a stale lock is removed once, then taken
            try:
                os.makedirs(folder, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear(path, folder)
                continue
            except OSError as err:
                raise write_failure(os.path.join(folder, "last.ckpt"), err) from None
            with os.fdopen(fd, "w") as f:
                f.write(me + "\n")
            return path
        raise FileExistsError(f"run folder {folder} is locked ({path}) and the lock could not be taken over")

    @staticmethod
    def _refuse_or_clear(path: str, folder: str) -> None:
        holder = _holder(path)
        host = socket.gethostname()
        mine = holder is not None and holder == (os.getpid(), host)  # a fit of this process that ended
        if holder is not None and not mine and (holder[1] != host or _alive(holder[0])):
            pid, where = holder
            raise FileExistsError(
                f"run folder {folder} is in use by another fit (process {pid} on {where}, lock {path}): wait for "
                "it to end, or use another folder (--seed_everything, or the ModelCheckpoint dirpath)"
            )
        if not mine:
            rank_zero_warn(
                f"removing the stale lock {path} of a fit that is gone (process {holder and holder[0]})"
            )
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)

    def release(self) -> None:
        """Remove the lock files this process holds (idempotent)."""
        for path in self.paths:
            holder = _holder(path)
            if holder is not None and holder[0] == os.getpid():
                with contextlib.suppress(OSError):
                    os.remove(path)
        self.paths = []


def lock_run_folders(trainer: Any) -> RunFolderLock | None:
    """Lock (and so check writable) the checkpoint folders of ``trainer`` on the main process, before
    it trains; the lock is released when the process exits (or by :meth:`RunFolderLock.release`).
    DDP workers (rank > 0, started by the main process) take none."""
    if rank_zero_only.rank != 0:
        return None
    folders = [getattr(cb, "dirpath", None) for cb in trainer.checkpoint_callbacks]
    lock = RunFolderLock([f for f in folders if f and "://" not in str(f)]).acquire()
    trainer.callbacks.append(lock)  # released in its teardown, at the end of the fit
    return lock
