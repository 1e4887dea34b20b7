"""Rebuild a method from its checkpoint without knowing its class beforehand."""

from __future__ import annotations

import os
from typing import Any

import torch

from lt_lightning.checkpoints import load_checkpoint_file, resolve_class
from lt_lightning.models.base import CLASS_PATH_KEY, LongTailModule
from lt_lightning.models.migration import migrate_checkpoint

__all__ = ["checkpoint_class", "load_module_from_checkpoint"]


def checkpoint_class(ckpt: dict[str, Any], where: str) -> type[LongTailModule]:
    """The :class:`LongTailModule` subclass a checkpoint was written by (its ``lt_lightning_class_path``;
    a 0.1 ``DecoupledModule`` checkpoint: the class of its mode).

    Raises:
        ValueError: no class recorded, or one that is not an importable lt_lightning module class.
    """
    class_path = migrate_checkpoint(ckpt).get(CLASS_PATH_KEY)
    if not isinstance(class_path, str) or "state_dict" not in ckpt:
        raise ValueError(f"{where} is not a checkpoint of an lt_lightning module (no {CLASS_PATH_KEY!r})")
    return resolve_class(class_path, LongTailModule, where)


def load_module_from_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> LongTailModule:
    """Rebuild any lt_lightning method from its checkpoint (the class is read from the checkpoint).

    The file is read with ``torch.load(weights_only=True)`` (see :mod:`lt_lightning.checkpoints`): a
    checkpoint from someone else cannot run code, and the class it names must be a ``LongTailModule``
    of lt_lightning or of a module already imported. Checkpoints of lt_lightning 0.1 load too.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, corrupt, holds non-weights objects, or is not a checkpoint written
            by an lt_lightning module.
    """
    where = f"checkpoint {os.fspath(path)!r}"
    cls = checkpoint_class(load_checkpoint_file(path, map_location="cpu"), where)
    return cls.load_from_checkpoint(path, map_location=map_location)
