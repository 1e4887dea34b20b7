#!/usr/bin/env bash
# For a day a machine with one CUDA GPU is lent: in under 10 minutes, from the repository root,
#   1. the CUDA-only tests (pytest -m gpu),
#   2. the benchmark suite at quick sizes (bench/run.py --quick),
#   3. CIFAR-100-LT fits of the shipped joint, fixed-ETF and TDE configs on CIFAR-shaped synthetic data
#      (random uint8 images written in CIFAR-100's on-disk format: 50,000 train / 10,000 test, r = 100
#      applied by the datamodule) with pipeline: device, bf16-mixed and channels_last, each capped at
#      FIT_SECONDS of training (trainer.max_time; 200 epochs when faster),
# and writes one JSON (default bench/results/gpu_run.json): per fit images/s, s/epoch, the epochs done,
# the projected 200-epoch time and the fraction of GPU time busy (nvidia-smi's utilisation, sampled
# every 200 ms during the fit), plus the status of the tests and of the suite.
#
#   bash bench/gpu_run.sh [OUT.json]
# env: PYTHON (default python), FIT_SECONDS (default 75), STAGES (default "tests suite fits"),
#      EXTRA (more overrides for the fits, e.g. a CPU dry run: "--trainer.accelerator cpu --trainer.precision 32-true")
set -uo pipefail
PY=${PYTHON:-python}
OUT=${1:-bench/results/gpu_run.json}
FIT_SECONDS=${FIT_SECONDS:-75}
STAGES=${STAGES:-tests suite fits}
TESTS_RC=-1
SUITE_RC=-1
ROOT=$(pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")"
export WANDB_MODE=disabled PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ " $STAGES " == *" tests "* ]]; then
  echo "== CUDA-only tests"
  timeout 150 "$PY" -m pytest -q -m gpu tests -p no:cacheprovider >"$WORK/tests.log" 2>&1
  TESTS_RC=$?
  tail -3 "$WORK/tests.log"
fi

if [[ " $STAGES " == *" suite "* ]]; then
  echo "== bench/run.py --quick"
  timeout 240 "$PY" bench/run.py --quick --timeout 45 >"$WORK/suite.log" 2>&1
  SUITE_RC=$?
  tail -3 "$WORK/suite.log"
fi

[[ " $STAGES " == *" fits "* ]] || exit 0
echo "== CIFAR-100-LT fits (synthetic CIFAR-shaped data)"
"$PY" - "$WORK" "$OUT" "$FIT_SECONDS" "$TESTS_RC" "$SUITE_RC" ${EXTRA:-} <<'EOF'
import json, os, pickle, subprocess, sys, threading, time
from pathlib import Path

import numpy as np
import torch

work, out, fit_seconds, tests_rc, suite_rc = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), *map(int, sys.argv[4:6])
extra = sys.argv[6:]
sys.argv = sys.argv[:1]  # the CLI below is given its arguments; it must not also read these
cuda = torch.cuda.is_available()
root = Path.cwd()
sys.path.insert(0, str(root / "bench"))
import train_step  # noqa: E402  (the config mode's CLI builder and clock)

# CIFAR-100's on-disk format (torchvision's cifar-100-python pickles), random images
data = work / "data" / "cifar-100-python"
data.mkdir(parents=True)
rng = np.random.default_rng(0)
for split, per_class in (("train", 500), ("test", 100)):
    labels = np.repeat(np.arange(100), per_class)
    images = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
    with open(data / split, "wb") as f:
        pickle.dump({"data": images, "fine_labels": labels.tolist()}, f)


class Busy:
    """nvidia-smi's utilisation.gpu (percent of time a kernel ran), sampled every 200 ms."""

    def __init__(self):
        self.samples, self.proc = [], None

    def __enter__(self):
        if not cuda:
            return self
        self.proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"],
            stdout=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()

    @property
    def fraction(self):
        return sum(self.samples) / (100 * len(self.samples)) if self.samples else None


overrides = [
    "--data.init_args.data_dir", str(work / "data"),
    "--data.init_args.pipeline", "device",
    "--trainer.precision", "bf16-mixed",
    "--model.init_args.channels_last", "true",
    "--trainer.max_time", f"00:00:00:{fit_seconds:02d}" if fit_seconds < 60 else f"00:00:{fit_seconds // 60:02d}:{fit_seconds % 60:02d}",
    "--trainer.enable_progress_bar", "false",
    *extra,
]
fits = []
for method in ("joint", "fixed_etf", "tde"):
    config = str(root / "configs" / "cifar100_lt" / f"{method}.yaml")
    os.chdir(work)
    try:
        cli = train_step._cli(config, 200, overrides)
        clock = train_step._Clock()
        cli.trainer.callbacks.insert(0, clock)
        with Busy() as busy:
            start = time.perf_counter()
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            if cuda:
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        batch = cli.datamodule.train_batch_size()
        steps = cli.trainer.global_step
        epochs = steps / max(cli.trainer.num_training_batches, 1)  # max_time may stop mid-epoch
        train_s = sum(clock.steps)
        row = {
            "method": method, "epochs_done": epochs, "steps": steps, "batch": batch, "fit_s": seconds,
            "images_per_s": steps * batch / seconds,
            "step_images_per_s": batch / (train_s / len(clock.steps)) if clock.steps else None,
            "s_per_epoch": seconds / epochs if epochs else None,
            "projected_200_epochs_s": 200 * seconds / epochs if epochs else None,
            "validation_s": clock.validation,
            "gpu_busy_fraction": busy.fraction,
            "status": "ok",
        }
    except Exception as err:  # one method failing must not lose the others' figures
        row = {"method": method, "status": f"{type(err).__name__}: {err}"}
    finally:
        os.chdir(root)
    print(row, flush=True)
    fits.append(row)

result = {
    "meta": {"device": torch.cuda.get_device_name(0) if cuda else "no CUDA", "extra": extra,
             "torch": torch.__version__, "fit_seconds_cap": fit_seconds},
    "tests_exit_code": tests_rc,
    "suite_exit_code": suite_rc,
    "fits": fits,
}
Path(out).write_text(json.dumps(result, indent=2))
print(f"wrote {out}")
EOF
