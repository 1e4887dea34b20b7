"""A Weights & Biases logger that never waits on a network it cannot reach."""

from __future__ import annotations

import netrc
import os
import socket

from lightning.pytorch.loggers import WandbLogger

__all__ = ["WandbLoggerOfflineSafe", "wandb_mode"]

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

    Args:
        mode: ``"online"``, ``"offline"``, ``"disabled"`` or ``None`` (decide automatically).
        init_timeout: seconds W&B may wait for its service at start-up.
        **kwargs: ``WandbLogger`` arguments (project, name, save_dir, log_model, …).
    """

    def __init__(self, mode: str | None = None, init_timeout: float = 60.0, **kwargs) -> None:
        import wandb

        kwargs.setdefault("settings", wandb.Settings(init_timeout=init_timeout, silent=True))
        super().__init__(mode=wandb_mode(mode), **kwargs)
