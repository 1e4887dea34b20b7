"""A Weights & Biases logger that never waits on a network it cannot reach.

The CLI names each run ``<dataset>/<method>/seed<s>``, groups a suite's runs (``--run_group``) and tags
them with the method, the dataset and the recipe the config follows (:mod:`lt_lightning.cli.runs`).
"""

from __future__ import annotations

import netrc
import os
import shutil
import socket
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["FAILED_RUNS_DIR", "WandbLoggerOfflineSafe", "wandb_mode"]

#: where a failed run's W&B offline folder goes, beside ``<save_dir>/wandb`` (``wandb sync`` skips it)
FAILED_RUNS_DIR = "wandb-failed"

_WANDB_HOST = "api.wandb.ai"


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(_WANDB_HOST) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str = _WANDB_HOST, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(requested: str | None = None) -> str:
    """The W&B mode to use: ``requested``, else ``$WANDB_MODE``, else ``"online"`` only when an API key
    exists and the server answers within 2 s, otherwise ``"offline"`` (runs can be synced later with
    ``wandb sync``)."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode:
        if mode not in ("online", "offline", "disabled", "dryrun", "run"):
            raise ValueError(f"unknown W&B mode {mode!r}; valid: online, offline, disabled")
        return mode
    return "online" if _has_api_key() and _reachable() else "offline"


class WandbLoggerOfflineSafe(WandbLogger):
    """Lightning's ``WandbLogger`` with the mode decided by :func:`wandb_mode` (set per run with
    ``mode=``, not through the process-wide ``WANDB_MODE``) and a bounded ``init_timeout``.

    A run that fails (an exception in ``fit``/``test``/…, e.g. a diverged loss or Ctrl-C) and logged
    offline is finished with exit code 1 and its ``offline-run-*`` folder is moved from
    ``<save_dir>/wandb/`` to ``<save_dir>/wandb-failed/``, so that ``wandb sync <save_dir>/wandb`` (or
    ``wandb sync <save_dir>``) never uploads it; ``wandb sync <that folder>`` still can, deliberately.

    Args:
        mode: ``"online"``, ``"offline"``, ``"disabled"`` or ``None`` (decide automatically).
        init_timeout: seconds W&B may wait for its service at start-up.
        **kwargs: ``WandbLogger`` arguments (project, name, save_dir, log_model, …).
    """

    def __init__(self, mode: str | None = None, init_timeout: float = 60.0, **kwargs) -> None:
        import wandb

        kwargs.setdefault("settings", wandb.Settings(init_timeout=init_timeout, silent=True))
        super().__init__(mode=wandb_mode(mode), **kwargs)
        if self._wandb_init.get("anonymous") is None:
            # Lightning passes anonymous=None; W&B (0.31) answers any value with a deprecation line each run
            self._wandb_init.pop("anonymous", None)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "failed":
            self._set_aside_failed_offline_run()
        else:
            self._say_where_the_offline_run_is()

    def _say_where_the_offline_run_is(self) -> None:
        # W&B's own console lines are silenced (lt_lightning.progress.quiet_third_party): say it once here
        run = self._experiment
        run_dir = Path(run.dir).parent if run is not None and getattr(run, "dir", None) else None
        if run_dir is not None and run_dir.name.startswith("offline-run-"):
            print(f"[lt-lightning] W&B offline run in {run_dir} (upload it with: wandb sync {run_dir})")

    def _set_aside_failed_offline_run(self) -> None:
        run = self._experiment
        run_dir = Path(run.dir).parent if run is not None and getattr(run, "dir", None) else None
        if run_dir is None or not run_dir.name.startswith("offline-run-"):
            return  # online runs are already on the server, marked failed by wandb
        run.finish(exit_code=1)
        target = run_dir.parent.parent / FAILED_RUNS_DIR / run_dir.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir), str(target))
        latest = run_dir.parent / "latest-run"
        if latest.is_symlink() and not latest.exists():  # pointed at the folder just moved
            latest.unlink()
        print(f"[lt-lightning] the run failed: its W&B offline run is set aside in {target} (not synced)")
