"""Hyper-parameters of checkpoints written by lt_lightning 0.1 (before the parts were injected).

Version 0.1 named its optimizer and schedule by flat options (``optimizer: "sgd"``, ``lr``,
``momentum``, ``lr_schedule: "cosine"``, ``warmup_epochs``, …), mixup by ``mixup_alpha``, and gave the
model the shot thresholds. :func:`migrate_hparams` rewrites such a record into today's form, so every
load path (``--ckpt_path``, ``stage1_checkpoint``, ``load_from_checkpoint``) reads old checkpoints; a
current record passes through unchanged. :func:`migrate_checkpoint` does the same for a whole loaded
checkpoint (hyper-parameters and recorded class), and :func:`checkpoint_source` gives
``load_from_checkpoint`` the class and the bytes to load.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import torch

from lt_lightning.checkpoints import load_checkpoint_file, resolve_class

__all__ = ["LEGACY_KEYS", "checkpoint_source", "is_legacy", "migrate_checkpoint", "migrate_hparams"]

_OPTIMIZER_KEYS = ("lr", "momentum", "nesterov", "weight_decay", "gain")
_SCHEDULE_KEYS = {
    "lr_schedule": "name",
    "lr_interval": "interval",
    "lr_epoch_offset": "epoch_offset",
    "warmup_epochs": "warmup_epochs",
    "warmup_start_factor": "warmup_start_factor",
    "milestones": "milestones",
    "milestone_factors": "milestone_factors",
}
#: options of 0.1 that the model no longer takes (shot groups come from the data; stage 2 has no
#: representation options of its own)
_DROPPED = ("many_threshold", "few_threshold")
_STAGE2_DROPPED = (
    "backbone",
    "backbone_kwargs",
    "fixdim",
    "trainable_backbone",
    "neck",
    "feature_scale",
    "channels_last",
    "compile_backbone",
)
#: every 0.1 key that :func:`migrate_hparams` rewrites or drops
LEGACY_KEYS = frozenset(
    (*_OPTIMIZER_KEYS, *(k for k in _SCHEDULE_KEYS if k != "lr_schedule"), "mixup_alpha", *_DROPPED)
)
_OPTIMIZERS = {
    "sgd": ("torch.optim.SGD", ("lr", "momentum", "nesterov", "weight_decay")),
    "adamw": ("torch.optim.AdamW", ("lr", "weight_decay")),
    "agd": ("lt_lightning.optim.AGD", ("gain",)),
}
_DEFAULTS = {"lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4, "gain": 1.0}
#: 0.1's ``DecoupledModule(mode=...)`` checkpoints become the mode's class, with that class's options
_CLASS_PATH_KEY = "lt_lightning_class_path"
_DECOUPLED = "DecoupledModule"
_STAGE2_OPTIONS = (
    "stage1_checkpoint",
    "stage1_module",
    "bn_mode",
    "num_classes",
    "class_counts",
    "shot_groups",
    "optimizer",
    "lr_schedule",
    "mixup",
    "seed",
)
_MODES = {
    "crt": ("lt_lightning.models.decoupled.crt.CRTModule", ()),
    "lws": ("lt_lightning.models.decoupled.crt.LWSModule", ()),
    "tau_norm": ("lt_lightning.models.decoupled.post_hoc.TauNormModule", ("tau", "tau_grid")),
    "ncm": (
        "lt_lightning.models.decoupled.post_hoc.NCMModule",
        ("ncm_center", "ncm_normalize", "ncm_metric"),
    ),
}


def is_legacy(hparams: Mapping[str, Any]) -> bool:
    """True for a 0.1 record (a named optimizer, a named schedule, or any flat option of theirs)."""
    return (
        isinstance(hparams.get("optimizer"), str)
        or isinstance(hparams.get("lr_schedule"), str)
        or any(k in hparams for k in LEGACY_KEYS)
    )


def migrate_hparams(hparams: Mapping[str, Any], *, stage2: bool = False) -> dict[str, Any]:
    """Today's record for ``hparams`` (a new dict; a current record comes back as an equal copy).

    Args:
        hparams: a checkpoint's ``hyper_parameters``.
        stage2: the record is a stage-2 module's (its representation options are dropped).

    Raises:
        ValueError: an optimizer name 0.1 did not have.
    """
    out = dict(hparams)
    if not is_legacy(out):
        return out
    if "optimizer" in out or any(k in out for k in _OPTIMIZER_KEYS):
        name = out.pop("optimizer", "sgd")
        flat = {k: out.pop(k) for k in _OPTIMIZER_KEYS if k in out}
        if name not in _OPTIMIZERS:
            raise ValueError(
                f"checkpoint hyper-parameters name the optimizer {name!r}; 0.1 had sgd, adamw, agd"
            )
        class_path, keys = _OPTIMIZERS[str(name)]
        out["optimizer"] = {
            "class_path": class_path,
            "init_args": {k: flat.get(k, _DEFAULTS[k]) for k in keys},
        }
    schedule = {field: out.pop(key) for key, field in _SCHEDULE_KEYS.items() if key in out}
    if schedule:
        for key in ("milestones", "milestone_factors"):
            if key in schedule:
                schedule[key] = list(schedule[key])
        out["lr_schedule"] = schedule
    if "mixup_alpha" in out:
        alpha = float(out.pop("mixup_alpha"))
        out["mixup"] = {"alpha": alpha} if alpha > 0 else None
    for key in _DROPPED:
        out.pop(key, None)
    if stage2:
        for key in _STAGE2_DROPPED:
            out.pop(key, None)
    return out


def migrate_checkpoint(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """``ckpt`` (a loaded checkpoint dict) with today's hyper-parameters and class (a shallow copy).

    Besides :func:`migrate_hparams`, a 0.1 ``DecoupledModule`` checkpoint names the class of its mode
    (``CRTModule``, ``LWSModule``, ``TauNormModule``, ``NCMModule``) and keeps only that class's options.
    """
    out = dict(ckpt)
    class_path = str(out.get(_CLASS_PATH_KEY, ""))
    hparams = dict(out.get("hyper_parameters") or {})
    recorded = str(hparams.get("_class_path", ""))
    factory = class_path.rpartition(".")[2] == _DECOUPLED or recorded.rpartition(".")[2] == _DECOUPLED
    stage2 = factory or ".decoupled." in class_path
    hparams = migrate_hparams(hparams, stage2=stage2)
    if factory:
        mode = str(hparams.pop("mode", "crt"))
        if mode not in _MODES:
            raise ValueError(
                f"checkpoint hyper-parameters name the decoupled mode {mode!r}; valid: {', '.join(_MODES)}"
            )
        concrete, own = _MODES[mode]
        keep = set(_STAGE2_OPTIONS) | set(own)
        hparams = {k: v for k, v in hparams.items() if k in keep or k.startswith("_")}
        if "_class_path" in hparams:
            hparams["_class_path"] = concrete
        out[_CLASS_PATH_KEY] = concrete
    if "hyper_parameters" in out:
        out["hyper_parameters"] = hparams
    return out


def checkpoint_source(path: Any, cls: type, base: type) -> tuple[type, Any]:
    """``(class, source)`` for ``cls.load_from_checkpoint(path)``: the class the checkpoint was written by
    (``cls`` itself or a class ``cls`` builds, e.g. the mode's class for ``DecoupledModule``) and ``path``,
    or an in-memory copy with today's record when the file is a 0.1 checkpoint. ``base`` is the class
    every method derives from (the recorded class must be one).

    Raises:
        ValueError: the checkpoint is another method's (naming both classes), or unreadable.
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        return cls, path  # a file-like object: Lightning reads it as it is
    ckpt = load_checkpoint_file(path, map_location="cpu")
    migrated = migrate_checkpoint(ckpt)
    class_path = migrated.get(_CLASS_PATH_KEY)
    target = cls if class_path is None else resolve_class(str(class_path), base, f"checkpoint {path!r}")
    if not (issubclass(target, cls) or cls.builds(target)):  # type: ignore[attr-defined]
        raise ValueError(f"{os.fspath(path)!r} is a {target.__name__} checkpoint, not a {cls.__name__}")
    same = migrated.get("hyper_parameters") == ckpt.get("hyper_parameters") and class_path == ckpt.get(
        _CLASS_PATH_KEY
    )
    if same:
        return target, path
    buffer = io.BytesIO()
    torch.save(migrated, buffer)
    buffer.seek(0)
    return target, buffer
