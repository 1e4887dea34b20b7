"""``lt-lightning``: the command line's entry point; it dispatches and prints user errors in one line.

lt-lightning fit -c configs/digits_lt/joint.yaml
lt-lightning test -c configs/digits_lt/tau_norm.yaml
lt-lightning test -c configs/digits_lt/tde.yaml --ckpt_path runs/digits_lt/tde/seed0/last.ckpt --model.init_args.alpha 3
lt-lightning predict -c configs/digits_lt/joint.yaml --ckpt_path runs/digits_lt/joint/seed0/last.ckpt
lt-lightning seeds -c configs/digits_lt/joint.yaml --seeds 0 1 2 --out runs/seeds/joint
lt-lightning suite --configs configs/digits_lt/joint.yaml configs/digits_lt/crt.yaml --seeds 0 1 2 --out runs/suite
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentError
from collections.abc import Sequence

from lt_lightning.cli.errors import USER_ERRORS, format_error, root_cause
from lt_lightning.cli.lightning_cli import build_cli
from lt_lightning.cli.seeds import run_seeds
from lt_lightning.cli.suite import run_suite
from lt_lightning.progress import quiet_third_party

__all__ = ["main"]

#: the commands beside LightningCLI's, as ``--help`` lists them
EXTRA_COMMANDS = (
    ("seeds", "fit and test one config once per seed; a summary table (lt-lightning seeds --help)"),
    (
        "suite",
        "configs x seeds, stage 1 shared, local or SLURM; summary table and figure (lt-lightning suite --help)",
    ),
)


def _close_process_group() -> None:
    """Destroy a DDP process group Lightning left open: exiting with gloo's threads still alive can
    abort the process ("terminate called without an active exception", status -6) after a finished run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _top_level_help() -> str:
    lines = ["", "more commands:"]
    lines += [f"  {name:<10} {text}" for name, text in EXTRA_COMMANDS]
    lines.append("  --version  print the lt_lightning version")
    return "\n".join(lines)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lt-lightning`` console script: ``fit|validate|test|predict`` (LightningCLI),
    ``seeds`` (:mod:`lt_lightning.cli.seeds`), ``suite`` (:mod:`lt_lightning.cli.suite`) and ``--version``.

    A user error (bad option value, missing file, a run that diverged) prints one line,
    ``lt-lightning: error: ...``, and exits with status 2 (command line) or 1 (anything later); set
    ``LT_LIGHTNING_TRACEBACK=1`` to see the traceback. Unexpected errors keep their traceback.
    """
    argv = list(sys.argv[1:] if args is None else args)
    quiet_third_party()
    if argv[:1] == ["--version"]:
        from importlib.metadata import version  # the package's own version, without importing it here

        print(f"lt-lightning {version('lt_lightning')}")
        return
    try:
        if argv[:1] == ["seeds"]:
            run_seeds(argv[1:])
            return
        if argv[:1] == ["suite"]:
            run_suite(argv[1:])
            return
        if not argv or argv[0] in ("-h", "--help"):
            try:
                build_cli(args)
            finally:
                print(_top_level_help())
            return
        build_cli(args)  # None: LightningCLI reads sys.argv itself (passing both would warn)
        _close_process_group()
    except USER_ERRORS as err:
        if os.environ.get("LT_LIGHTNING_TRACEBACK") == "1":
            raise
        if not isinstance(err, ArgumentError) and not isinstance(root_cause(err), USER_ERRORS):
            raise
        print(f"lt-lightning: error: {format_error(err)}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ArgumentError) else 1)
