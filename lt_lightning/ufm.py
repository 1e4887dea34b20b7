"""Unconstrained-feature-model (UFM) experiments: how fast does each classifier reach neural collapse?

Features are free parameters (:class:`~lt_lightning.nn.backbones.UnconstrainedFeatures`), trained
full-batch with SGD and weight decay together with the classifier; NC metrics are measured every step.
Markou et al. (NeurIPS 2024) report that the implicit ETF reaches a given NC level in fewer steps than
a fixed ETF and a learned classifier. ``bench/ufm_nc.py`` draws the curves; a test checks a small case.

Under imbalance a learned classifier with CE and vanishing weight decay approaches the SELI geometry
(Thrampoulidis et al., NeurIPS 2022), not the ETF: every step also records ``seli_w``, ``seli_h``,
``seli_wh`` and the centred classifier's distance to the ETF (``etf_w``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lt_lightning.data.profiles import long_tail_counts
from lt_lightning.metrics.functional import neural_collapse
from lt_lightning.models import FixedETFModule, ImplicitETFModule, JointModule

__all__ = ["UFM_METHODS", "UFMResult", "etf_distance_centred", "run_ufm", "steps_to_reach"]

UFM_METHODS = ("learned", "fixed_etf", "implicit_etf")


@dataclass
class UFMResult:
    method: str
    nc1: list[float] = field(default_factory=list)
    nc2: list[float] = field(default_factory=list)
    nc3: list[float] = field(default_factory=list)
    nc4: list[float] = field(default_factory=list)
    #: distances to the SELI geometry (Thrampoulidis et al. 2022; equal to the ETF's when balanced)
    seli_w: list[float] = field(default_factory=list)
    seli_h: list[float] = field(default_factory=list)
    seli_wh: list[float] = field(default_factory=list)
    #: distances of the centred classifier / class means to the ETF (nc2 is of the uncentred W)
    etf_w: list[float] = field(default_factory=list)
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
    measure_every: int = 1,
) -> UFMResult:
    """Train one classifier with free features full-batch; NC1–NC4, the SELI distances, loss and accuracy
    after every ``measure_every``-th step (and the last).

    ``imbalance_ratio > 1`` gives the class sizes ``long_tail_counts(K, per_class, r)``.
    """
    if isinstance(measure_every, bool) or not isinstance(measure_every, int) or measure_every < 1:
        raise ValueError(f"measure_every must be a positive integer, got {measure_every!r}")
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
    for step in range(steps):
        feats = model.extract_features(idx)
        model.on_train_features(feats, labels)
        logits = model.forward_head(feats)
        loss = model.compute_loss(logits, feats, labels, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % measure_every and step + 1 != steps:
            continue
        with torch.no_grad():
            h = model.extract_features(idx).double()
            w, b = model.classifier_weight_bias()
            preds = model.forward_head(h.to(feats.dtype))
            nc = neural_collapse(
                h, labels, w.double(), None if b is None else b.double(), num_classes, predictions=preds
            )
            for key in ("nc1", "nc2", "nc3", "nc4", "seli_w", "seli_h", "seli_wh"):
                getattr(result, key).append(nc[key])
            result.etf_w.append(etf_distance_centred(w.double()))
            result.loss.append(float(loss))
            result.accuracy.append(float((logits.argmax(1) == labels).double().mean()))
    result.model = model
    result.labels = labels
    return result


def etf_distance_centred(weight: torch.Tensor) -> float:
    """``‖CWWᵀC/‖CWWᵀC‖_F − C/‖C‖_F‖_F``: the centred classifier's distance to the simplex ETF, the quantity
    ``seli_w`` measures against SELI instead (so the two are comparable)."""
    k = weight.shape[0]
    c = torch.eye(k, dtype=weight.dtype) - 1.0 / k
    cw = c @ weight
    gram = cw @ cw.T
    return float(torch.linalg.matrix_norm(gram / torch.linalg.matrix_norm(gram) - c / (k - 1) ** 0.5))


def steps_to_reach(values: list[float], level: float) -> int | None:
    """First step (1-based) from which the metric stays below ``level``; None if it never does."""
    for i in range(len(values)):
        if all(v < level for v in values[i:]):
            return i + 1
    return None
