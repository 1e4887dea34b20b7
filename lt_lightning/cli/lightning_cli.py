"""``LTLightningCLI``: LightningCLI over every lt_lightning method and datamodule.

``num_classes``, ``class_counts`` and ``shot_groups`` are linked from the datamodule into the model
(the datamodule owns them). The default logger is W&B (offline when there is no API key or network),
or a CSV logger when ``WANDB_MODE=disabled`` or wandb is unavailable.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from collections.abc import Sequence
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from lt_lightning.callbacks import FiniteGuard, PerClassTable, PredictionWriter, SaveConfigToLoggers
from lt_lightning.callbacks.signals import SaveOnSigterm
from lt_lightning.checkpoints import load_checkpoint_file
from lt_lightning.cli.guards import check_trainer_options, lock_run_folders
from lt_lightning.cli.runs import add_run_arguments, apply_run_folder, print_run_outputs
from lt_lightning.cli.tables import format_metrics_table
from lt_lightning.data import LongTailDataModule
from lt_lightning.models import LongTailModule
from lt_lightning.models.decoupled import DecoupledModule, decoupled_class
from lt_lightning.models.loading import checkpoint_class
from lt_lightning.models.migration import migrate_checkpoint
from lt_lightning.models.parts import LINKED_FACTS
from lt_lightning.progress import needs_progress_bar, progress_bar_callback

__all__ = [
    "LINKED_OPTIONS",
    "SEED_PLACEHOLDER",
    "LTLightningCLI",
    "build_cli",
    "config_class",
    "default_logger",
    "format_metrics_table",
    "parse_config",
    "substitute_seed",
]

#: model options linked from the datamodule (override them with ``--data.init_args.<name>``)
LINKED_OPTIONS = LINKED_FACTS
EVAL_SUBCOMMANDS = ("validate", "test", "predict")
#: stage-2 options a checkpoint supplies silently: its state dict holds the stage-1 weights
STAGE1_OPTIONS = ("stage1_checkpoint", "stage1_module")
#: the placeholder for ``seed_everything`` in config strings (run folders, ``stage1_checkpoint``)
SEED_PLACEHOLDER = "{seed}"


def default_logger(save_dir: str = "runs") -> dict | list[dict]:
    """The trainer's default logger(s) as LightningCLI class_path dicts: a CSV logger, and W&B beside it
    unless ``WANDB_MODE=disabled`` or wandb is unavailable (the run folder always holds ``metrics.csv``)."""
    csv = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir}}
    try:
        import wandb  # noqa: F401

        available = True
    except ImportError:
        available = False
    if not available or os.environ.get("WANDB_MODE") == "disabled":
        return csv
    wandb_logger = {
        "class_path": "lt_lightning.loggers.WandbLoggerOfflineSafe",
        "init_args": {"save_dir": save_dir, "project": "lt_lightning"},
    }
    return [csv, wandb_logger]


def substitute_seed(value: Any, seed: int | None, where: str = "") -> Any:
    """``value`` (a config: Namespace, dict, list or str) with ``{seed}`` in every string replaced by
    ``seed``; namespaces and dicts are changed in place.

    Raises:
        ValueError: a string holds ``{seed}`` but ``seed`` is ``None`` (``seed_everything: false``).
    """
    if isinstance(value, str):
        if SEED_PLACEHOLDER not in value:
            return value
        if seed is None or isinstance(seed, bool):
            raise ValueError(
                f"{where or 'a config value'}={value!r} uses {SEED_PLACEHOLDER} but seed_everything is "
                f"{seed!r}: set --seed_everything to an int"
            )
        return value.replace(SEED_PLACEHOLDER, str(int(seed)))
    if isinstance(value, Namespace):
        for key in list(vars(value)):
            setattr(value, key, substitute_seed(getattr(value, key), seed, f"{where}.{key}".lstrip(".")))
        return value
    if isinstance(value, dict):
        for key in list(value):
            value[key] = substitute_seed(value[key], seed, f"{where}.{key}".lstrip("."))
        return value
    if isinstance(value, list):
        return [substitute_seed(v, seed, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def config_class(model: Any) -> type[LongTailModule]:
    """The method class a model config (``{class_path, init_args}``) builds (a ``DecoupledModule``'s mode
    resolved). The config is the user's, so its class path is imported as the parser would."""
    module_name, _, name = str(model.get("class_path")).rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    if cls is DecoupledModule:
        cls = decoupled_class((model.get("init_args") or {}).get("mode", "crt"))
    return cls


def _plain(value: Any) -> Any:
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _class_of(path: Any) -> Any:
    module_name, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return path


