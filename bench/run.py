"""The benchmark suite: every benchmark of ``bench/`` in one run, one JSON and one Markdown summary.

Parts (each a script of this folder, run in its own process so that every figure is a ratio to a
baseline measured in that same process, and one part's threads or memory cannot disturb the next):

==============  ======================================================================================
samplers        one epoch of indices per long-tailed sampler vs ``torch.randperm(N)``
train_step      each method's Lightning training step vs a plain PyTorch loop
implicit_etf    the nearest-ETF layer (forward + backward) vs a fixed-ETF linear layer
nc_metrics      ``neural_collapse`` (float32 path, float64 path) and the streaming metric vs one GEMM
data_pipeline   one augmented CIFAR-10-LT epoch: ``pipeline="device"`` vs the DataLoader (2 workers)
==============  ======================================================================================

``--quick`` runs every part at small sizes (a smoke run of a few minutes). Writes
``bench/results/suite.json`` (device, torch version, thread count, each part's rows) and
``bench/results/suite.md`` (the ratios per part).

Usage: ``python bench/run.py [--quick] [--parts nc_metrics data_pipeline ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

#: part -> (script arguments for a full run, for a quick run)
PARTS: dict[str, tuple[list[str], list[str]]] = {
    "samplers": (["--repeats", "31"], ["--repeats", "5"]),
    "train_step": ([], ["--quick"]),
    "implicit_etf": ([], ["--quick", "--repeats", "2", "--pymanopt-cap", "20"]),
    "nc_metrics": ([], ["--quick"]),
    "data_pipeline": ([], ["--quick"]),
}
#: result keys that are figures (ratios to the part's in-process baseline)
_FIGURE_WORDS = ("ratio", "speedup", "overhead")


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _rows(obj: object) -> list[dict]:
    """Every list of flat dict rows inside a part's JSON (sections nest them differently)."""
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        return obj
    if isinstance(obj, dict):
        if any(any(w in k for w in _FIGURE_WORDS) for k in obj):
            return [obj]
        out: list[dict] = []
        for key, value in obj.items():
            if key != "meta":
                out += _rows(value)
        return out
    return []


def _table(rows: list[dict]) -> list[str]:
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (float, dict, list))]
    figures = [k for k in rows[0] if any(w in k for w in _FIGURE_WORDS) and isinstance(rows[0][k], float)]
    lines = ["| " + " | ".join(keys + figures) + " |", "|" + "---|" * (len(keys) + len(figures))]
    for r in rows:
        cells = [str(r.get(k, "")) for k in keys] + [
            f"{r[k]:.3g}" if isinstance(r.get(k), float) else "" for k in figures
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _markdown(part: str, rows: list[dict]) -> str:
    """One table per kind of row (rows with the same keys), identifying columns then the ratios."""
    lines = [f"## {part}", ""]
    if not rows:
        return "\n".join([*lines, "(no rows)", ""])
    groups: dict[tuple[str, ...], list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r), []).append(r)
    for group in groups.values():
        lines += _table(group)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for every part")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per part")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    suite = {
        "meta": {
            "device": _device(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": sys.version.split()[0],
            "quick": args.quick,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "parts": {},
    }
    md = [f"# Benchmark suite ({'quick' if args.quick else 'full'})", ""]
    md += [f"- {k}: {v}" for k, v in suite["meta"].items()] + [""]
    for part in args.parts:
        script = HERE / f"{part}.py"
        cmd = [sys.executable, str(script), *PARTS[part][1 if args.quick else 0]]
        print(f"== {part}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, timeout=args.timeout, check=False)
            status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
        except subprocess.TimeoutExpired:
            status = f"timeout after {args.timeout:.0f} s"
        result_file = RESULTS / f"{part}.json"
        data = json.loads(result_file.read_text()) if status == "ok" and result_file.exists() else None
        rows = _rows(data) if data is not None else []
        suite["parts"][part] = {"status": status, "wall_s": time.perf_counter() - start, "result": data}
        md.append(_markdown(part, rows) if status == "ok" else f"## {part}\n\n{status}\n")
    (RESULTS / "suite.json").write_text(json.dumps(suite, indent=2))
    (RESULTS / "suite.md").write_text("\n".join(md))
    print(f"wrote {RESULTS / 'suite.json'} and {RESULTS / 'suite.md'}")
    failed = [p for p, v in suite["parts"].items() if v["status"] != "ok"]
    if failed:
        sys.exit(f"parts that did not finish: {', '.join(failed)}")


if __name__ == "__main__":
    main()
