"""Run folders: every ``fit``/``validate``/``test``/``predict`` writes into one folder of its own.

The folder holds the resolved ``config.yaml``, the CSV log (``metrics.csv``, ``hparams.yaml``), the
checkpoints and the predictions of that run; the run ends by printing where they are. It is

- ``--run_dir DIR`` when given (the suite runner gives it), every ``ModelCheckpoint`` writing there too;
- otherwise, for ``fit``, the folder of the config's first ``ModelCheckpoint`` (the shipped configs'
  ``runs/<dataset>/<method>/seed{seed}``), and ``runs/<dataset>/<method>/seed<s>`` without one;
- for ``validate``/``test``/``predict`` without ``--run_dir``, a ``<subcommand>/`` sub-folder of that, so
  an evaluation never overwrites the config and log of the fit it evaluates.

``<dataset>``/``<method>`` are the config file's folder and name (``configs/digits_lt/crt.yaml``:
``digits_lt``/``crt``), or the datamodule's and model's class names when no config file is given.
"""

from __future__ import annotations

import os
from typing import Any

from jsonargparse import Namespace

__all__ = ["add_run_arguments", "apply_run_folder", "follows", "print_run_outputs", "run_identity"]

_CSV = "lightning.pytorch.loggers.CSVLogger"
_CSV_ALIASES = (_CSV, "lightning.pytorch.loggers.csv_logs.CSVLogger", "CSVLogger")
_WANDB = ("lt_lightning.loggers.WandbLoggerOfflineSafe", "WandbLoggerOfflineSafe")
_CHECKPOINT = (
    "lightning.pytorch.callbacks.ModelCheckpoint",
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint",
    "ModelCheckpoint",
)
#: the files a run folder may hold, in the order they are listed at the end of a run
_LISTED = ("config.yaml", "metrics.csv", "last.ckpt", "predictions.csv", "predictions.pt", "run.json")


def add_run_arguments(parser: Any) -> None:
    """The ``--run_dir`` and ``--run_group`` options of every subcommand."""
    parser.add_argument(
        "--run_dir",
        type=str | None,
        default=None,
        help="folder for everything this run writes (config.yaml, metrics.csv, checkpoints, predictions); "
        "default: the config's checkpoint folder (fit) or its <subcommand>/ sub-folder (validate/test/predict)",
    )
    parser.add_argument(
        "--run_group", type=str | None, default=None, help="W&B group of this run (the suite sets it)"
    )


def _config_file(config: Namespace) -> str | None:
    files = [os.fspath(getattr(p, "absolute", p)) for p in (config.get("config") or [])]
    files = [f for f in files if not os.path.basename(f).startswith("_")] or files
    return files[-1] if files else None


def follows(config_file: str | None) -> str | None:
    """Whose recipe a shipped config follows (``configs/RECIPES.yaml``: ``kang``, ``tang``, ``own``, …)."""
    if not config_file:
        return None
    folder = os.path.dirname(os.path.abspath(config_file))
    table = os.path.join(os.path.dirname(folder), "RECIPES.yaml")
    if not os.path.isfile(table):
        return None
    import yaml

    with open(table) as f:
        recipes = (yaml.safe_load(f) or {}).get("configs") or {}
    key = f"{os.path.basename(folder)}/{os.path.splitext(os.path.basename(config_file))[0]}"
    return (recipes.get(key) or {}).get("follows")


def run_identity(config: Namespace) -> tuple[str, str]:
    """``(dataset, method)`` of a subcommand's config: the config file's folder and name."""
    files = [f for f in [_config_file(config)] if f]
    if files:
        path = files[-1]
        return os.path.basename(os.path.dirname(path)) or "runs", os.path.splitext(os.path.basename(path))[0]
    data = str((config.get("data") or {}).get("class_path", "data")).rpartition(".")[2]
    model = str((config.get("model") or {}).get("class_path", "model")).rpartition(".")[2]
    return data, model


def _entries(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _checkpoints(config: Namespace) -> list[Namespace]:
    return [
        cb
        for cb in _entries(config.trainer.get("callbacks"))
        if isinstance(cb, Namespace) and cb.get("class_path") in _CHECKPOINT
    ]


def _seed_name(config: Namespace) -> str:
    seed = config.get("seed_everything")
    return f"seed{int(seed)}" if isinstance(seed, int) and not isinstance(seed, bool) else "run"


def _default_run_dir(config: Namespace, sub: str) -> str:
    dataset, method = run_identity(config)
    folders = [cb.init_args.get("dirpath") for cb in _checkpoints(config) if cb.get("init_args")]
    base = next((f for f in folders if f), None) or os.path.join("runs", dataset, method, _seed_name(config))
    return base if sub == "fit" else os.path.join(base, sub)


def apply_run_folder(config: Namespace, sub: str) -> str:
    """Point the subcommand's outputs at its run folder, in place, and return the folder.

    The default logger (CSV, and W&B when enabled) writes to the folder itself (no
    ``lightning_logs/version_N``); a logger the user configured with another ``save_dir`` is left alone.
    W&B runs get a name ``<dataset>/<method>/seed<s>``, the ``--run_group`` and tags (method, dataset and
    the recipe the config follows, from ``configs/RECIPES.yaml``).
    """
    explicit = config.get("run_dir")
    run_dir = explicit or _default_run_dir(config, sub)
    if explicit:
        for cb in _checkpoints(config):
            cb.init_args.dirpath = run_dir
    dataset, method = run_identity(config)
    for logger in _entries(config.trainer.get("logger")):
        if not isinstance(logger, Namespace) or logger.get("init_args") is None:
            continue
        args = logger.init_args
        if args.get("save_dir") not in (None, "runs", "."):
            continue  # the user chose where this logger writes
        args.save_dir = run_dir
        if logger.class_path in _CSV_ALIASES:
            args.name, args.version = "", ""
        elif logger.class_path in _WANDB:
            args.name = args.get("name") or f"{dataset}/{method}/{_seed_name(config)}"
            args.group = args.get("group") or config.get("run_group")
            recipe = follows(_config_file(config))
            tags = [f"method:{method}", f"dataset:{dataset}"] + ([f"follows:{recipe}"] if recipe else [])
            args.tags = args.get("tags") or tags
    return run_dir


def print_run_outputs(run_dir: str | None, extra: tuple[str, ...] = ()) -> str:
    """Print (and return) one line saying where the run's files are."""
    if not run_dir:
        return ""
    present = [n for n in (*_LISTED, *extra) if os.path.exists(os.path.join(run_dir, n))]
    ckpts = (
        sorted(n for n in os.listdir(run_dir) if n.endswith(".ckpt") and n != "last.ckpt")
        if os.path.isdir(run_dir)
        else []
    )
    listed = ", ".join(present + ckpts[:2]) or "nothing yet"
    line = f"[lt-lightning] run folder: {run_dir} ({listed})"
    print(line)
    return line
