"""Run ``lt-lightning fit`` (the real command line, :func:`lt_lightning.cli.main`) in this process,
optionally SIGKILL-ing itself at a chosen point.

    python tests/cli/fit_script.py KILL CLI_ARGS...

``KILL``: ``none``; ``epoch:E`` (after epoch E's checkpoint, at the start of the next epoch);
``save:E`` (in the middle of writing ``last.ckpt`` after epoch E: half the bytes, then SIGKILL);
``step:S`` (right after the checkpoint written at global step S, e.g. by ``every_n_train_steps``).
``CLI_ARGS`` are the arguments after ``lt-lightning fit`` (``--ckpt_path`` resumes, as for a user).
The kill is a callback appended with ``--trainer.callbacks+``, so everything else is the user's run.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import lightning as L
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lt_lightning.cli import main as lt_lightning


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Kill(L.Callback):
    """SIGKILL the process at ``spec`` (see the module docstring)."""

    def __init__(self, spec: str) -> None:
        self.kind, _, at = spec.partition(":")
        if self.kind not in ("epoch", "save", "step") or not at:
            raise ValueError(f"kill spec must be epoch:E, save:E or step:S, got {spec!r}")
        self.at = int(at)

    def on_train_epoch_start(self, trainer, pl_module):
        # ModelCheckpoint saves at the end of each training epoch (after every other callback), so the
        # start of the next epoch is the first point after epoch E's checkpoint
        if self.kind == "epoch" and trainer.current_epoch == self.at + 1:
            _die()
        if self.kind == "save" and trainer.current_epoch == self.at:
            real_save = torch.save

            def half_then_die(obj, f, *args, **kwargs):  # the configs write one file, last.ckpt
                buf = io.BytesIO()
                real_save(obj, buf, *args, **kwargs)
                data = buf.getvalue()
                f.write(data[: len(data) // 2])
                f.flush()
                _die()

            torch.save = half_then_die  # the next save (epoch `at`) dies half-way through the write

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.kind == "step" and trainer.global_step == self.at + 1:
            _die()  # the checkpoint of step `at` was written at the end of the previous batch


def main() -> None:
    kill, cli_args = sys.argv[1], sys.argv[2:]
    if kill != "none":
        Kill(kill)  # a bad spec fails here, not half-way through a run
        kill_cb = f"{{class_path: tests.cli.fit_script.Kill, init_args: {{spec: '{kill}'}}}}"
        cli_args = [*cli_args, f"--trainer.callbacks+={kill_cb}"]
    lt_lightning(["fit", *cli_args])


if __name__ == "__main__":
    main()
