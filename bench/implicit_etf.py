"""Benchmark of the implicit nearest-ETF layer (Markou et al., 2024) against a fixed-ETF linear layer.

Section "layer": forward + backward of ``nearest_simplex_etf`` (proximal step, warm start from the
previous solution, as in training) for (d, K) in {(64, 10), (512, 100), (2048, 1000)}, both solvers,
float32 and float64, as a ratio to the in-process baseline: ``features @ etf.T`` + backward for a
batch of 256 (a fixed-ETF classifier of the same size). pymanopt also reports iterations and time per
solve; it runs in a child process with a wall-time cap, because one trust-region iteration at K = 1000
can take far longer than its ``max_time`` check (made between iterations) suggests.

More sections (e.g. the ImplicitETFModule vs FixedETFModule training step) register in ``SECTIONS``.

Usage: ``python bench/implicit_etf.py [--sections layer] [--repeats 5] [--pymanopt-cap 120] [--quick]
[--threads 1]``
Prints a table per section and writes ``bench/results/implicit_etf.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from lt_lightning.nn.nearest_etf import nearest_simplex_etf

RESULTS = Path(__file__).resolve().parent / "results" / "implicit_etf.json"
LAYER_SIZES = [(64, 10), (512, 100), (2048, 1000)]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
BATCH = 256


def _timed(fn: Callable[[], None], repeats: int) -> dict:
    """Run ``fn`` once to warm up, then ``repeats`` times; min and median wall seconds."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"min_s": min(times), "median_s": statistics.median(times)}


def _problem(d: int, k: int, dtype: torch.dtype, seed: int = 0):
    """Class means at two consecutive steps and the previous solution (the prox and warm start)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(k, d, generator=gen, dtype=torch.float64)
    means /= means.norm()
    drift = torch.randn(k, d, generator=gen, dtype=torch.float64)
    nxt = means + 0.01 * drift / drift.norm()
    nxt /= nxt.norm()
    prox = nearest_simplex_etf(means)
    weight = torch.randn(k, d, generator=gen, dtype=torch.float64)
    return nxt.to(dtype), prox.to(dtype), weight.to(dtype)


def _baseline_step(d: int, k: int, dtype: torch.dtype) -> Callable[[], None]:
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(BATCH, d, generator=gen, dtype=dtype, requires_grad=True)
    etf = torch.randn(k, d, generator=gen, dtype=dtype)

    def step() -> None:
        features.grad = None
        (features @ etf.T).sum().backward()

    return step


def _layer_step(d: int, k: int, dtype: torch.dtype, solver: str, info: dict) -> Callable[[], None]:
    means, prox, weight = _problem(d, k, dtype)

    def step() -> None:
        y = means.clone().requires_grad_()
        q = nearest_simplex_etf(y, prox, solver=solver, info=info)
        (q * weight).sum().backward()

    return step


def _pymanopt_child(d: int, k: int, dtype_name: str, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    # Warm up on a tiny problem so that importing pymanopt is not timed.
    _layer_step(6, 4, torch.float64, "pymanopt", {})()
    info: dict = {}
    step = _layer_step(d, k, DTYPES[dtype_name], "pymanopt", info)
    queue.put("ready")
    start = time.perf_counter()
    step()
    queue.put({"fwd_bwd_s": time.perf_counter() - start, **info})


def _pymanopt_capped(d: int, k: int, dtype_name: str, threads: int, cap_s: float) -> dict | None:
    """One warm-started pymanopt fwd+bwd in a child process; ``None`` if it exceeds ``cap_s``.

    The cap starts when the child has imported everything and built the problem.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_pymanopt_child, args=(d, k, dtype_name, threads, queue))
    proc.start()
    try:
        queue.get(timeout=300)  # "ready"
        return queue.get(timeout=cap_s)
    except Exception:
        return None
    finally:
        proc.join(timeout=1)
        if proc.is_alive():
            proc.terminate()
            proc.join()


