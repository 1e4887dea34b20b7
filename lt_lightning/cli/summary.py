"""A suite's summary: ``summary.json`` (every run), ``summary.md`` (method × metric, mean ± sample std,
published numbers beside ours) and ``summary.png`` (many/medium/few per method, error bars).

Accuracies are printed in %, every number with 4 significant digits; the standard deviation is the
sample one (n − 1) and is absent (never 0) for a single seed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lt_lightning.cli.tables import significant

__all__ = ["SUMMARY_COLUMNS", "load_published", "mean_std", "suite_markdown", "write_suite_summary"]

#: (metric key, column title) of the summaries
SUMMARY_COLUMNS = (
    ("test/acc", "top-1"),
    ("test/balanced_acc", "balanced"),
    ("test/many_acc", "many"),
    ("test/medium_acc", "medium"),
    ("test/few_acc", "few"),
    ("nc/train/nc1", "NC1"),
)
_SHOTS = (("test/many_acc", "many"), ("test/medium_acc", "medium"), ("test/few_acc", "few"))
#: file of published numbers, beside the configs (``configs/PUBLISHED.yaml``)
PUBLISHED_FILE = "PUBLISHED.yaml"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1) of the finite ``values``; NaN where undefined."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan")
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, float("nan")
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return mean, 0.0 if std <= 1e-12 * max(1.0, abs(mean)) else std  # equal values: no rounding residue


def load_published(config: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """The published numbers of ``configs/<dataset>/<name>.yaml`` (``{metric: value %}``) and their source
    ("" and ``{}`` when the config follows no paper or the table is absent)."""
    path = Path(config).resolve()
    table = path.parent.parent / PUBLISHED_FILE
    if not table.is_file():
        return {}, ""
    data = yaml.safe_load(table.read_text()) or {}
    entry = (data.get("configs") or {}).get(f"{path.parent.name}/{path.stem}")
    if not entry:
        return {}, ""
    source = (data.get("sources") or {}).get(entry.get("source"), entry.get("source", ""))
    numbers = {f"test/{k}": float(v) for k, v in entry.items() if k.endswith("acc")}
    return numbers, f"{source}; {entry.get('setting', '')}".strip("; ")


def _cell(key: str, values: Sequence[float]) -> str:
    scale = 100.0 if key.startswith("test/") else 1.0
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    text = significant(scale * mean)
    return text if math.isnan(std) else f"{text} ± {significant(scale * std)}"


def _methods(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by.setdefault(run["config"], []).append(run)
    return by


def suite_markdown(runs: Sequence[dict[str, Any]], title: str = "") -> str:
    """One table: a row per config (its finished runs), a column per metric; a published number is
    printed beside ours as ``(paper: X)``, its source below the table."""
    heads = [t for _, t in SUMMARY_COLUMNS]
    lines = [f"## {title}", ""] if title else []
    lines += ["| method | seeds | " + " | ".join(heads) + " |", "|---|---:|" + "---:|" * len(heads)]
    notes: list[str] = []
    for config, group in _methods(runs).items():
        done = [r for r in group if r.get("status") in ("done", "skipped")]
        published, source = load_published(config)
        cells = []
        for key, _ in SUMMARY_COLUMNS:
            cell = _cell(key, [(r.get("metrics") or {}).get(key, float("nan")) for r in done])
            if key in published:
                cell += f" (paper: {significant(published[key])})"
            cells.append(cell)
        if source:
            notes.append(f"- {_label(config)}: {source}")
        seeds = f"{len(done)}" if len(done) == len(group) else f"{len(done)} of {len(group)}"
        lines.append(f"| {_label(config)} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracies in % (test split), mean ± sample std over seeds; NC1 of the training features."]
    if notes:
        lines += ["", "Published numbers:", *notes]
    return "\n".join(lines) + "\n"


def _label(config: str) -> str:
    path = Path(config)
    return f"{path.parent.name}/{path.stem}"


def _figure(runs: Sequence[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    methods = _methods(runs)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(methods) + 2), 3.2))
    width = 0.8 / len(_SHOTS)
    for j, (key, name) in enumerate(_SHOTS):
        means, errs = [], []
        for group in methods.values():
            values = [
                (r.get("metrics") or {}).get(key, float("nan")) for r in group if r.get("status") != "failed"
            ]
            m, s = mean_std(values)
            means.append(100 * m if not math.isnan(m) else 0.0)
            errs.append(100 * s if not math.isnan(s) else 0.0)
        xs = [i + (j - 1) * width for i in range(len(methods))]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=name)
    ax.set_xticks(range(len(methods)), [_label(c) for c in methods], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 118)  # room for the legend above the bars
    ax.legend(fontsize=8, ncols=3, loc="upper right")
    ax.set_title("many / medium / few-shot accuracy (mean ± sample std over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_suite_summary(out: Path, runs: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``summary.json``, ``summary.md`` and ``summary.png`` under ``out``; return the JSON data."""
    methods = {}
    for config, group in _methods(runs).items():
        done = [r for r in group if r.get("status") in ("done", "skipped")]
        stats = {}
        for key, _ in SUMMARY_COLUMNS:
            m, s = mean_std([(r.get("metrics") or {}).get(key, float("nan")) for r in done])
            stats[key] = {"mean": m, "std": s}
        published, source = load_published(config)
        methods[config] = {
            "n": len(done),
            "metrics": stats,
            "published": published,
            "published_source": source,
        }
    data = {**meta, "runs": list(runs), "methods": methods}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(_json_safe(data), indent=2) + "\n")
    (out / "summary.md").write_text(suite_markdown(runs, title=meta.get("title", "")))
    _figure(runs, out / "summary.png")
    return data
