"""The public names of DESIGN.md ("Public names other code and users rely on") keep their place and their
signatures (more keyword arguments are allowed)."""

from __future__ import annotations

import importlib
import inspect

import pytest

#: (module, name, the leading parameters as DESIGN.md writes them: name -> default, or ... for required)
SIGNATURES = [
    (
        "lt_lightning.data",
        "long_tail_counts",
        {"num_classes": ..., "max_count": ..., "imbalance_ratio": ..., "profile": "exp"},
    ),
    ("lt_lightning.data", "shot_groups", {"class_counts": ..., "many_threshold": 100, "few_threshold": 20}),
    ("lt_lightning.nn.functional", "simplex_etf", {"num_classes": ..., "dim": ..., "generator": None}),
    (
        "lt_lightning.nn.functional",
        "nearest_simplex_etf",
        {"means": ..., "prox": None, "delta": 1e-3, "solver": "procrustes"},
    ),
    (
        "lt_lightning.nn.functional",
        "causal_norm_logits",
        {"x": ..., "weight": ..., "num_heads": 2, "tau": 16.0, "gamma": 1 / 32, "embed": None, "alpha": 0.0},
    ),
    ("lt_lightning.nn.functional", "tau_normalize", {"weight": ..., "tau": ...}),
    (
        "lt_lightning.losses",
        "dot_regression_loss",
        {"features": ..., "etf": ..., "labels": ..., "class_balanced": True, "reg_lambda": 0.0},
    ),
    (
        "lt_lightning.metrics.functional",
        "neural_collapse",
        {"features": ..., "labels": ..., "weight": ..., "bias": None, "num_classes": None},
    ),
    (
        "lt_lightning.losses",
        "logit_adjusted_cross_entropy",
        {"logits": ..., "targets": ..., "class_counts": ..., "tau": 1.0},
    ),
    (
        "lt_lightning.losses",
        "ldam_loss",
        {
            "logits": ...,
            "targets": ...,
            "class_counts": ...,
            "max_margin": 0.5,
            "scale": 30.0,
            "weight": None,
        },
    ),
]

NAMES = [
    ("lt_lightning.metrics", "NeuralCollapse"),
    ("lt_lightning.metrics", "ShotAccuracy"),
    ("lt_lightning.callbacks", "NeuralCollapseCallback"),
    *[
        ("lt_lightning.models", n)
        for n in ("JointModule", "FixedETFModule", "ImplicitETFModule", "TDEModule", "DecoupledModule")
    ],
    *[
        ("lt_lightning.data", n)
        for n in (
            "CIFAR10LTDataModule",
            "CIFAR100LTDataModule",
            "ImageNetLTDataModule",
            "PlacesLTDataModule",
            "INaturalist2018DataModule",
            "MNISTLTDataModule",
            "FashionMNISTLTDataModule",
            "SVHNLTDataModule",
            "STL10LTDataModule",
            "DigitsLTDataModule",
            "SyntheticLTDataModule",
        )
    ],
    ("lt_lightning.optim", "AGD"),
    ("lt_lightning.metrics.functional", "minority_collapse"),
    ("lt_lightning.metrics.functional", "shot_accuracy"),
    ("lt_lightning.models", "load_module_from_checkpoint"),
]


@pytest.mark.parametrize("module, name, params", SIGNATURES, ids=[f"{m}.{n}" for m, n, _ in SIGNATURES])
def test_public_function_keeps_its_signature(module, name, params):
    fn = getattr(importlib.import_module(module), name)
    got = inspect.signature(fn).parameters
    for p, default in params.items():
        assert p in got, f"{module}.{name} lost the argument {p}"
        want = inspect.Parameter.empty if default is ... else default
        assert got[p].default == want, (p, got[p].default, want)
    leading = [
        p
        for p in got
        if got[p].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    positional = [p for p, d in params.items() if d is ...]
    assert leading[: len(positional)] == positional


@pytest.mark.parametrize("module, name", NAMES, ids=[f"{m}.{n}" for m, n in NAMES])
def test_public_name_is_importable(module, name):
    assert getattr(importlib.import_module(module), name) is not None


def test_in_memory_datamodules_take_the_pipeline_and_the_shot_group_options():
    from lt_lightning.data import CIFAR10LTDataModule, DigitsLTDataModule

    for cls in (CIFAR10LTDataModule, DigitsLTDataModule):
        options = set(inspect.signature(cls.__init__).parameters)
        base = set(inspect.signature(cls.__mro__[1].__init__).parameters)
        assert {"pipeline", "shot_group_boundaries"} <= options | base | _all_init_options(cls)
    dm = DigitsLTDataModule(pipeline="device", shot_group_boundaries=[3, 6])
    assert dm.pipeline == "device" and dm.shot_groups == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]


def _all_init_options(cls) -> set[str]:
    out: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            out |= set(inspect.signature(init).parameters)
    return out


def test_neural_collapse_returns_at_least_the_documented_keys():
    import torch

    from lt_lightning.metrics.functional import neural_collapse

    means = torch.eye(3) - 1 / 3
    labels = torch.arange(3).repeat(4)
    res = neural_collapse(
        means[labels] + 0.01 * torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), labels, means
    )
    keys = {"nc1", "nc2", "nc2_h", "nc3", "nc4", "bias_collapse", "equinorm_w", "equinorm_h"}
    assert keys <= set(res) and all(isinstance(res[k], float) for k in keys)