def _differs(given: Any, recorded: Any) -> bool:
    """Whether a config value differs from a checkpoint's record of it, on what the record holds (a
    config also lists defaults the record may leave out, e.g. every SGD argument)."""
    g, r = _plain(given), _plain(recorded)
    if isinstance(g, dict) and isinstance(r, dict):
        if "class_path" in r and _class_of(g.get("class_path")) != _class_of(r["class_path"]):
            return True
        return any(k not in g or _differs(g[k], v) for k, v in r.items() if k != "class_path")
    return g != r


def _plain_dict_options(model: Any) -> None:
    """Make the dict-valued model options plain data again, in place.

    jsonargparse turns a ``{"class_path", "init_args"}`` mapping nested in a ``dict`` option into a
    ``Namespace`` (e.g. the optimizer inside the stage-1 record ``stage1_module`` a stage-2 checkpoint
    gives back at ``--ckpt_path``). The module keeps the value as a hyper-parameter, and a checkpoint
    holding a ``Namespace`` cannot be read weights-only: the run's next checkpoint would be refused by
    every loader. Options the parser instantiates (``optimizer``, ``lr_schedule``) are Namespaces
    themselves and stay as they are.
    """
    init_args = model.get("init_args") if isinstance(model, Namespace) else None
    if init_args is None:
        return
    for key in list(vars(init_args)):
        if isinstance(init_args[key], dict):
            init_args[key] = _plain(init_args[key])


