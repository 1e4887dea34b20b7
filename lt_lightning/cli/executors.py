"""Where a suite's runs execute: this process, N local processes, or submitit (local processes or SLURM).

A run is a plain dict (:class:`~lt_lightning.cli.suite.Run` as data) executed by :func:`execute_run`: it
goes to the directory the suite was started in (so the configs' relative paths mean what they meant
there, on every stage and on every node), runs ``lt-lightning <argv>``, and records ``run.json`` (status,
metrics, error) in the run folder; a finished run is what a later suite skips.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

__all__ = ["EXECUTORS", "RUN_RECORD", "execute_run", "read_record", "run_waves"]

EXECUTORS = ("local", "submitit-local", "slurm")
#: the file in each run folder saying how the run ended
RUN_RECORD = "run.json"

Runner = Callable[[Sequence[str]], dict[str, float]]


def read_record(run_dir: str) -> dict[str, Any] | None:
    """The ``run.json`` of a run folder, or ``None``."""
    path = os.path.join(run_dir, RUN_RECORD)
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_record(run_dir: str, record: dict[str, Any]) -> None:
    os.makedirs(run_dir, exist_ok=True)
    tmp = os.path.join(run_dir, RUN_RECORD + ".tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, allow_nan=True)
    os.replace(tmp, os.path.join(run_dir, RUN_RECORD))


def cli_runner(argv: Sequence[str]) -> dict[str, float]:
    """Run ``lt-lightning ARGV`` in this process and return its final metrics."""
    from lt_lightning.cli.lightning_cli import build_cli

    try:
        cli = build_cli(list(argv))
    finally:
        try:  # WandbLogger reuses a run still open in this process: the next run gets its own
            import wandb

            if wandb.run is not None:
                wandb.finish()
        except ImportError:
            pass
    if argv[0] == "fit":
        return dict(cli.final_metrics)
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if v.numel() == 1}


def execute_run(run: dict[str, Any], runner: Runner | None = None) -> dict[str, Any]:
    """Execute one run (a dict with ``argv``, ``run_dir``, ``start_dir``, …); return its record."""
    from lt_lightning.progress import quiet_third_party

    os.chdir(run["start_dir"])
    quiet_third_party()
    record = {k: run[k] for k in ("key", "config", "seed", "run_dir", "stage1_run_dir", "argv")}
    record.update(status="running", started=time.time())
    _write_record(run["run_dir"], record)
    argv = [*run["argv"], *(["--overwrite_run", "true"] if run.get("overwrite") else [])]
    try:
        record["metrics"] = (runner or cli_runner)(argv)
        record["status"] = "done"
    except KeyboardInterrupt:
        record.update(status="failed", error="interrupted")
        _write_record(run["run_dir"], record)
        raise
    except BaseException as err:  # a failed run is recorded; the suite goes on with the others
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    record["seconds"] = time.time() - record.pop("started")
    _write_record(run["run_dir"], record)
    return record


# ---- local processes -----------------------------------------------------------------------------------


def _claim_gpu(queue: Any) -> None:
    # one GPU per worker process when there are several: set before torch initialises CUDA there
    gpu = queue.get()
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def _pool(jobs: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    import torch

    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no forked CUDA or thread state
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > 1:
        queue = ctx.Queue()
        for i in range(jobs):
            queue.put(i % gpus)
        return ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_claim_gpu, initargs=(queue,))
    return ProcessPoolExecutor(jobs, mp_context=ctx)


#: submitit's executor-independent parameters (the others are passed as ``slurm_<name>``)
_GENERIC = ("timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node")


# ---- submitit --------------------------------------------------------------------------------------------
def _submitit_executor(kind: str, folder: str, slurm: dict[str, Any]) -> Any:
    try:
        import submitit
    except ImportError as err:  # pragma: no cover - a dependency of lt_lightning
        raise ImportError(f"--executor {kind} needs submitit: pip install submitit") from err
    cluster = "local" if kind == "submitit-local" else "slurm"
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = {k: v for k, v in slurm.items() if v is not None}
    if cluster == "slurm":  # submitit's generic names as they are, the SLURM-only ones prefixed
        executor.update_parameters(**{k if k in _GENERIC else f"slurm_{k}": v for k, v in params.items()})
    else:
        executor.update_parameters(timeout_min=int(params.get("timeout_min") or 60))
    return executor


def _submit_slurm_wave(executor: Any, wave: list[dict], after: dict[str, Any]) -> list[Any]:
    jobs = []
    for run in wave:
        dep = after.get(run.get("stage1_key") or "")
        extra = {"dependency": f"afterok:{dep.job_id}"} if dep is not None else {}
        executor.update_parameters(slurm_additional_parameters=extra)
        job = executor.submit(execute_run, run)
        after[run["key"]] = job
        jobs.append(job)
    return jobs


def _result(job: Any, run: dict[str, Any]) -> dict[str, Any]:
    """A submitted run's record; a job that died without one (killed, timed out) is recorded as failed."""
    try:
        return job.result()
    except Exception as err:
        record = read_record(run["run_dir"]) or {k: run.get(k) for k in ("key", "config", "seed", "run_dir")}
        record.update(status="failed", error=f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}")
        _write_record(run["run_dir"], record)
        return record


def run_waves(
    waves: list[list[dict]],
    executor: str = "local",
    jobs: int = 1,
    runner: Runner | None = None,
    folder: str = ".",
    slurm: dict[str, Any] | None = None,
    on_done: Callable[[dict], None] | None = None,
) -> list[dict[str, Any]]:
    """Execute ``waves`` (a run of a later wave may read a run of an earlier one); return the records.

    ``local`` with ``jobs == 1`` runs in this process (``runner`` replaces the CLI, for tests); ``local``
    with more jobs uses a pool of ``jobs`` processes (one GPU each when there are several); ``submitit-
    local`` submits every run through submitit's local executor, ``slurm`` as SLURM jobs, each stage-2
    job depending on its stage-1 job (``afterok``) so that all are queued at once.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"--executor {executor!r}: valid: {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    done = on_done or (lambda record: None)
    records: list[dict[str, Any]] = []
    if executor == "local" and jobs == 1:
        for wave in waves:
            for run in wave:
                records.append(execute_run(run, runner))
                done(records[-1])
        return records
    if executor == "local":
        with _pool(jobs) as pool:
            for wave in waves:
                futures: list[Future] = [pool.submit(execute_run, run) for run in wave]
                for future, run in zip(futures, wave):
                    records.append(_result(future, run))
                    done(records[-1])
        return records
    sub = _submitit_executor(executor, folder, slurm or {})
    if executor == "slurm":
        after: dict[str, Any] = {}
        runs = [run for wave in waves for run in wave]
        submitted = [job for wave in waves for job in _submit_slurm_wave(sub, wave, after)]
        print(
            f"[lt-lightning suite] submitted {len(submitted)} SLURM jobs: {', '.join(j.job_id for j in submitted)}"
        )
        for job, run in zip(submitted, runs):
            records.append(_result(job, run))
            done(records[-1])
        return records
    for wave in waves:  # submitit's local executor has no dependencies: one wave after the other
        submitted = [sub.submit(execute_run, run) for run in wave]
        for job, run in zip(submitted, wave):
            records.append(_result(job, run))
            done(records[-1])
    return records
