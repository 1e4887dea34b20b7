"""Unconstrained-feature-model (UFM) experiments: how fast does each classifier reach neural collapse?

Features are free parameters (:class:`~lt_lightning.nn.backbones.UnconstrainedFeatures`), trained
full-batch with SGD and weight decay together with the classifier; NC metrics are measured every step.
Markou et al. (NeurIPS 2024) report that the implicit ETF reaches a given NC level in fewer steps than
a fixed ETF and a learned classifier. ``bench/ufm_nc.py`` draws the curves; a test checks a small case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lt_lightning.data.profiles import long_tail_counts
from lt_lightning.metrics.functional import neural_collapse
from lt_lightning.models import FixedETFModule, ImplicitETFModule, JointModule

__all__ = ["UFM_METHODS", "UFMResult", "run_ufm", "steps_to_reach"]

UFM_METHODS = ("learned", "fixed_etf", "implicit_etf")


@dataclass
class UFMResult:
    method: str
    nc1: list[float] = field(default_factory=list)
    nc2: list[float] = field(default_factory=list)
    nc3: list[float] = field(default_factory=list)
    nc4: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    #: the trained module (its free features and classifier) and the sample labels, for geometry plots
    model: Any = None
    labels: Any = None


def _build(method: str, num_classes: int, num_samples: int, dim: int, seed: int):
    # the modules' own optimizer is not used: run_ufm trains full-batch with its own SGD
    features = {"num_samples": num_samples, "dim": dim, "seed": seed}
    if method == "learned":
        return JointModule(num_classes=num_classes, backbone="ufm", backbone_kwargs=features)
    if method == "fixed_etf":
        return FixedETFModule(
            num_classes=num_classes,
            backbone="ufm",
            backbone_kwargs=features,
            loss="ce",
            neck="none",
            etf_seed=seed,
        )
    if method == "implicit_etf":
        return ImplicitETFModule(
            num_classes=num_classes, backbone="ufm", backbone_kwargs=features, solver="procrustes"
        )
    raise ValueError(f"unknown UFM method {method!r}; valid: {', '.join(UFM_METHODS)}")


def run_ufm(
    method: str,
    *,
    num_classes: int = 10,
    per_class: int = 10,
    imbalance_ratio: float = 1.0,
    dim: int | None = None,
    steps: int = 200,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    seed: int = 0,
) -> UFMResult:
    """Train one classifier with free features full-batch; NC1/NC3, loss and accuracy after every step.

    ``imbalance_ratio > 1`` gives the class sizes ``long_tail_counts(K, per_class, r)``.
    """
    counts = long_tail_counts(num_classes, per_class, imbalance_ratio)
    labels = torch.repeat_interleave(torch.arange(num_classes), torch.tensor(counts))
    n = len(labels)
    dim = dim or 2 * num_classes
    torch.manual_seed(seed)
    model = _build(method, num_classes, n, dim, seed)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    idx = torch.arange(n)
    result = UFMResult(method)
    for _ in range(steps):
        feats = model.extract_features(idx)
        model.on_train_features(feats, labels)
        logits = model.forward_head(feats)
        loss = model.compute_loss(logits, feats, labels, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            h = model.extract_features(idx).double()
            w, b = model.classifier_weight_bias()
            preds = model.forward_head(h.to(feats.dtype))
            nc = neural_collapse(
                h, labels, w.double(), None if b is None else b.double(), num_classes, predictions=preds
            )
            for key in ("nc1", "nc2", "nc3", "nc4"):
                getattr(result, key).append(nc[key])
            result.loss.append(float(loss))
            result.accuracy.append(float((logits.argmax(1) == labels).double().mean()))
    result.model = model
    result.labels = labels
    return result


def steps_to_reach(values: list[float], level: float) -> int | None:
    """First step (1-based) from which the metric stays below ``level``; None if it never does."""
    for i in range(len(values)):
        if all(v < level for v in values[i:]):
            return i + 1
    return None
