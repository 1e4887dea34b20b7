"""Benchmark: cost of drawing one epoch of indices with each long-tailed sampler.

Times ``sampler.global_indices(epoch)`` (the whole single-process epoch every rank computes) against
``torch.randperm(N)`` measured in the same process, on iNaturalist-2018-sized label sets
(N = 437,513, K = 8,142, counts from 2 to 1000) with two long-tailed profiles, plus CIFAR-100-LT
(r = 100) for reference. Prints a table of median milliseconds and the median ratio to randperm (timed alternately), and writes
``bench/results/samplers.json``.

Run: ``PYTHONPATH=. python bench/samplers.py [--repeats 31] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lt_lightning.data.profiles import long_tail_counts
from lt_lightning.data.samplers import SAMPLER_NAMES, build_sampler

INAT_N, INAT_K, INAT_MAX, INAT_MIN = 437_513, 8_142, 1_000, 2
#: the global batch of the stratified sampler (iNaturalist-2018 recipes: 512)
BATCH = 512
#: each sampler's build options beyond the labels
OPTIONS = {"power": {"q": 0.3}, "progressive": {"num_epochs": 90}, "stratified": {"batch_size": BATCH}}


def _fix_total(counts: np.ndarray, total: int) -> np.ndarray:
    """Add or remove the rounding difference one sample at a time on the head classes."""
    counts = counts.copy()
    diff = total - int(counts.sum())
    head = np.argsort(-counts, kind="stable")[: abs(diff)]
    counts[head] += np.sign(diff)
    return counts


def inat_exp_counts() -> np.ndarray:
    """long_tail_counts' exponential profile from 1000 down, clipped at 2, with r tuned to sum to N."""
    low, high = 1.0, 1e12
    for _ in range(200):  # bisection on log r: the clipped sum decreases with r
        mid = float(np.sqrt(low * high))
        counts = np.maximum(np.array(long_tail_counts(INAT_K, INAT_MAX, mid)), INAT_MIN)
        low, high = (mid, high) if counts.sum() > INAT_N else (low, mid)
    return _fix_total(counts, INAT_N)


def inat_pareto_counts(seed: int = 0) -> np.ndarray:
    """A Pareto draw clipped to [2, 1000], shape tuned so the counts sum to N."""
    base = np.random.default_rng(seed).pareto(1.0, INAT_K) + 1.0
    low, high = 0.1, 10.0
    for _ in range(200):  # the scale-shape family min(max(2 * u^(1/a), 2), 1000) sums lower for larger a
        mid = 0.5 * (low + high)
        counts = np.clip(np.round(INAT_MIN * base ** (1.0 / mid)), INAT_MIN, INAT_MAX).astype(np.int64)
        low, high = (mid, high) if counts.sum() > INAT_N else (low, mid)
    return _fix_total(counts, INAT_N)


def labels_from_counts(counts: np.ndarray, seed: int = 0) -> torch.Tensor:
    labels = np.repeat(np.arange(len(counts)), counts)
    return torch.from_numpy(np.random.default_rng(seed).permutation(labels))


def paired_ms(fn, baseline, repeats: int) -> tuple[float, float, float, float]:
    """Median ms of ``fn`` and of ``baseline``, the median of their per-repeat ratios, the ratio of minima.

    The two are timed alternately within every repeat, so that load from other processes on a shared
    machine hits both alike; the median of the paired ratios is the headline figure, the ratio of the
    best times a check on it (minima are the least disturbed by load).
    """
    fn(), baseline()  # warm-up
    times, base_times, ratios = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        baseline()
        middle = time.perf_counter()
        fn()
        end = time.perf_counter()
        base_times.append(middle - start)
        times.append(end - middle)
        ratios.append((end - middle) / (middle - start))
    return (
        1e3 * statistics.median(times),
        1e3 * statistics.median(base_times),
        statistics.median(ratios),
        min(times) / min(base_times),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "samplers.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases = {
        "inat-exp": inat_exp_counts(),
        "inat-pareto": inat_pareto_counts(),
        "cifar100-lt-r100": np.array(long_tail_counts(100, 500, 100)),
    }
    rows = []
    for case, counts in cases.items():
        labels = labels_from_counts(counts)
        n = len(labels)
        gen = torch.Generator().manual_seed(0)
        print(f"\n{case}: N={n}, K={len(counts)}, counts {counts.max()}..{counts.min()}")
        print(f"{'sampler':<12} {'ms':>8} {'randperm ms':>12} {'ratio':>7} {'min ratio':>10}")
        for name in SAMPLER_NAMES:
            sampler = build_sampler(name, labels, **OPTIONS.get(name, {}))
            epochs = iter(range(10**9))
            ms, base_ms, ratio, min_ratio = paired_ms(
                lambda s=sampler, e=epochs: s.global_indices(next(e)),
                lambda n=n, gen=gen: torch.randperm(n, generator=gen),
                args.repeats,
            )
            rows.append(
                {
                    "case": case,
                    "N": n,
                    "K": len(counts),
                    "sampler": name,
                    "ms": ms,
                    "randperm_ms": base_ms,
                    "ratio": ratio,
                    "min_ratio": min_ratio,
                }
            )
            print(f"{name:<12} {ms:>8.2f} {base_ms:>12.2f} {ratio:>7.2f} {min_ratio:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
