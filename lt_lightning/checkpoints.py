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

import errno
import importlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = [
    "SAFE_GLOBALS",
    "TRUSTED_MODULES",
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "atomic_torch_save",
    "check_class_paths",
    "load_checkpoint_file",
    "may_import",
    "resolve_class",
    "write_failure",
]

T = TypeVar("T")

#: globals beyond torch's weights-only defaults that our checkpoints may hold. Lightning's checkpoint
#: of every lt_lightning method is tensors, dicts, lists, tuples, strings and numbers, so none is
#: needed today; add a class here only if it is plain data (no ``__reduce__`` that runs code).
SAFE_GLOBALS: list[Any] = []
#: modules (with their submodules) a checkpoint may make us import besides lt_lightning's own and the
#: modules already imported (:func:`check_class_paths`). Empty: add a module here only if you trust
#: every checkpoint you load (e.g. ``TRUSTED_MODULES.add("my_lab.models")``).
TRUSTED_MODULES: set[str] = set()
#: class paths a checkpoint may name whatever is imported: Lightning's own module instantiator, which
#: LightningCLI records as ``_instantiator`` (Lightning keeps the same allow-list)
TRUSTED_CLASS_PATHS = frozenset({"lightning.pytorch.cli.instantiate_module"})
#: the keys under which a checkpoint names classes: the method's class (top level), the
#: hyper-parameters' record of it, Lightning's instantiator, and every nested ``{class_path, init_args}``
_CLASS_PATH_KEY = "lt_lightning_class_path"
CLASS_PATH_KEYS = ("class_path", "_class_path", "_instantiator")
_UNSUPPORTED_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class CheckpointWriteError(PermissionError):
    """A checkpoint could not be written: the disk is full, the folder is read-only or not writable.

    A ``PermissionError`` so the command line prints it as one line; the previous file at the path is
    left intact (the write goes to a temporary file first).
    """


#: what a failed write means to the user, by errno
_WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}


def write_failure(path: str, err: OSError) -> CheckpointWriteError:
    """The one-line error for a checkpoint write that failed with ``err`` (``errno`` named in words)."""
    reason = _WRITE_ERRORS.get(err.errno or 0, err.strerror or type(err).__name__)
    return CheckpointWriteError(
        f"cannot write the checkpoint {path!r}: {reason} ({os.path.dirname(path) or '.'}); the previous "
        "checkpoint there is intact: free space or choose a writable run folder (ModelCheckpoint dirpath), "
        "then resume with --ckpt_path"
    )


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """``torch.save`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    Raises:
        CheckpointWriteError: the write failed (full disk, read-only or unwritable folder); the
            previous file at ``path`` is intact.
    """
    path = os.fspath(path)
    try:
        _atomic_torch_save(obj, path)
    except OSError as err:
        if isinstance(err, CheckpointWriteError) or err.errno not in _WRITE_ERRORS:
            raise
        raise write_failure(path, err)  # noqa: B904 - no __cause__: the command line prints this one line


def _atomic_torch_save(obj: Any, path: str) -> None:
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


def _load_failure(path: str, what: str, err: BaseException) -> ValueError:
    """The one-line error for a file ``torch.load(weights_only=True)`` could not read."""
    text = str(err)
    found = _UNSUPPORTED_GLOBAL.search(text)
    if found:
        return ValueError(
            f"{what} {path!r} is refused: it holds the Python object {found.group(1)} (a pickle that could run "
            "code), which a checkpoint of tensors and plain data does not; use a checkpoint written by lt_lightning"
        )
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    if zipped:  # a PyTorch archive that does not read: cut short (or damaged) on the way
        return ValueError(
            f"{what} {path!r} is truncated or damaged (an incomplete PyTorch archive: was its save or copy "
            "interrupted?); use an "
            "earlier checkpoint of the run"
        )
    return ValueError(
        f"{what} {path!r} is not a readable PyTorch checkpoint (corrupt, or another kind of file); give a "
        ".ckpt file written by lt-lightning fit"
    )


