"""``lt-lightning``: LightningCLI over every lt_lightning method and datamodule.

    lt-lightning fit -c configs/digits_lt/joint.yaml
    lt-lightning test -c configs/digits_lt/tau_norm.yaml --model.init_args.stage1_checkpoint run.ckpt

``num_classes``, ``class_counts`` and the shot-group thresholds are linked from the datamodule into the
model. The default logger is W&B (offline when there is no API key or network), or a CSV logger when
``WANDB_MODE=disabled`` or wandb is unavailable.
"""

from __future__ import annotations

import os
import re
import sys
from argparse import ArgumentError
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

import lt_lightning.callbacks
import lt_lightning.data.datamodules
import lt_lightning.models  # noqa: F401
from lt_lightning.callbacks.finite import FiniteGuard, NonFiniteError
from lt_lightning.callbacks.wandb_config import SaveConfigToLoggers
from lt_lightning.data.datamodules import LongTailDataModule
from lt_lightning.models.base import LongTailModule

__all__ = ["LTLightningCLI", "build_cli", "default_logger", "format_error", "format_parser_error", "main"]


def default_logger(save_dir: str = "runs") -> dict:
    """The trainer's default logger as a LightningCLI class_path dict."""
    try:
        import wandb  # noqa: F401

        available = True
    except ImportError:
        available = False
    if not available or os.environ.get("WANDB_MODE") == "disabled":
        return {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir}}
    return {
        "class_path": "lt_lightning.loggers.WandbLoggerOfflineSafe",
        "init_args": {"save_dir": save_dir, "project": "lt_lightning"},
    }


class LTLightningCLI(LightningCLI):
    def init_parser(self, **kwargs):
        # parse errors raise instead of printing usage and a nested dump: main() prints one line
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for name in ("num_classes", "class_counts", "many_threshold", "few_threshold"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> LTLightningCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line."""
    return LTLightningCLI(
        LongTailModule,
        LongTailDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": default_logger(),
            "callbacks": [FiniteGuard()],
            "plugins": [{"class_path": "lt_lightning.checkpoints.AtomicCheckpointIO"}],
        },
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


#: errors that are the user's (bad option, missing file, diverged run): one line, no traceback
_USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    NonFiniteError,
    MisconfigurationException,
    ArgumentError,
)
_STRUCTURAL = re.compile(
    r"^(- )?(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value|"
    r"Expected a <class 'NoneType'>|Problem with given class_path|Parser key|Not a valid subclass|"
    r"Validation failed|Key \"[^\"]*\" is required but not included)"
)


def format_parser_error(message: str) -> str:
    """One line from a jsonargparse error: the option (``--data.init_args.sampler``), the bad value and
    what is valid, without the usage text and the namespace dump."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    option = ""
    if keys:
        top, nested = keys[0], keys[1:]
        if top in ("model", "data") and nested:
            option = f"--{top}.init_args.{'.'.join(nested)}"
        else:
            option = "--" + ".".join(keys)
    lines = [re.sub(r'^Parser key "[^"]+":\s*', "", ln.strip()) for ln in message.splitlines()]
    lines = [ln for ln in lines if ln]
    given = [ln.removeprefix("Given value: ") for ln in lines if ln.startswith("Given value: ")]
    causes = [ln.removeprefix("- ") for ln in lines if not _STRUCTURAL.match(ln.removeprefix("- "))]
    cause = causes[0] if causes else lines[-1] if lines else message
    literal = re.match(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)$", cause)
    typed = re.match(r"Expected a <class '([\w.]+)'>(?:\. Got value: (.*))?$", cause)
    if literal:
        valid = ", ".join(v.strip().strip("'\"") for v in literal.group(1).split(","))
        cause = f"got {literal.group(2)!r}; valid: {valid}"
    elif typed:
        value = typed.group(2) or (given[0] if given and "(" not in given[0] else None)
        cause = f"expected {typed.group(1)}" + (f", got {value!r}" if value is not None else "")
    return f"{option}: {cause}" if option else cause


def _root_cause(err: BaseException) -> BaseException:
    seen = {id(err)}
    while err.__cause__ is not None and id(err.__cause__) not in seen:
        err = err.__cause__
        seen.add(id(err))
    return err


def format_error(err: BaseException) -> str:
    """The one-line message ``lt-lightning`` prints for ``err`` (without the ``error:`` prefix)."""
    if isinstance(err, ArgumentError):
        return format_parser_error(str(err))
    root = _root_cause(err)
    text = " ".join(str(root).split()) or type(root).__name__
    # jsonargparse wraps errors raised while instantiating a class; name the class
    wrapper = re.search(r"class_path='([\w.]+)'", str(err)) if root is not err else None
    where = f"{wrapper.group(1).rpartition('.')[2]}: " if wrapper else ""
    kind = "" if isinstance(root, (ValueError, TypeError, FileNotFoundError)) else f"{type(root).__name__}: "
    return f"{where}{kind}{text}"


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``lt-lightning`` console script.

    A user error (bad option value, missing file, a run that diverged) prints one line,
    ``lt-lightning: error: ...``, and exits with status 2 (command line) or 1 (anything later); set
    ``LT_LIGHTNING_TRACEBACK=1`` to see the traceback. Unexpected errors keep their traceback.
    """
    try:
        build_cli(args)
    except _USER_ERRORS as err:
        if os.environ.get("LT_LIGHTNING_TRACEBACK") == "1":
            raise
        if not isinstance(err, ArgumentError) and not isinstance(_root_cause(err), _USER_ERRORS):
            raise
        print(f"lt-lightning: error: {format_error(err)}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ArgumentError) else 1)


if __name__ == "__main__":
    main()
