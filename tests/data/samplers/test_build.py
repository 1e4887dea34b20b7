"""build_sampler: one table of named samplers, the options each takes and the errors for the others."""

from __future__ import annotations

import pytest

from lt_lightning.data.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    InstanceBalancedSampler,
    PowerSampler,
    ProgressivelyBalancedSampler,
    SquareRootSampler,
    StratifiedBatchSampler,
    build_sampler,
)
from tests.data.samplers.reference import COUNTS, labels_from_counts, make


def test_build_sampler_returns_each_kind() -> None:
    labels = labels_from_counts(COUNTS)
    expected = {
        "instance": InstanceBalancedSampler,
        "class": ClassBalancedSampler,
        "sqrt": SquareRootSampler,
        "power": PowerSampler,
        "progressive": ProgressivelyBalancedSampler,
        "stratified": StratifiedBatchSampler,
    }
    assert expected == SAMPLERS
    for name, cls in expected.items():
        assert type(make(name, labels)) is cls
    assert build_sampler("power", labels, q=0.7).q == 0.7
    assert build_sampler("progressive", labels, num_epochs=9).num_epochs == 9
    assert build_sampler("class", labels, samples_per_class=2).samples_per_class == 2
    assert build_sampler("stratified", labels, batch_size=16).batch_size == 16
    # options a sampler does not take are ignored (a datamodule may always pass them), q excepted
    assert type(build_sampler("instance", labels, num_epochs=3, batch_size=8)) is InstanceBalancedSampler


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        (
            "balanced",
            {},
            "unknown sampler 'balanced'; valid samplers: instance, class, sqrt, power, progressive, stratified",
        ),
        ("power", {}, r"the 'power' sampler needs q \(a number in \[0, 1\]\)"),
        ("progressive", {}, r"the 'progressive' sampler needs num_epochs \(the schedule length T >= 1\)"),
        ("stratified", {}, r"the 'stratified' sampler needs batch_size \(the global training batch\)"),
        ("class", {"q": 0.5}, "q=0.5 only applies to the 'power' sampler, not to 'class'"),
        ("sqrt", {"q": 0.5}, "only applies to the 'power' sampler"),
    ],
)
def test_build_sampler_errors(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_sampler(name, [0, 1, 1], **kwargs)