class LTLightningCLI(LightningCLI):
    """LightningCLI with the datamodule's facts linked into the model, and:

    - ``{seed}`` in any config string (checkpoint folders, ``stage1_checkpoint``, ``--ckpt_path``) becomes
      the run's ``seed_everything``, so each seed has its own run folder and stage 2 reads the stage-1
      run of its own seed;
    - ``--ckpt_path`` rebuilds the model from the checkpoint's hyper-parameters (read weights-only, those
      of lt_lightning 0.1 migrated); ``validate``/``test``/``predict`` keep the evaluation options the
      method names (``evaluation_options``: TDE's ``alpha``, ``tau``, ``ncm_metric``, …) from the config or
      command line, refuse the ones its fitted state depends on (``fitted_options``) and a config of
      another method, and warn about any other model option replaced by the checkpoint's value (``fit``
      too: a resumed run silently ignoring a changed learning rate would mislead);
    - ``fit`` refuses to start in a checkpoint folder that already holds a previous run's ``*.ckpt``
      (resume it with ``--ckpt_path``, or replace it with ``--overwrite_run true``);
    - ``fit`` prints the final validation metrics (``--test_after_fit true`` also tests the final
      model and prints the test metrics);
    - ``validate``/``test``/``predict`` without ``--ckpt_path`` on a method that trains warn that an
      untrained model is being evaluated;
    - ``predict`` writes ``predictions.pt``/``.csv`` (:class:`~lt_lightning.callbacks.PredictionWriter`)
      unless the trainer already has a prediction writer.
    """

    def init_parser(self, **kwargs):
        # parse errors raise instead of printing usage and a nested dump: main() prints one line
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for name in LINKED_OPTIONS:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit: after training, test the final model and print the test metrics",
        )
        parser.add_argument(
            "--overwrite_run",
            type=bool,
            default=False,
            help="fit: delete the *.ckpt files a previous run left in the checkpoint folders and start "
            "afresh (default: refuse to start there)",
        )
        add_run_arguments(parser)  # --run_dir, --run_group (lt_lightning.cli.runs)

    # ---- the checkpoint's hyper-parameters over the config ---------------------------------------------
    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if not sub:
            return
        config = self.config[sub]
        self._refuse_linked_model_options(config)
        ckpt = config.get("ckpt_path")
        if ckpt and SEED_PLACEHOLDER in ckpt:  # read before the rest of the config is filled in
            ckpt = config["ckpt_path"] = substitute_seed(ckpt, config.get("seed_everything"), "ckpt_path")
        self._ckpt_path = ckpt
        if ckpt and os.path.isfile(ckpt):
            self._model_from_checkpoint(parser, sub, ckpt)
            # LightningCLI would now merge the checkpoint's raw hyper-parameters over ours (it cannot
            # migrate 0.1 records nor keep evaluation options); it finds no path, and gets it back in
            # before_instantiate_classes.
            self.config[sub]["ckpt_path"] = None

    def _refuse_linked_model_options(self, config: Namespace) -> None:
        """The linked options are overwritten by the datamodule's values: refuse a model-side setting."""
        init_args = config.model.get("init_args") if config.get("model") else None
        if init_args is None:
            return
        defaults = inspect.signature(LongTailModule.__init__).parameters
        given = {
            n: init_args[n]
            for n in LINKED_OPTIONS
            if n in init_args and _differs(init_args[n], defaults[n].default)
        }
        if given:
            detail = ", ".join(f"model.init_args.{n}={v!r}" for n, v in given.items())
            data_option = {"shot_groups": "shot_group_boundaries"}
            hint = " ".join(f"--data.init_args.{data_option.get(n, n)} ..." for n in given)
            raise ValueError(
                f"{detail}: these are linked from the datamodule and would be overwritten; set them on the "
                f"data instead ({hint})"
            )

    def _model_from_checkpoint(self, parser, sub: str, path: str) -> None:
        ckpt = migrate_checkpoint(load_checkpoint_file(path, map_location="cpu", what="--ckpt_path"))
        cls = checkpoint_class(ckpt, f"--ckpt_path {path}")
        record = dict(ckpt.get("hyper_parameters") or {})
        record = {k: v for k, v in record.items() if not k.startswith("_") and k not in LINKED_OPTIONS}
        model = self.config[sub].model
        given_cls = config_class(model)
        if given_cls is not cls:
            raise ValueError(
                f"--ckpt_path {path} is a {cls.__name__} checkpoint but the config builds a {given_cls.__name__}; "
                f"use the {cls.__name__} config (or drop --ckpt_path)"
            )
        given = dict(vars(model.get("init_args") or Namespace()))
        changed = {
            k: (given[k], record[k])
            for k in given
            if k in record and k not in STAGE1_OPTIONS and _differs(given[k], record[k])
        }
        refused = {k: v for k, v in changed.items() if k in cls.fitted_options}
        if sub in EVAL_SUBCOMMANDS and refused:
            detail = ", ".join(
                f"{k}={_plain(g)!r} (checkpoint: {_plain(c)!r})" for k, (g, c) in refused.items()
            )
            raise ValueError(
                f"{sub} --ckpt_path {path}: {detail} cannot be changed on a checkpoint (its fitted state "
                "depends on them); evaluate without --ckpt_path to fit them afresh"
            )
        honoured = {
            k: v for k, v in changed.items() if sub in EVAL_SUBCOMMANDS and k in cls.evaluation_options
        }
        for key, (value, _) in honoured.items():
            record[key] = value.as_dict() if isinstance(value, Namespace) else value
        if honoured:
            detail = ", ".join(
                f"{k}={_plain(g)!r} (checkpoint: {_plain(c)!r})" for k, (g, c) in honoured.items()
            )
            print(f"[lt-lightning] {sub}: evaluation options from the config/command line: {detail}")
        ignored = {k: v for k, v in changed.items() if k not in honoured}
        if ignored:
            detail = ", ".join(f"{k}={_plain(g)!r} -> {_plain(c)!r}" for k, (g, c) in ignored.items())
            options = ", ".join(cls.evaluation_options) or "none"
            after = (
                f". Evaluation options of {cls.__name__}: {options}; the data's shot-group options "
                "(--data.init_args.many_threshold/few_threshold) also apply."
                if sub in EVAL_SUBCOMMANDS
                else " (a resumed run continues the checkpoint's model, optimizer and schedule; to train with "
                "other values start a new run)."
            )
            rank_zero_warn(
                f"{sub} --ckpt_path {path}: these model options are replaced by the checkpoint's values "
                f"(they define the trained model): {detail}{after}"
            )
        class_path = f"{cls.__module__}.{cls.__qualname__}"
        self.config = parser.parse_object(
            {sub: {"model": {"class_path": class_path, "init_args": record}}}, self.config
        )

    def before_instantiate_classes(self) -> None:
        config = self._complete_config()
        check_trainer_options(config.get("trainer") or {})
        #: the folder of everything this run writes (lt_lightning.cli.runs)
        self.run_dir = apply_run_folder(config, self.config.get("subcommand") or "fit")
        if "verbose" in config:  # validate/test print our 4-digit table (after_validate/after_test)
            config["verbose"] = False

    def _complete_config(self, seed_known: bool = True) -> Namespace:
        """The subcommand's config with ``--ckpt_path`` back, ``{seed}`` filled in (unless the seed is not
        an int yet and ``seed_known`` is False) and plain dict options."""
        sub = self.config.get("subcommand")
        config = self.config[sub] if sub else self.config
        if sub and getattr(self, "_ckpt_path", None):
            config["ckpt_path"] = self._ckpt_path
        seed = config.get("seed_everything")
        if seed_known or (isinstance(seed, int) and not isinstance(seed, bool)):
            substitute_seed(config, seed)
        _plain_dict_options(config.get("model"))
        return config

    def instantiate_trainer(self, **kwargs):
        config = self.config_init.get(self.subcommand) if self.subcommand else self.config_init
        if needs_progress_bar((config or {}).get("trainer")):  # loss/acc on a terminal, lines in a file
            defaults = self.trainer_defaults.get("callbacks") or []
            self.trainer_defaults = {
                **self.trainer_defaults,
                "callbacks": [*defaults, progress_bar_callback()],
            }
        return super().instantiate_trainer(**kwargs)

    # ---- runs -------------------------------------------------------------------------------------------
    def _warn_if_untrained(self, sub: str) -> None:
        if self.config_init[sub].get("ckpt_path") or not type(self.model).trains:
            return
        if any(p.requires_grad for p in self.model.parameters()):
            message = (
                f"\n{'!' * 100}\n  lt-lightning {sub} without --ckpt_path: the {type(self.model).__name__} has "
                "trainable weights that were never trained in this run;\n  the numbers below score an "
                f"UNTRAINED model. Pass --ckpt_path <run>/last.ckpt to evaluate a trained one.\n{'!' * 100}"
            )
            rank_zero_warn(message)

    def before_fit(self) -> None:
        """Refuse (or, with ``--overwrite_run``, clear) checkpoint folders holding a previous run."""
        lock_run_folders(self.trainer)  # one fit per run folder, writable
        options = self.config_init["fit"]
        if options.get("ckpt_path"):
            return  # resuming the run that is there
        for callback in self.trainer.checkpoint_callbacks:
            folder = getattr(callback, "dirpath", None)
            if not folder or not os.path.isdir(folder):
                continue
            old = sorted(name for name in os.listdir(folder) if name.endswith(".ckpt"))
            if not old:
                continue
            if not options.get("overwrite_run"):
                raise FileExistsError(
                    f"{folder} holds checkpoints of a previous run ({', '.join(old[:3])}"
                    f"{', …' if len(old) > 3 else ''}): resume it with --ckpt_path {os.path.join(folder, 'last.ckpt')}, "
                    "replace it with --overwrite_run true, or use another seed (--seed_everything) or folder"
                )
            if self.trainer.is_global_zero:
                for name in old:
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(folder, name))

    def before_validate(self) -> None:
        self._warn_if_untrained("validate")

    def before_test(self) -> None:
        self._warn_if_untrained("test")

    def before_predict(self) -> None:
        self._warn_if_untrained("predict")
        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())

    def after_fit(self) -> None:
        trainer = self.trainer
        #: the metrics at the end of fit (validation, NC) and, with ``test_after_fit``, of the test
        self.final_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        if trainer.is_global_zero:
            table = format_metrics_table(self.final_metrics, "val", "final validation metrics")
            if table:
                print("\n" + table)
        if self.config_init["fit"].get("test_after_fit"):
            trainer.test(self.model, datamodule=self.datamodule, verbose=False)
            test = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
            self.final_metrics.update(test)
            if trainer.is_global_zero:
                print("\n" + format_metrics_table(test, "test", "test metrics (final model)"))
        self._print_run_folder()

    def after_validate(self) -> None:
        self._print_eval_table("val", "validation metrics")
        self._print_run_folder()

    def after_test(self) -> None:
        self._print_eval_table("test", "test metrics")
        self._print_run_folder()

    def _print_eval_table(self, split: str, title: str) -> None:
        metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if v.numel() == 1}
        table = format_metrics_table(metrics, split, title)
        if table and self.trainer.is_global_zero:
            print("\n" + table)

    def after_predict(self) -> None:
        self._print_run_folder()

    def _print_run_folder(self) -> None:
        if self.trainer.is_global_zero:
            print_run_outputs(getattr(self, "run_dir", None))