def section_layer(args) -> list[dict]:
    rows = []
    sizes = LAYER_SIZES[:2] if args.quick else LAYER_SIZES
    for d, k in sizes:
        for dtype_name, dtype in DTYPES.items():
            base = _timed(_baseline_step(d, k, dtype), args.repeats)
            info: dict = {}
            proc = _timed(_layer_step(d, k, dtype, "procrustes", info), args.repeats)
            rows.append(
                {
                    "d": d,
                    "K": k,
                    "dtype": dtype_name,
                    "solver": "procrustes",
                    "baseline_s": base["min_s"],
                    "fwd_bwd_s": proc["min_s"],
                    "fwd_bwd_median_s": proc["median_s"],
                    "ratio": proc["min_s"] / base["min_s"],
                    "solve_s": info["time_s"],
                    "iterations": 0,
                }
            )
            result = _pymanopt_capped(d, k, dtype_name, args.threads, args.pymanopt_cap)
            row = {"d": d, "K": k, "dtype": dtype_name, "solver": "pymanopt", "baseline_s": base["min_s"]}
            if result is None:
                row["skipped"] = f"one warm-started solve did not finish within {args.pymanopt_cap:.0f} s"
            else:
                row.update(
                    fwd_bwd_s=result["fwd_bwd_s"],
                    ratio=result["fwd_bwd_s"] / base["min_s"],
                    solve_s=result["time_s"],
                    iterations=result["iterations"],
                    time_per_iteration_s=result["time_s"] / max(result["iterations"], 1),
                    stopping_criterion=result["stopping_criterion"],
                )
            rows.append(row)
            print(_format_row(rows[-2]), flush=True)
            print(_format_row(rows[-1]), flush=True)
    return rows


def _format_row(row: dict) -> str:
    head = (
        f"{row['d']:>5} {row['K']:>5} {row['dtype']:>8} {row['solver']:>10} {row['baseline_s'] * 1e3:>10.3f}"
    )
    if "skipped" in row:
        return f"{head}  skipped ({row['skipped']})"
    return (
        f"{head} {row['fwd_bwd_s'] * 1e3:>12.2f} {row['ratio']:>9.1f} {row['iterations']:>6} "
        f"{row['solve_s'] * 1e3:>11.2f}"
    )


LAYER_HEADER = (
    f"{'d':>5} {'K':>5} {'dtype':>8} {'solver':>10} {'base(ms)':>10} {'fwd+bwd(ms)':>12} {'ratio':>9} "
    f"{'iters':>6} {'solve(ms)':>11}"
)

MODULE_HEADER = f"{'d':>5} {'K':>5} {'backbone':<22} {'fixed ETF ms':>13} {'implicit ms':>12} {'overhead':>9}"


def _module_step(model, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step of a module outside Lightning (features, state hooks, head, loss, its optimizer)."""
    opt = model.optimizer([p for p in model.parameters() if p.requires_grad])
    model.train()

    def step() -> None:
        feats = model.extract_features(x)
        model.on_train_features(feats, y)
        loss = model.compute_loss(model.forward_head(feats), feats, y, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def section_module(args) -> list[dict]:
    """ImplicitETFModule (procrustes) vs FixedETFModule: the same backbone, batch and optimiser."""
    from lt_lightning.models import FixedETFModule, ImplicitETFModule

    cases = [(512, 100, "resnet18", {"cifar_stem": True}, (3, 32, 32), 64)]
    if not args.quick:
        cases.append((2048, 1000, "mlp", {"in_features": 256, "hidden": [2048]}, (256,), 1024))
    rows = []
    for d, k, backbone, bkw, shape, batch in cases:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *shape, generator=g)
        y = torch.arange(batch) % k
        sgd = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9)
        common = {"num_classes": k, "backbone": backbone, "backbone_kwargs": bkw, "optimizer": sgd}
        torch.manual_seed(0)
        fixed = FixedETFModule(**common, loss="ce", neck="none")
        torch.manual_seed(0)
        implicit = ImplicitETFModule(**common, solver="procrustes")
        t_fixed = _timed(_module_step(fixed, x, y), args.repeats)["min_s"]
        t_impl = _timed(_module_step(implicit, x, y), args.repeats)["min_s"]
        row = {
            "d": d,
            "K": k,
            "backbone": f"{backbone} batch {batch}",
            "fixed_etf_ms": 1e3 * t_fixed,
            "implicit_etf_ms": 1e3 * t_impl,
            "overhead_pct": 100 * (t_impl / t_fixed - 1),
        }
        print(
            f"{d:>5} {k:>5} {row['backbone']:<22} {row['fixed_etf_ms']:>13.1f} {row['implicit_etf_ms']:>12.1f} "
            f"{row['overhead_pct']:>8.1f}%",
            flush=True,
        )
        rows.append(row)
    return rows


SECTIONS: dict[str, tuple[str, Callable]] = {
    "layer": (LAYER_HEADER, section_layer),
    "module": (MODULE_HEADER, section_module),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pymanopt-cap", type=float, default=120.0, help="seconds for one pymanopt solve")
    parser.add_argument("--quick", action="store_true", help="skip the largest size")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 by default: on a shared CPU, multi-threaded kernels stall unpredictably)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = {
        "meta": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "batch": BATCH,
            "repeats": args.repeats,
            "note": "ratio = layer fwd+bwd / (features[256, d] @ etf.T + backward), min over repeats",
        }
    }
    for name in args.sections:
        header, run = SECTIONS[name]
        print(f"\n== {name} ==\n{header}", flush=True)
        out[name] = run(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
