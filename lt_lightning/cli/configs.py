"""A config file as the CLI reads it: shared blocks included, dotted keys applied, nothing instantiated.

The shipped configs are composed with jsonargparse's own mechanisms: a ``config: _base.yaml`` key
includes a dataset's shared blocks (seed, trainer, data), and dotted keys (``trainer.max_epochs: 10``,
``data.init_args.sampler: class``) change single values of them. :func:`resolve_config` returns the
result (every option, defaults included) by running the CLI's own parser, so the runners, the recipe
table's tests and users see exactly what ``lt-lightning fit -c FILE --print_config`` prints.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import yaml
from lightning.pytorch.utilities.seed import isolate_rng

from lt_lightning.cli.lightning_cli import LTLightningCLI
from lt_lightning.data import LongTailDataModule
from lt_lightning.models import LongTailModule

__all__ = ["resolve_config"]


class _Parsed(Exception):
    """Raised by :class:`_ParseOnly` to stop LightningCLI after parsing."""


class _ParseOnly(LTLightningCLI):
    """The CLI's parser, stopped before any class is instantiated (a public hook of LightningCLI)."""

    def before_instantiate_classes(self) -> None:
        raise _Parsed(self)


@functools.cache
def _parser(subcommand: str) -> Any:
    with isolate_rng():  # LightningCLI seeds the global RNGs before the hook
        try:
            _ParseOnly(
                LongTailModule,
                LongTailDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                save_config_callback=None,
                auto_configure_optimizers=False,
                # any valid choice: the parser is what is kept (parse_args below replaces everything)
                args=[
                    subcommand,
                    "--model=JointModule",
                    "--data=SyntheticLTDataModule",
                    "--seed_everything=0",
                ],
            )
        except _Parsed as stop:
            return stop.args[0].parser
    raise RuntimeError("LightningCLI did not reach before_instantiate_classes")  # pragma: no cover


def resolve_config(
    path: str | os.PathLike, overrides: Sequence[str] = (), subcommand: str = "fit"
) -> dict[str, Any]:
    """The ``subcommand`` configuration ``lt-lightning SUBCOMMAND -c PATH OVERRIDES`` would run, as plain data
    (``seed_everything``, ``trainer``, ``model``, ``data``, …; the ``config`` key left out).

    Raises:
        FileNotFoundError: no file at ``path``.
        argparse.ArgumentError: the file or an override does not parse (as on the command line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config not found: {os.fspath(path)!r}")
    parser = _parser(subcommand)
    cfg = parser.parse_args([subcommand, "-c", os.fspath(path), *overrides])
    out = yaml.safe_load(parser.dump(cfg, skip_validation=True))[subcommand]
    out.pop("config", None)
    return out
