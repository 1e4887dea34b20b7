"""``lt-lightning``: LightningCLI over every lt_lightning method and datamodule.

    lt-lightning fit -c configs/digits_lt/joint.yaml
    lt-lightning test -c configs/digits_lt/tau_norm.yaml --model.init_args.stage1_checkpoint run.ckpt
    lt-lightning test -c configs/digits_lt/tde.yaml --ckpt_path runs/digits_lt/tde/seed0/last.ckpt --model.init_args.alpha 3
    lt-lightning predict -c configs/digits_lt/joint.yaml --ckpt_path runs/digits_lt/joint/seed0/last.ckpt
    lt-lightning seeds -c configs/digits_lt/joint.yaml --seeds 0 1 2 --out runs/seeds/joint

``num_classes``, ``class_counts`` and the shot-group thresholds are linked from the datamodule into the
model. The default logger is W&B (offline when there is no API key or network), or a CSV logger when
``WANDB_MODE=disabled`` or wandb is unavailable.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
import sys
from argparse import ArgumentError
from collections.abc import Mapping, Sequence
from typing import Any

from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import MisconfigurationException

import lt_lightning.callbacks
import lt_lightning.data.datamodules
import lt_lightning.models  # noqa: F401
from lt_lightning.callbacks.finite import FiniteGuard, NonFiniteError
from lt_lightning.callbacks.predictions import PredictionWriter
from lt_lightning.callbacks.wandb_config import SaveConfigToLoggers
from lt_lightning.data.datamodules import LongTailDataModule
from lt_lightning.models.base import LongTailModule

__all__ = [
    "EVAL_OPTIONS",
    "LINKED_OPTIONS",
    "LTLightningCLI",
    "build_cli",
    "default_logger",
    "format_error",
    "format_metrics_table",
    "format_parser_error",
    "main",
    "substitute_seed",
]

#: model options linked from the datamodule (override them with ``--data.init_args.<name>``)
LINKED_OPTIONS = ("num_classes", "class_counts", "many_threshold", "few_threshold")
#: model options filled from the datamodule: ``{model option: datamodule attribute}``
LINKED_TARGETS = {**{n: n for n in LINKED_OPTIONS}, "shot_groups": "explicit_shot_groups"}
#: model options that only change evaluation: honoured over a checkpoint's saved value at test/validate/predict
EVAL_OPTIONS = ("alpha", "alpha_grid", "tau", "tau_grid", "ncm_metric")
#: evaluation options whose checkpoint state cannot follow an override (NCM centroids are fitted with them)
REFUSED_EVAL_OPTIONS = ("ncm_center", "ncm_normalize", "mode")
#: the rows of the end-of-run metric tables (``{split}`` is val or test)
SUMMARY_KEYS = ("acc", "balanced_acc", "many_acc", "medium_acc", "few_acc", "loss")
EVAL_SUBCOMMANDS = ("validate", "test", "predict")
#: stage-2 options a checkpoint supplies silently: its state dict holds the stage-1 weights
STAGE1_OPTIONS = ("stage1_checkpoint", "stage1_module")
#: the placeholder for ``seed_everything`` in config strings (run folders, ``stage1_checkpoint``)
SEED_PLACEHOLDER = "{seed}"


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


def format_metrics_table(metrics: Mapping[str, Any], split: str, title: str | None = None) -> str:
    """A small text table of the ``{split}/…`` summary metrics (and the final NC1) in ``metrics``."""
    keys = [f"{split}/{k}" for k in SUMMARY_KEYS] + [f"nc/{s}/nc1" for s in ("train", split)]
    rows = []
    for key in dict.fromkeys(keys):
        if key in metrics:
            value = float(metrics[key])
            rows.append((key, "nan" if math.isnan(value) else f"{value:.4f}"))
    if not rows:
        return ""
    width = max(len(k) for k, _ in rows)
    head = title or f"final {split} metrics"
    lines = [head, "-" * max(len(head), width + 10)]
    lines += [f"{k:<{width}}  {v:>8}" for k, v in rows]
    return "\n".join(lines)


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


class LTLightningCLI(LightningCLI):
    """LightningCLI with the datamodule's facts linked into the model, and:

    - ``{seed}`` in any config string (checkpoint folders, ``stage1_checkpoint``) becomes the run's
      ``seed_everything``, so each seed has its own run folder and stage 2 reads the stage-1 run of its
      own seed;
    - ``fit`` refuses to start in a checkpoint folder that already holds a previous run's ``*.ckpt``
      (resume it with ``--ckpt_path``, or replace it with ``--overwrite_run true``), so a stage 2 never
      reads a stale ``last.ckpt`` next to ``last-v1.ckpt``;

    - ``fit`` prints the final validation metrics (``--test_after_fit true`` also tests the final
      model and prints the test metrics);
    - ``validate``/``test``/``predict`` with ``--ckpt_path`` keep the evaluation options given in the
      config or on the command line (TDE's ``alpha``, ``tau``, ``ncm_metric``, …; see
      :data:`EVAL_OPTIONS`) instead of the checkpoint's, refuse the ones the checkpoint's state depends
      on, and warn about any other model option replaced by the checkpoint's value;
    - ``validate``/``test``/``predict`` without ``--ckpt_path`` on a model with trainable weights warn
      that an untrained model is being evaluated;
    - ``predict`` writes ``predictions.pt``/``.csv`` (:class:`~lt_lightning.callbacks.PredictionWriter`)
      unless the trainer already has a prediction writer.
    """

    def init_parser(self, **kwargs):
        # parse errors raise instead of printing usage and a nested dump: main() prints one line
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        for target, source in LINKED_TARGETS.items():
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")
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

    # ---- evaluation options over a checkpoint's hyper-parameters ---------------------------------------
    def _refuse_linked_model_options(self) -> None:
        """The linked options are overwritten by the datamodule's values: refuse a model-side setting."""
        sub = self.config.get("subcommand")
        config = self.config[sub] if sub else self.config
        init_args = config.model.get("init_args") if config.get("model") else None
        if init_args is None:
            return
        params = inspect.signature(LongTailModule.__init__).parameters
        given = {
            n: init_args[n]
            for n in LINKED_TARGETS
            if n in init_args and _differs(init_args[n], params[n].default)
        }
        if given:
            detail = ", ".join(f"model.init_args.{n}={v!r}" for n, v in given.items())
            data_option = {"shot_groups": "shot_group_boundaries"}
            hint = " ".join(f"--data.init_args.{data_option.get(n, n)} {v}" for n, v in given.items())
            raise ValueError(
                f"{detail}: these are linked from the datamodule and would be overwritten; set them on the "
                f"data instead ({hint})"
            )

    def _parse_ckpt_path(self) -> None:
        self._refuse_linked_model_options()
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if ckpt and SEED_PLACEHOLDER in ckpt:  # read before the rest of the config is filled in
            ckpt = self.config[sub]["ckpt_path"] = substitute_seed(
                ckpt, self.config[sub].get("seed_everything"), "ckpt_path"
            )
        if sub not in EVAL_SUBCOMMANDS or not ckpt or not os.path.isfile(ckpt):
            return super()._parse_ckpt_path()
        given = dict(vars(self.config[sub].model.get("init_args") or {}))
        super()._parse_ckpt_path()  # Lightning replaces the model options with the checkpoint's
        init_args = self.config[sub].model.get("init_args")
        if init_args is None:
            return
        saved = dict(vars(init_args))
        changed = {
            k: (given[k], saved[k])
            for k in given
            if k in saved and k not in (*LINKED_TARGETS, *STAGE1_OPTIONS) and _differs(given[k], saved[k])
        }
        refused = {k: v for k, v in changed.items() if k in REFUSED_EVAL_OPTIONS}
        if refused:
            detail = ", ".join(f"{k}={g!r} (checkpoint: {c!r})" for k, (g, c) in refused.items())
            raise ValueError(
                f"{sub} --ckpt_path {ckpt}: {detail} cannot be changed on a checkpoint (its fitted state "
                "depends on them); evaluate without --ckpt_path to fit them afresh"
            )
        for key, (value, _) in changed.items():
            if key in EVAL_OPTIONS:
                init_args[key] = value
        ignored = {k: v for k, v in changed.items() if k not in EVAL_OPTIONS}
        honoured = {k: v for k, v in changed.items() if k in EVAL_OPTIONS}
        if honoured:
            detail = ", ".join(f"{k}={g!r} (checkpoint: {c!r})" for k, (g, c) in honoured.items())
            print(f"[lt-lightning] {sub}: evaluation options from the config/command line: {detail}")
        if ignored:
            detail = ", ".join(f"{k}={g!r} -> {c!r}" for k, (g, c) in ignored.items())
            rank_zero_warn(
                f"{sub} --ckpt_path {ckpt}: these model options are replaced by the checkpoint's values "
                f"(they define the trained model): {detail}. Only {', '.join(EVAL_OPTIONS)} and the data's "
                "thresholds (--data.init_args.many_threshold/few_threshold) can be changed at evaluation."
            )

    def _warn_if_untrained(self, sub: str) -> None:
        if self.config_init[sub].get("ckpt_path"):
            return
        if any(p.requires_grad for p in self.model.parameters()):
            message = (
                f"\n{'!' * 100}\n  lt-lightning {sub} without --ckpt_path: the {type(self.model).__name__} has "
                "trainable weights that were never trained in this run;\n  the numbers below score an "
                f"UNTRAINED model. Pass --ckpt_path <run>/last.ckpt to evaluate a trained one.\n{'!' * 100}"
            )
            rank_zero_warn(message)

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        config = self.config[sub] if sub else self.config
        substitute_seed(config, config.get("seed_everything"))

    def before_fit(self) -> None:
        """Refuse (or, with ``--overwrite_run``, clear) checkpoint folders holding a previous run."""
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
        from lightning.pytorch.callbacks import BasePredictionWriter

        if not any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            self.trainer.callbacks.append(PredictionWriter())

    # ---- end-of-fit summary -----------------------------------------------------------------------------
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


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) != list(b)
    return a != b


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
    FileExistsError,
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
    """Entry point of the ``lt-lightning`` console script (``seeds`` is :mod:`lt_lightning.seeds`).

    A user error (bad option value, missing file, a run that diverged) prints one line,
    ``lt-lightning: error: ...``, and exits with status 2 (command line) or 1 (anything later); set
    ``LT_LIGHTNING_TRACEBACK=1`` to see the traceback. Unexpected errors keep their traceback.
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv[:1] == ["seeds"]:
            from lt_lightning.seeds import run_seeds

            run_seeds(argv[1:])
            return
        build_cli(args)  # None: LightningCLI reads sys.argv itself (passing both would warn)
    except _USER_ERRORS as err:
        if os.environ.get("LT_LIGHTNING_TRACEBACK") == "1":
            raise
        if not isinstance(err, ArgumentError) and not isinstance(_root_cause(err), _USER_ERRORS):
            raise
        print(f"lt-lightning: error: {format_error(err)}", file=sys.stderr)
        sys.exit(2 if isinstance(err, ArgumentError) else 1)


if __name__ == "__main__":
    main()
