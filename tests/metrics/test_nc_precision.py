"""The float32 (GEMM-speed) path of ``neural_collapse`` against the float64 path on hard inputs."""

from __future__ import annotations

import importlib
import math

import pytest
import torch

from lt_lightning.data.profiles import long_tail_counts
from lt_lightning.metrics.functional import neural_collapse


def _case(kind: str, n: int = 3000, d: int = 48, k: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if kind == "long_tail":
        counts = torch.tensor(long_tail_counts(k, 600, 100), dtype=torch.float64)
        labels = torch.multinomial(counts, n, replacement=True, generator=g)
    else:
        labels = torch.arange(n) % k
    means = torch.randn(k, d, generator=g, dtype=torch.float64)
    spread = {"near_collapse": 1e-4, "large_offset": 0.05}.get(kind, 0.5)
    h = means[labels] + spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    if kind == "large_offset":
        h = h + 1e4 * torch.randn(d, generator=g, dtype=torch.float64)
    w = torch.randn(k, d, generator=g)
    b = torch.randn(k, generator=g)
    if kind == "large_offset":  # keep the logits' bias collapse meaningful
        b = b - (w.double() @ h.mean(0)).float()
    return h.float(), labels, w, b


def _assert_close(fast: dict, exact: dict, rel: float = 1e-6) -> None:
    assert fast.keys() == exact.keys()
    for key, ref in exact.items():
        if math.isnan(ref):
            assert math.isnan(fast[key]), key
        elif key.startswith("nc4"):
            assert fast[key] == ref, key  # the same mismatch count, not just close
        else:
            assert fast[key] == pytest.approx(ref, rel=rel, abs=1e-12), key


@pytest.mark.parametrize("kind", ["plain", "large_offset", "near_collapse", "long_tail"])
def test_float32_path_matches_float64(kind):
    h, y, w, b = _case(kind)
    exact = neural_collapse(h, y, w, b, precision="float64")
    fast = neural_collapse(h, y, w, b)  # float32 features: the float32 path by default
    _assert_close(fast, exact)
    # the float32 path really differs in arithmetic from the float64 one (so this test can fail)
    assert neural_collapse(h, y, w, b, precision="float32") == fast


@pytest.mark.parametrize("kind", ["large_offset", "long_tail"])
def test_float32_path_groups_classes_and_predictions(kind):
    h, y, w, b = _case(kind, k=9)
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    logits = (h.double() @ w.double().T + b.double()).float()
    for kwargs in (
        {"shot_groups": groups},
        {"classes": [0, 2, 3, 5, 8]},
        {"classes": [1, 2, 4, 7], "shot_groups": groups, "predictions": logits},
        {"predictions": logits.argmax(1), "shot_groups": groups},
        {"global_mean": "class"},
    ):
        exact = neural_collapse(h, y, w, b, precision="float64", **kwargs)
        _assert_close(neural_collapse(h, y, w, b, **kwargs), exact)


def test_float32_path_many_chunks(monkeypatch):
    # the module, not the function of the same name that the package exports
    one_shot = importlib.import_module("lt_lightning.metrics.functional.neural_collapse")

    h, y, w, b = _case("large_offset", n=2000)
    one = neural_collapse(h, y, w, b)
    orig = one_shot._neural_collapse_stats_f32
    monkeypatch.setattr(
        one_shot, "_neural_collapse_stats_f32", lambda *a, **kw: orig(*a, **{**kw, "chunk": 256})
    )
    exact = neural_collapse(h, y, w, b, precision="float64")
    _assert_close(one, exact)
    _assert_close(neural_collapse(h, y, w, b), exact)


def test_nc4_near_ties_are_reranked_in_float64():
    # Samples on (or a rounding error away from) the bisector of two class means: float32 scores
    # cannot rank them, the float64 path can; the counts must agree exactly.
    g = torch.Generator().manual_seed(3)
    k, d, n = 4, 16, 800
    means = 100.0 + torch.randn(k, d, generator=g, dtype=torch.float64)
    labels = torch.arange(n) % k
    t = 0.5 + 1e-7 * torch.randn(n, generator=g, dtype=torch.float64)
    h = (means[labels] * (1 - t[:, None]) + means[(labels + 1) % k] * t[:, None]).float()
    w = torch.randn(k, d, generator=g)
    exact = neural_collapse(h, labels, w, precision="float64")
    fast = neural_collapse(h, labels, w)
    assert 0.0 < exact["nc4"] < 1.0
    assert fast["nc4"] == exact["nc4"]


def test_precision_defaults_and_validation():
    h, y, w, b = _case("plain", n=240)
    # float64 features keep the float64 path by default
    assert neural_collapse(h.double(), y, w, b) == neural_collapse(h.double(), y, w, b, precision="float64")
    # half-precision features are promoted to the float32 path
    _assert_close(
        neural_collapse(h.bfloat16(), y, w, b), neural_collapse(h.bfloat16().float(), y, w, b), rel=0
    )
    with pytest.raises(ValueError, match="precision must be one of"):
        neural_collapse(h, y, w, b, precision="float16")
