"""Training throughput of each method under Lightning vs a plain PyTorch loop (same model, data,
optimiser), in one process. Prints a table and writes bench/results/train_step.json.

    python bench/train_step.py            # ResNet-32 (64-d) on CIFAR-sized random batches of 128
    python bench/train_step.py --quick    # MLP on digits-sized inputs, for a smoke run
    python bench/train_step.py --config configs/digits_lt/joint.yaml --epochs 5 45 \
        -- --data.init_args.pipeline device   # what a user runs, start-up differenced away

Overhead = plain samples/s ÷ Lightning samples/s − 1. Warm-up steps are excluded from
both timings; the two runs alternate and the median of ``--repeats`` is reported.

``--config`` (one or more shipped configs, or ``--config digits`` for every trainable digits method)
builds the trainer from the config as ``lt-lightning fit`` does (its callbacks, logger, checkpointing,
progress bar and data pipeline) and compares it with a plain loop over the same datamodule's training
loader, and writes bench/results/train_config.json (see :func:`run_configs` for the figures).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.models import FixedETFModule, JointModule, TDEModule
from lt_lightning.optim import LRSchedule

RESULTS = Path(__file__).with_name("results")


class _Timer(L.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def _loader(n: int, shape: tuple[int, ...], k: int, batch: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False, drop_last=True)


def time_lightning(model, loader, steps: int, warmup: int) -> float:
    timer = _Timer(warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=loader)
    return timer.end - timer.start


def time_plain(model, loader, steps: int, warmup: int) -> float:
    """The same module's pieces in a hand-written loop: forward, loss, backward, and the module's own
    optimizer (with a constant schedule the module configures no LR scheduler either)."""
    opt = model.optimizer([p for p in model.parameters() if p.requires_grad])
    model.train()
    it = iter(loader)
    start = None
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        features = model.extract_features(x)
        model.on_train_features(features, y)
        loss = model.compute_loss(model.forward_head(features), features, y, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


# ---- config mode: what a user runs -----------------------------------------------------------------
#: the digits configs of the methods that train (stage-2 configs need a stage-1 checkpoint)
DIGITS_METHODS = ("joint", "fixed_etf", "fixed_etf_ce", "tde", "implicit_etf", "ldam_drw")


class _Clock(L.Callback):
    """Per-step intervals (batch start to the next batch start, so the loader's fetch, the step and every
    hook count), validation time, and the time spent in every other callback's hooks."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.hooks: dict[str, float] = {}
        self.validation = 0.0
        self.writes: list[float] = []
        self._last: float | None = None
        self._val_start = 0.0

    def on_train_epoch_start(self, *args) -> None:
        self._last = None

    def on_train_batch_start(self, *args) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.steps.append(now - self._last)
        self._last = now

    def on_train_epoch_end(self, *args) -> None:
        self._last = None

    def on_validation_start(self, *args) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, *args) -> None:
        self.validation += time.perf_counter() - self._val_start

    def watch(self, trainer: L.Trainer) -> None:
        """Time every other callback's hooks (per class) and every checkpoint file write."""
        for cb in trainer.callbacks:
            if cb is self:
                continue
            name = type(cb).__name__
            for hook in dir(L.Callback):
                # only the hooks a callback overrides: wrapping Lightning's no-op hooks would add a
                # Python call per hook and step to the very cost being measured
                overridden = getattr(type(cb), hook, None) is not getattr(L.Callback, hook)
                if hook.startswith("on_") and hook != "on_exception" and overridden:
                    setattr(cb, hook, self._timed(getattr(cb, hook), name))
        io = trainer.strategy.checkpoint_io
        write = io.save_checkpoint

        def timed_write(*a, **k):
            start = time.perf_counter()
            write(*a, **k)
            self.writes.append(time.perf_counter() - start)

        io.save_checkpoint = timed_write

    def _timed(self, fn, name: str):
        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.hooks[name] = self.hooks.get(name, 0.0) + time.perf_counter() - start

        return timed


def _cli(config: str, epochs: int, overrides: list[str]):
    from lt_lightning.cli import build_cli

    args = ["-c", config, "--trainer.max_epochs", str(epochs), *overrides]
    return build_cli(args, run=False)


