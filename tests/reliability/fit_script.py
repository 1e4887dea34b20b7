"""Run ``lt-lightning fit`` in this process, optionally SIGKILL-ing itself at a chosen point.

    python tests/reliability/fit_script.py KILL CKPT_PATH CLI_ARGS...

``KILL``: ``none``; ``epoch:E`` (after epoch E's checkpoint, at the start of the next epoch);
``save:E`` (in the middle of writing ``last.ckpt`` after epoch E: half the bytes, then SIGKILL);
``step:S`` (right after the checkpoint written at global step S, e.g. by ``every_n_train_steps``).
``CKPT_PATH``: ``-`` or a checkpoint to resume from (``--ckpt_path``).
``LT_TEST_STEP_CKPT=N`` in the environment adds a ModelCheckpoint every N steps into ``<dirpath>/steps``.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from lt_lightning.cli import build_cli


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Kill(L.Callback):
    def __init__(self, spec: str) -> None:
        self.kind, _, at = spec.partition(":")
        self.at = int(at) if at else -1

    def on_train_epoch_start(self, trainer, pl_module):
        # ModelCheckpoint saves at the end of each training epoch (after every other callback), so the
        # start of the next epoch is the first point after epoch E's checkpoint
        if self.kind == "epoch" and trainer.current_epoch == self.at + 1:
            _die()
        if self.kind == "save" and trainer.current_epoch == self.at:
            real_save = torch.save
            calls = []

            def half_then_die(obj, f, *args, **kwargs):
                calls.append(1)
                if len(calls) == 1:  # epoch file first, then last.ckpt: die while writing last.ckpt
                    return real_save(obj, f, *args, **kwargs)
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
    kill, ckpt, cli_args = sys.argv[1], sys.argv[2], sys.argv[3:]
    cli = build_cli(cli_args, run=False)
    every = int(os.environ.get("LT_TEST_STEP_CKPT", "0"))
    if every:  # mid-epoch checkpoints into <per-epoch dirpath>/steps, as the long-epoch configs do
        first = next(cb for cb in cli.trainer.callbacks if isinstance(cb, ModelCheckpoint))
        steps = ModelCheckpoint(
            dirpath=os.path.join(first.dirpath, "steps"), every_n_train_steps=every, save_last=True
        )
        cli.trainer.callbacks.insert(0, steps)
    if kill != "none":
        cli.trainer.callbacks.append(Kill(kill))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=None if ckpt == "-" else ckpt)


if __name__ == "__main__":
    main()
