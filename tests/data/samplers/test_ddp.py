"""A real 2-process CPU DDP run under Lightning: each rank takes its slice of the same global epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lt_lightning.data.samplers import ClassBalancedSampler
from tests.data.samplers.reference import reference_padded_order

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.ddp
def test_lightning_ddp_ranks_see_disjoint_slices_of_the_epoch(tmp_path: Path) -> None:
    launcher_vars = {"MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"}
    env = {k: v for k, v in os.environ.items() if k not in launcher_vars}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    script = REPO / "tests" / "data" / "ddp_sampler_script.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert record["rank"] == rank and record["world_size"] == 2
        assert record["sampler_world"] == [2, rank]  # defaults resolved from torch.distributed
        assert record["used_sampler"] == "ClassBalancedSampler"  # Lightning did not wrap it
    reference = ClassBalancedSampler(records[0]["labels"], seed=records[0]["seed"])
    seen = {}
    for epoch in ("0", "1"):
        together = records[0]["epochs"][epoch] + records[1]["epochs"][epoch]
        assert len(records[0]["epochs"][epoch]) == len(records[1]["epochs"][epoch])
        assert together == reference_padded_order(reference.global_indices(int(epoch)).tolist(), 2)
        seen[epoch] = together
    assert seen["0"] != seen["1"]  # set_epoch reached the sampler
