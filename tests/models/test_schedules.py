import math

import pytest

from lt_lightning.models.schedules import lr_factor


def test_warmup_then_multistep_like_yang():
    f = lambda e: lr_factor(  # noqa: E731
        e,
        schedule="multistep",
        max_epochs=200,
        warmup_epochs=5,
        warmup_start_factor=0.0,
        milestones=[160, 180],
        milestone_factors=[0.1, 0.01],
    )
    assert f(0) == 0.0 and f(2.5) == pytest.approx(0.5) and f(5) == 1.0
    assert f(159.9) == 1.0 and f(160) == 0.1 and f(179) == 0.1 and f(180) == 0.01 and f(199) == 0.01


def test_cosine_after_warmup():
    f = lambda e: lr_factor(e, schedule="cosine", max_epochs=10, warmup_epochs=2, warmup_start_factor=1 / 3)  # noqa: E731
    assert f(0) == pytest.approx(1 / 3) and f(2) == pytest.approx(1.0)
    assert f(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(10) == pytest.approx(0.0) and f(12) == pytest.approx(0.0)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        lr_factor(1.0, schedule="linear", max_epochs=3)
