"""lt_lightning.data as a package: its public names, where they live, what it imports, how big its files are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lt_lightning.data as data

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "lt_lightning" / "data"

# the names the design document (DESIGN.md) lists under lt_lightning.data
DESIGN_NAMES = [
    "long_tail_counts",
    "shot_groups",
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
]


def test_every_public_name_is_a_plain_attribute() -> None:
    assert "__getattr__" not in vars(data)  # plain imports, no PEP 562 lazy loading
    for name in data.__all__:
        assert name in vars(data), name
    for name in [
        *DESIGN_NAMES,
        "StratifiedBatchSampler",
        "SAMPLER_NAMES",
        "SAMPLERS",
        "Mixup",
        "mixup_batch",
        "ResumableDataLoader",
        "DeviceLoader",
        "build_sampler",
        "long_tail_split",
    ]:
        assert name in data.__all__, name


def test_the_submodules_public_names_are_exported() -> None:
    from lt_lightning.data import augment, datamodules, loading, samplers

    for module in (augment, datamodules, samplers):
        missing = set(module.__all__) - set(data.__all__) - {"train_drop_last"}
        assert not missing, (module.__name__, missing)
    assert {"ResumableDataLoader", "ResumePosition"} <= set(data.__all__) and loading.__all__


def test_importing_data_does_not_import_the_upper_floors() -> None:
    code = "import sys, json, lt_lightning.data; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    loaded = [m for m in json.loads(out.stdout) if m.startswith("lt_lightning.")]
    upper = ("lt_lightning.models", "lt_lightning.callbacks", "lt_lightning.metrics", "lt_lightning.cli")
    assert not [m for m in loaded if m.startswith(upper)], loaded


def test_no_file_of_the_package_is_over_500_lines() -> None:
    sizes = {str(p.relative_to(DATA)): len(p.read_text().splitlines()) for p in DATA.rglob("*.py")}
    assert max(sizes.values()) <= 500, sizes
