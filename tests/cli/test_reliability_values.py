"""Issue 20, item 8: values that were accepted silently are refused in one line (or warned about once).

``--trainer.log_every_n_steps -1``: tests/cli/test_guards.py; ``batch_size`` above the training set:
tests/data/test_loading.py; NaN in the validation data: tests/callbacks/test_finite.py.
"""

from __future__ import annotations

import pytest

from lt_lightning.cli import build_cli, format_error
from lt_lightning.optim import LRSchedule
from tests.cli.helpers import QUIET, digits


def test_multistep_without_milestones_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as info:
        build_cli(
            ["fit", "--config", digits("joint"), *QUIET, "--model.init_args.lr_schedule", "{name: multistep}"]
        )
    message = format_error(info.value)
    assert "lr_schedule multistep has no milestones (a constant lr)" in message and "\n" not in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "fields",
    [{"name": "multistep"}, {"name": "multistep", "milestones": [], "milestone_factors": []}],
)
def test_lr_schedule_multistep_needs_milestones(fields):
    with pytest.raises(ValueError, match="multistep has no milestones"):
        LRSchedule(**fields)
    # with them (or another schedule without them) it is accepted
    LRSchedule("multistep", milestones=[2], milestone_factors=[0.1])
    LRSchedule("cosine")