def _in_tmp(fn):
    """Run ``fn()`` in a fresh temporary working folder (the configs' run folders and logs go there)."""
    import tempfile

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            return fn()
        finally:
            os.chdir(here)


#: ``--emulate-fixes``: the one measured fix the configs do not apply, as overrides: a fused SGD, whose
#: step skips a non-finite update itself (GradScaler's ``found_inf``), so the finite guard takes no
#: snapshot of the parameters. On a CPU it differs from the foreach step in the last bits, so it is not
#: the shipped default there (on a GPU ``optim.build_optimizer`` turns it on).
FIX_OVERRIDES = ["--model.init_args.optimizer.init_args.fused", "true"]


def time_config_fit(config: str, epochs: int, overrides: list[str], fixes: bool = False) -> dict:
    """``trainer.fit`` of the config's trainer (wall seconds) and the clock's breakdown."""

    def run():
        cli = _cli(config, epochs, [*overrides, *FIX_OVERRIDES] if fixes else overrides)
        clock = _Clock()
        cli.trainer.callbacks.insert(0, clock)
        clock.watch(cli.trainer)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        total = time.perf_counter() - start
        return {
            "seconds": total,
            "steps": cli.trainer.global_step,
            "step_ms": 1e3 * statistics.median(clock.steps) if clock.steps else float("nan"),
            "validation_s": clock.validation,
            "callbacks_s": dict(clock.hooks),
            "checkpoint_writes": len(clock.writes),
            "checkpoint_write_s": sum(clock.writes),
            "logger": type(cli.trainer.logger).__name__ if cli.trainer.logger else None,
        }

    return _in_tmp(run)


def _plain_step(model, x, y, epoch: int, batch_idx: int):
    """The training step's maths (mixup, features, head, loss) without Lightning's machinery."""
    mixup = model.mixup
    if mixup is not None and mixup.alpha > 0:
        x, y_a, y_b, lam = mixup(x, y, seed=model.hparams.seed, epoch=epoch, rank=0, batch_idx=batch_idx)
        features = model.extract_features(x)
        model.on_train_features(features, y)
        logits = model.forward_head(features)
        loss = lam * model.compute_loss(logits, features, y_a, y)
        return loss + (1 - lam) * model.compute_loss(logits, features, y_b, y)
    features = model.extract_features(x)
    model.on_train_features(features, y)
    return model.compute_loss(model.forward_head(features), features, y, y)


def time_config_plain(config: str, epochs: int, overrides: list[str], duties: bool = False) -> dict:
    """The same model, datamodule training loader and optimizer in a hand-written loop of ``epochs``;
    ``duties``: also what the config does once an epoch, written by hand: a validation pass (top-1 and
    loss over the datamodule's validation loader) and one atomic checkpoint write (weights, optimizer)."""

    def run():
        cli = _cli(config, epochs, overrides)
        model, dm = cli.model, cli.datamodule
        dm.setup("fit")
        loader = dm.train_dataloader()
        device = torch.device("cuda" if torch.cuda.is_available() and cli.trainer.on_gpu else "cpu")
        model.to(device).train()
        opt = model.optimizer(model.named_trainable_parameters())
        steps = 0
        start = time.perf_counter()
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)
            for i, (x, y) in enumerate(loader):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                loss = _plain_step(model, x, y, epoch, i)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
            if duties:
                _plain_duties(model, opt, dm.val_dataloader(), device, epoch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return {"seconds": time.perf_counter() - start, "steps": steps}

    return _in_tmp(run)


def _val_sums(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[3]`` float64 on the device: correct predictions, summed cross-entropy, samples of a batch."""
    n = torch.full((), len(y), dtype=torch.float64, device=y.device)
    correct = (logits.argmax(1) == y).sum().double()
    return torch.stack((correct, torch.nn.functional.cross_entropy(logits, y, reduction="sum").double(), n))


class _FloorModule(L.LightningModule):
    """Lightning's floor: the plain step and the plain duties (validation top-1 and loss, logged once an
    epoch) as a bare LightningModule, with none of the package's machinery."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self._sums: torch.Tensor | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        return _plain_step(self.model, x, y, self.current_epoch, batch_idx)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        step = _val_sums(self.model(x), y)
        self._sums = step if self._sums is None else self._sums + step

    def on_validation_epoch_end(self) -> None:
        if self._sums is not None:
            self.log("val/acc", self._sums[0] / self._sums[2])
            self.log("val/loss", self._sums[1] / self._sums[2])
        self._sums = None

    def configure_optimizers(self):
        return self.model.optimizer(self.model.named_trainable_parameters())


def time_config_floor(config: str, epochs: int, overrides: list[str]) -> dict:
    """The config's model, data and optimizer under a bare ``L.Trainer`` (:class:`_FloorModule`): no
    logger, progress bar or package callback; validation every epoch and one ``last.ckpt`` write an
    epoch, as the config does. What any Lightning-based loop pays on this workload."""

    def run():
        from lightning.pytorch.callbacks import ModelCheckpoint

        cli = _cli(config, epochs, overrides)
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator=cli.trainer.accelerator,
            devices=1,
            precision=cli.trainer.precision,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[ModelCheckpoint(dirpath="floor", filename="last", enable_version_counter=False)],
        )
        module = _FloorModule(cli.model)
        start = time.perf_counter()
        trainer.fit(module, datamodule=cli.datamodule)
        return {"seconds": time.perf_counter() - start, "steps": trainer.global_step}

    return _in_tmp(run)


