"""The ``lt-lightning`` command line: ``main`` dispatches, ``lightning_cli`` is the LightningCLI subclass,
``errors`` formats user errors in one line, ``seeds`` runs a config once per seed."""

from lt_lightning.cli.errors import format_error, format_parser_error
from lt_lightning.cli.lightning_cli import (
    LINKED_OPTIONS,
    LTLightningCLI,
    build_cli,
    default_logger,
    format_metrics_table,
    parse_config,
    substitute_seed,
)
from lt_lightning.cli.main import main
from lt_lightning.cli.seeds import run_seeds

__all__ = [
    "LINKED_OPTIONS",
    "LTLightningCLI",
    "build_cli",
    "default_logger",
    "format_error",
    "format_metrics_table",
    "format_parser_error",
    "main",
    "parse_config",
    "run_seeds",
    "substitute_seed",
]