def load_checkpoint_file(path: _PATH, map_location: Any = "cpu", what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint dict without executing code from the file, nor importing what it names.

    Args:
        path: the file.
        map_location: as for ``torch.load``.
        what: how errors name the file (e.g. ``"stage-1 checkpoint"``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is empty, truncated or not a PyTorch checkpoint, it holds Python objects
            outside the weights-only allow-list (it could run code), or it names a class of a module that
            may not be imported because a file says so (:func:`check_class_paths`). One line, naming the file.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a folder; give a .ckpt file (e.g. {path}/last.ckpt)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path!r}")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{what} {path!r} is empty (0 bytes); was its save interrupted?")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says it all
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a garbage file can fail anywhere in the unpickler (IndexError, KeyError…)
        raise _load_failure(path, what, err)  # noqa: B904 - the context keeps the detail for LT_LIGHTNING_TRACEBACK=1
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"{what} {path!r} holds a {type(ckpt).__name__}, not a checkpoint dict; give a .ckpt file written "
            "by lt-lightning fit"
        )
    check_class_paths(ckpt, f"{what} {path!r}")
    return ckpt


def may_import(module_name: str) -> bool:
    """Whether a file may make us import ``module_name``: lt_lightning's own modules, modules of
    :data:`TRUSTED_MODULES` (and their submodules), and modules already imported (importing those runs
    nothing: the user's code, or the config / command line, imported them)."""
    if not module_name:
        return False
    if module_name in sys.modules:
        return True
    return any(
        module_name == m or module_name.startswith(m + ".") for m in ("lt_lightning", *TRUSTED_MODULES)
    )


def _named_class_paths(value: Any, key: str = "") -> list[tuple[str, str]]:
    """Every ``(key, class path)`` a loaded record names under :data:`CLASS_PATH_KEYS`, at any depth."""
    found: list[tuple[str, str]] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in CLASS_PATH_KEYS and isinstance(v, str):
                found.append((f"{key}.{k}".lstrip("."), v))
            else:
                found += _named_class_paths(v, f"{key}.{k}".lstrip("."))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found += _named_class_paths(v, f"{key}[{i}]")
    return found


def check_class_paths(ckpt: Mapping[str, Any], where: str) -> None:
    """Refuse a checkpoint that names a class (or function) of a module it may not make us import.

    A checkpoint records class paths: ``lt_lightning_class_path``, the hyper-parameters' ``_class_path``
    and ``_instantiator`` and every nested ``class_path`` (the optimizer's, a stage-1 record's).
    Rebuilding the module imports them, and importing a module runs its code, so each must pass
    :func:`may_import`. Checked on every load (:func:`load_checkpoint_file`), before anything is imported.

    Raises:
        ValueError: one line naming ``where``, the key and the module.
    """
    records = {k: ckpt[k] for k in ("hyper_parameters", "datamodule_hyper_parameters") if k in ckpt}
    named = _named_class_paths(records)
    if isinstance(ckpt.get(_CLASS_PATH_KEY), str):
        named.insert(0, (_CLASS_PATH_KEY, ckpt[_CLASS_PATH_KEY]))
    for key, class_path in named:
        if class_path in TRUSTED_CLASS_PATHS:
            continue
        module_name = class_path.rpartition(".")[0]
        if not may_import(module_name):
            raise ValueError(
                f"{where} names {class_path!r} ({key}), of the module {module_name or class_path!r}, which is not "
                "imported: refused (importing it would run its code); a checkpoint may name lt_lightning classes, "
                "classes the config or command line names, or modules added to "
                "lt_lightning.checkpoints.TRUSTED_MODULES"
            )


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
    if not may_import(module_name):
        raise ValueError(
            f"{where} names the class {class_path!r} of module {module_name!r}, which is not imported: a file "
            "may only name lt_lightning classes or classes of modules already imported (import the module, or "
            "name the class in the config, if you trust the file)"
        )
    try:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
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