def _plain_duties(model, opt, val_loader, device, epoch: int) -> None:
    """A hand-written epoch end: validation (accuracy and loss, one host read) and a checkpoint."""
    from lt_lightning.checkpoints import atomic_torch_save

    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    with torch.no_grad():
        for x, y in val_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sums = sums + _val_sums(model(x), y)
    sums.tolist()  # the epoch's one host read, as a real loop reads its validation numbers
    model.train()
    state = {"epoch": epoch, "state_dict": model.state_dict(), "optimizer": opt.state_dict()}
    atomic_torch_save(state, "plain_last.ckpt")


def _config_row(
    config: str, epochs: tuple[int, int], repeats: int, overrides: list[str], fixes: bool = False
) -> dict:
    """Differenced figures of one config: ``(t(e2) − t(e1)) / Δ`` cancels start-up and the first epoch."""
    e1, e2 = epochs
    light: dict[int, list[dict]] = {e1: [], e2: []}
    plain: dict[int, list[dict]] = {e1: [], e2: []}
    duties: dict[int, list[dict]] = {e1: [], e2: []}
    floor: dict[int, list[dict]] = {e1: [], e2: []}
    # one untimed fit first: the process's first fit pays one-off costs (imports, font caches, the first
    # figures) that a median of a few repeats of the short fit would otherwise keep, shrinking the difference
    time_config_fit(config, e1, overrides, fixes)
    for _ in range(repeats):  # alternate, so that load changes hit all alike
        for e in (e1, e2):
            plain[e].append(time_config_plain(config, e, overrides))
            duties[e].append(time_config_plain(config, e, overrides, duties=True))
            floor[e].append(time_config_floor(config, e, overrides))
            light[e].append(time_config_fit(config, e, overrides, fixes))

    def med(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    d_steps = light[e2][0]["steps"] - light[e1][0]["steps"]
    d_plain_steps = plain[e2][0]["steps"] - plain[e1][0]["steps"]
    light_step = 1e3 * (med(light[e2], "seconds") - med(light[e1], "seconds")) / d_steps
    plain_step = 1e3 * (med(plain[e2], "seconds") - med(plain[e1], "seconds")) / d_plain_steps
    duties_step = 1e3 * (med(duties[e2], "seconds") - med(duties[e1], "seconds")) / d_plain_steps
    d_floor_steps = floor[e2][0]["steps"] - floor[e1][0]["steps"]
    floor_step = 1e3 * (med(floor[e2], "seconds") - med(floor[e1], "seconds")) / d_floor_steps
    steps_per_epoch = d_steps / (e2 - e1)
    in_step = med(light[e2], "step_ms")
    epoch_ms = light_step * steps_per_epoch
    long = light[e2][len(light[e2]) // 2]
    d_epochs = e2 - e1

    def per_epoch_ms(key: str) -> float:
        return 1e3 * (med(light[e2], key) - med(light[e1], key)) / d_epochs

    hooks = {
        name: 1e3
        * (
            statistics.median(r["callbacks_s"].get(name, 0.0) for r in light[e2])
            - statistics.median(r["callbacks_s"].get(name, 0.0) for r in light[e1])
        )
        / d_epochs
        for name in long["callbacks_s"]
    }
    return {
        "config": config,
        "overrides": " ".join(overrides),
        "emulated_fixes": fixes,
        "epochs": list(epochs),
        "steps_per_epoch": steps_per_epoch,
        "plain_ms_per_step": plain_step,
        "lightning_ms_per_step": light_step,
        "ratio_per_step": light_step / plain_step,
        "plain_with_duties_ms_per_step": duties_step,
        "ratio_to_plain_with_duties": light_step / duties_step,
        "lightning_floor_ms_per_step": floor_step,
        "floor_ratio_per_step": floor_step / plain_step,
        "ratio_to_floor": light_step / floor_step,
        "step_ms": in_step,
        "step_ratio": in_step / plain_step,
        "epoch_fixed_ms": epoch_ms - in_step * steps_per_epoch,
        "validation_ms_per_epoch": per_epoch_ms("validation_s"),
        "checkpoint_write_ms_per_epoch": per_epoch_ms("checkpoint_write_s"),
        "checkpoint_writes_per_epoch": (long["checkpoint_writes"] - light[e1][0]["checkpoint_writes"])
        / d_epochs,
        "callback_ms_per_epoch": hooks,
        "logger": long["logger"],
        "lightning_s": {str(e): [r["seconds"] for r in light[e]] for e in epochs},
        "plain_s": {str(e): [r["seconds"] for r in plain[e]] for e in epochs},
        "plain_with_duties_s": {str(e): [r["seconds"] for r in duties[e]] for e in epochs},
        "lightning_floor_s": {str(e): [r["seconds"] for r in floor[e]] for e in epochs},
    }


def run_configs(
    configs: list[str],
    epochs: list[int],
    repeats: int,
    overrides: list[str],
    out: str | None,
    emulate_fixes: bool = False,
) -> list[dict]:
    """Config mode: a row per config (``["digits"]``: every trainable digits method), a table, a JSON.

    Figures (milliseconds; Lightning minus plain per step is the machinery's cost):
    ``plain_ms_per_step`` / ``lightning_ms_per_step``: differenced wall time per training step, the
    Lightning one including everything done once an epoch (validation, checkpoints, callbacks) spread
    over the epoch's steps; ``ratio_per_step`` their quotient. ``lightning_floor_ms_per_step``: the same
    step and duties as a bare LightningModule under a bare Trainer (:func:`time_config_floor`);
    ``floor_ratio_per_step``: what Lightning alone costs over the plain loop, ``ratio_to_floor``: what
    the package adds on top of it. ``step_ms``: the median interval between
    two training batches' starts (loader, step, per-step hooks and logging); ``epoch_fixed_ms``: the rest
    of an epoch (validation, checkpoint writes, epoch-end callbacks); ``callback_ms_per_epoch``: each
    callback's hooks (a checkpoint callback's includes its writes).
    """
    e1, e2 = sorted(epochs)
    if e1 < 1 or e1 == e2:
        raise ValueError(f"--epochs needs two different counts >= 1, got {epochs}")
    names = [f"configs/digits_lt/{m}.yaml" for m in DIGITS_METHODS] if configs == ["digits"] else configs
    names = [str(Path(c).resolve()) for c in names]  # the fits run in temporary folders
    rows = [_config_row(c, (e1, e2), repeats, list(overrides), emulate_fixes) for c in names]
    print(
        f"\n{'config':<28} {'plain ms/step':>13} {'+duties':>8} {'Lightning ms/step':>17} {'ratio':>6} "
        f"{'/duties':>7} {'floor':>6} {'/floor':>6} {'step ms':>8} {'epoch fixed ms':>14} {'val ms':>7} "
        f"{'ckpt write ms':>13}"
    )
    for r in rows:
        short = "/".join(Path(r["config"]).parts[-2:])
        print(
            f"{short:<28} {r['plain_ms_per_step']:>13.2f} {r['plain_with_duties_ms_per_step']:>8.2f} "
            f"{r['lightning_ms_per_step']:>17.2f} {r['ratio_per_step']:>6.2f} "
            f"{r['ratio_to_plain_with_duties']:>7.2f} {r['floor_ratio_per_step']:>6.2f} "
            f"{r['ratio_to_floor']:>6.2f} {r['step_ms']:>8.2f} {r['epoch_fixed_ms']:>14.1f} "
            f"{r['validation_ms_per_epoch']:>7.1f} {r['checkpoint_write_ms_per_epoch']:>13.1f}"
        )
    for r in rows:
        hooks = ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(r["callback_ms_per_epoch"].items(), key=lambda kv: -kv[1])
        )
        print(f"  {Path(r['config']).stem}: callback ms per epoch: {hooks}")
    meta = {
        "emulated_fixes": emulate_fixes,
        "epochs": [e1, e2],
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "overrides": list(overrides),
    }
    path = Path(out) if out else RESULTS / "train_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None, help="a subset of the methods (default: all)")
    parser.add_argument(
        "--config", nargs="+", default=None, help="shipped configs (or 'digits'): config mode"
    )
    parser.add_argument("--epochs", nargs=2, type=int, default=[5, 45], help="config mode: two epoch counts")
    parser.add_argument("--out", default=None, help="config mode: the JSON file to write")
    parser.add_argument("overrides", nargs="*", help="config mode: command-line overrides after --")
    parser.add_argument(
        "--emulate-fixes",
        action="store_true",
        help="config mode: add the fix not applied by the configs (see FIX_OVERRIDES)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config:
        run_configs(args.config, args.epochs, args.repeats, args.overrides, args.out, args.emulate_fixes)
        return
    torch.manual_seed(0)
    if args.quick:
        k, shape, batch, steps = 10, (1, 8, 8), 64, args.steps or 200
        common = {"backbone": "mlp", "backbone_kwargs": {"in_features": 64, "hidden": [256, 256]}}
        tde_common = common
    else:
        k, shape, batch, steps = 10, (3, 32, 32), 128, args.steps or 20
        common = {"backbone": "resnet32", "backbone_kwargs": {"width": 16}}
        tde_common = {"backbone": "resnet32_tde"}
    warmup = 3
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    base = {"num_classes": k, "optimizer": sgd, "lr_schedule": LRSchedule(name="constant")}
    methods = {
        "joint": lambda: JointModule(**base, **common),
        "fixed_etf (DR)": lambda: FixedETFModule(**base, **common),
        "fixed_etf (CE)": lambda: FixedETFModule(**base, **common, loss="ce"),
        "tde": lambda: TDEModule(**base, **tde_common),
    }
    try:
        from lt_lightning.models import ImplicitETFModule

        methods["implicit_etf"] = lambda: ImplicitETFModule(**base, **common)
    except ImportError:
        pass
    if args.methods:
        methods = {name: make for name, make in methods.items() if name in args.methods}
    loader = _loader(batch * (steps + warmup), shape, k, batch)
    rows = []
    for name, make in methods.items():
        model = make()
        lt, pt, bt = [], [], []
        for _ in range(args.repeats):
            pt.append(time_plain(copy.deepcopy(model), loader, steps, warmup))
            lt.append(time_lightning(copy.deepcopy(model), loader, steps, warmup))
            if name == "joint":
                bt.append(time_lightning(_FloorModule(copy.deepcopy(model)), loader, steps, warmup))
        plain_sps = steps * batch / statistics.median(pt)
        light_sps = steps * batch / statistics.median(lt)
        rows.append(
            {
                "method": name,
                "plain_samples_per_s": plain_sps,
                "lightning_samples_per_s": light_sps,
                "overhead_pct": 100 * (plain_sps / light_sps - 1),
            }
        )
        if bt:  # Lightning's own floor: the same step in a minimal LightningModule (_FloorModule)
            bare_sps = steps * batch / statistics.median(bt)
            rows.append(
                {
                    "method": "bare Lightning (joint's net)",
                    "plain_samples_per_s": plain_sps,
                    "lightning_samples_per_s": bare_sps,
                    "overhead_pct": 100 * (plain_sps / bare_sps - 1),
                }
            )
    print(f"\n{'method':<28} {'plain samples/s':>16} {'Lightning samples/s':>20} {'overhead':>9}")
    for r in rows:
        print(
            f"{r['method']:<28} {r['plain_samples_per_s']:>16.1f} {r['lightning_samples_per_s']:>20.1f} "
            f"{r['overhead_pct']:>8.1f}%"
        )
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "quick": args.quick,
        "batch": batch,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    (RESULTS / "train_step.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