def _cli(cls: type[LTLightningCLI], args: Sequence[str] | None, run: bool) -> LTLightningCLI:
    return cls(
        LongTailModule,
        LongTailDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": default_logger(),
            "callbacks": [FiniteGuard(), PerClassTable(), SaveOnSigterm()],
            "plugins": [{"class_path": "lt_lightning.checkpoints.AtomicCheckpointIO"}],
        },
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> LTLightningCLI:
    """Build (and by default run) the CLI; ``args`` as on the command line."""
    return _cli(LTLightningCLI, args, run)


class _Parsed(Exception):
    def __init__(self, config: Namespace) -> None:
        super().__init__("parsed")
        self.config = config


class _ParseOnly(LTLightningCLI):
    """Stops once the config is parsed: nothing is seeded, built or run."""

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        raise _Parsed(self._complete_config(seed_known=False))


def parse_config(args: Sequence[str]) -> dict[str, Any]:
    """The config ``lt-lightning ARGS`` runs, as plain data, without seeding, building or running anything:
    the config files with their includes (``config: _base.yaml``), the defaults and the overrides applied
    and ``{seed}`` filled in (when ``seed_everything`` is an int); the subcommand's section (``args[0]`` is
    ``fit``, ``validate``, ``test`` or ``predict``). Read a config this way, not with a YAML parser: a
    composed config file holds only what differs from the blocks it includes.

    Raises:
        ArgumentError: the arguments do not parse (as on the command line).
    """
    try:
        _cli(_ParseOnly, args, run=True)
    except _Parsed as parsed:
        return _plain(parsed.config)
    raise AssertionError("the CLI did not stop before instantiating")  # pragma: no cover
