"""Stop on SIGTERM with a checkpoint at the current step and a failing exit status.

SIGTERM is what SLURM, Kubernetes and ``timeout`` send before they kill a job. Lightning 2.6 already
catches it (its signal connector): it sets ``trainer.received_sigterm``, forwards the signal to the DDP
workers it launched, and the loops raise ``SIGTERMException`` after the batch in flight, a
``SystemExit`` whose status is **0** — the scheduler records a success and the work since the last
checkpoint is lost. :class:`SaveOnSigterm` handles that exception (Lightning's ``on_exception`` hook):
it writes a resumable checkpoint at the step just trained (atomically, through the trainer's checkpoint
IO), prints the command line that resumes it, and turns the exit status into 143 (128 + SIGTERM).

On SLURM with ``auto_requeue`` (Lightning's ``SLURMEnvironment``, the default there), Lightning also
handles the requeue signal (``--signal=SIGUSR1@90`` in the batch script): it saves
``hpc_ckpt_<n>.ckpt`` in the root folder and requeues the job, whose rerun resumes from it by itself.
This callback adds nothing to that path; it covers the SIGTERM that ends a job either way.
"""

from __future__ import annotations

import os
import shlex
import sys

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["SIGTERM_EXIT_STATUS", "SaveOnSigterm"]

#: the exit status of a fit stopped by SIGTERM (the shell's 128 + signal number)
SIGTERM_EXIT_STATUS = 143


class SaveOnSigterm(Callback):
    """On SIGTERM during ``fit``: checkpoint at the current step, print how to resume, exit 143.

    Args:
        filename: the checkpoint's file name, in the folder of the trainer's first ``ModelCheckpoint``
            (its ``dirpath``; the trainer's root folder without one). ``last.ckpt`` by default: the file
            ``--ckpt_path last`` and the printed command resume.
    """

    def __init__(self, filename: str = "last.ckpt") -> None:
        if not filename or os.sep in filename:
            raise ValueError(f"filename must be a file name (no folder), got {filename!r}")
        self.filename = filename
        #: the checkpoint written at the signal (None until then)
        self.saved_path: str | None = None

    def checkpoint_path(self, trainer: Trainer) -> str:
        """Where the checkpoint at the signal goes."""
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or trainer.default_root_dir
        return os.path.join(str(folder), self.filename)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(
            path, weights_only=False
        )  # every rank: the strategy writes on rank 0 and synchronises
        self.saved_path = path
        exception.code = SIGTERM_EXIT_STATUS
        if trainer.is_global_zero:
            print(
                f"\nlt-lightning: stopped by SIGTERM at epoch {trainer.current_epoch}, step {trainer.global_step}; "
                f"checkpoint {path}. Resume with the same command and --ckpt_path {shlex.quote(path)}",
                file=sys.stderr,
                flush=True,
            )
