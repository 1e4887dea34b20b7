"""Checkpoint files: atomic writes and loads that never run code from the file.

- :class:`AtomicCheckpointIO` writes each checkpoint to a temporary file in the destination's own
  folder, flushes it to disk and renames it over the target (``os.replace``, atomic on POSIX): a kill
  during a save leaves the previous ``last.ckpt`` intact, never a truncated one. (Lightning's default
  writes through a temporary file in the system temp folder and *moves* it, which is a copy into the
  target when that folder is on another file system.)
- :func:`load_checkpoint_file` reads with ``torch.load(weights_only=True)``: tensors, containers and
  primitive types only, plus the short allow-list :data:`SAFE_GLOBALS`. A pickle payload in a file from
  someone else is refused, not executed. Missing, empty, truncated or foreign files raise errors that
  name the file.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import tempfile
from typing import Any, TypeVar

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["SAFE_GLOBALS", "AtomicCheckpointIO", "atomic_torch_save", "load_checkpoint_file", "resolve_class"]

T = TypeVar("T")

#: globals beyond torch's weights-only defaults that our checkpoints may hold. Lightning's checkpoint
#: of every lt_lightning method is tensors, dicts, lists, tuples, strings and numbers, so none is
#: needed today; add a class here only if it is plain data (no ``__reduce__`` that runs code).
SAFE_GLOBALS: list[Any] = []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """``torch.save`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a checkpoint gets the usual mode
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_checkpoint_file(path: _PATH, map_location: Any = "cpu", what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint dict without executing code from the file.

    Args:
        path: the file.
        map_location: as for ``torch.load``.
        what: how errors name the file (e.g. ``"stage-1 checkpoint"``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, truncated or not a PyTorch checkpoint, or it holds Python objects
            outside the weights-only allow-list (it could run code, so it is refused).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{what} {path!r} is empty (0 bytes); was its save interrupted?")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" in str(err) or "weights_only" in str(err).lower():
            raise ValueError(
                f"{what} {path!r} holds Python objects that could run code when loaded; refused "
                f"(loaded with weights_only=True). Only load such a file if you trust it, with "
                f"torch.load(weights_only=False). Detail: {str(err).splitlines()[0]}"
            ) from err
        raise ValueError(f"{what} {path!r} is not a readable PyTorch checkpoint (corrupt): {err}") from err
    except Exception as err:  # a garbage file can fail anywhere in the unpickler (IndexError, KeyError…)
        raise ValueError(
            f"{what} {path!r} is not a readable PyTorch checkpoint (truncated or corrupt): "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from err
    if not isinstance(ckpt, dict):
        raise ValueError(f"{what} {path!r} holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def resolve_class(class_path: str, base: type[T], where: str = "class_path") -> type[T]:
    """The class ``class_path`` (``"pkg.module.Class"``) names, if a file may name it.

    A checkpoint records class paths (the module's, its optimizer's); importing the module a file names
    would run that module's code. So only lt_lightning's own modules are imported here; any other
    class must come from a module that is already imported (by the user's code, or because the config
    or command line named it), as Lightning's own loader requires. The class must subclass ``base``.

    Raises:
        ValueError: the module is not lt_lightning's and not imported, the name does not resolve, or
            the class is not a ``base`` subclass (``where`` says which file or option named it).
    """
    module_name, _, name = str(class_path).rpartition(".")
    ours = module_name == "lt_lightning" or module_name.startswith("lt_lightning.")
    if not module_name or (not ours and module_name not in sys.modules):
        raise ValueError(
            f"{where} names the class {class_path!r} of module {module_name!r}, which is not imported: a file "
            "may only name lt_lightning classes or classes of modules already imported (import the module, or "
            "name the class in the config, if you trust the file)"
        )
    try:
        module = importlib.import_module(module_name) if ours else sys.modules[module_name]
        cls = getattr(module, name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{where} names the class {class_path!r}, which cannot be found") from err
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(
            f"{where} names {class_path!r}, which is not a {base.__module__}.{base.__qualname__}"
        )
    return cls


def _keep_storage(storage: Any, location: Any) -> Any:
    return storage  # Lightning's default: tensors stay where they were saved until the strategy moves them


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with atomic local writes and weights-only loads (see module docstring).

    The lt-lightning CLI installs it on every trainer, so ``ModelCheckpoint`` files (``last.ckpt`` …)
    and ``--ckpt_path`` resumes use it.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO takes no storage_options, got {storage_options!r}")
        if "://" in str(path):  # a remote URL: fsspec's own transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: _PATH, map_location: Any = _keep_storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return load_checkpoint_file(path, map_location=map_location)
