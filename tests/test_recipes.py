"""Every shipped config against the recipe table configs/RECIPES.yaml (facts from the authors' code, each
with its source file), and the recipe rules of issue 8 that hold across configs."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml

from lt_lightning.cli.configs import resolve_config

ROOT = Path(__file__).parents[1]
TABLE = yaml.safe_load((ROOT / "configs" / "RECIPES.yaml").read_text())
RECIPES: dict[str, dict] = TABLE["configs"]
#: the runnable configs; configs/<dataset>/_base.yaml holds the blocks they share (included, not run)
CONFIGS = {
    f"{p.parent.name}/{p.stem}": p
    for p in sorted((ROOT / "configs").glob("*/*.yaml"))
    if not p.name.startswith("_")
}
MISSING = object()


@functools.cache
def _resolved(name: str) -> dict:
    return resolve_config(CONFIGS[name])


def _load(name: str) -> dict:
    """The config as the CLI runs it: its shared blocks included, every option (defaults too) present."""
    return _resolved(name)


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def test_every_config_has_exactly_one_recipe():
    assert set(CONFIGS) == set(RECIPES), {
        "configs without a recipe": sorted(set(CONFIGS) - set(RECIPES)),
        "recipes without a config": sorted(set(RECIPES) - set(CONFIGS)),
    }


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_entry_is_well_formed(name):
    entry = RECIPES[name]
    assert entry["follows"] in set(TABLE["sources"]) | {"own"}, entry["follows"]
    assert entry["follows"] in TABLE["checkpoints"]
    for key, spec in (entry.get("values") or {}).items():
        assert isinstance(spec, list) and len(spec) == 2, (key, spec)
        source = spec[1]
        # a fact names the authors' file it comes from (or is one of our documented rules)
        assert source.split(" ")[0] in set(TABLE["sources"]) | {"issue", "ours:"}, (key, source)
    if entry["follows"] == "own":
        assert entry.get("deviations") or name.split("/")[0] in ("digits_lt", "synthetic_lt"), name


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_follows_its_recipe(name):
    cfg = _load(name)
    for key, (value, source) in (RECIPES[name].get("values") or {}).items():
        got = _get(cfg, key)
        assert got is not MISSING, f"{name}: {key} missing (recipe: {value!r} from {source})"
        if isinstance(value, float):
            assert got == pytest.approx(value), f"{name}: {key} = {got!r}, recipe {value!r} ({source})"
        else:
            assert got == value, f"{name}: {key} = {got!r}, recipe {value!r} ({source})"


# ---- rules from the authors' training loops, across all configs ------------------------------------------


@pytest.mark.parametrize("name", [n for n in sorted(CONFIGS) if n.split("/")[1] in ("crt", "lws")])
def test_stage2_schedules_step_once_per_epoch(name):
    # Kang's and Tang's run_networks.py step the scheduler once per epoch
    assert _get(_load(name), "model.init_args.lr_schedule.interval") == "epoch"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tangs_epoch_start_stepping_only_where_tangs_code_is_followed(name):
    offset = _get(_load(name), "model.init_args.lr_schedule.epoch_offset")
    if RECIPES[name]["follows"] == "tang":
        assert offset == 1, name
        assert "Tang's run_networks.py" in CONFIGS[name].read_text()  # the config says which convention
    else:
        assert offset in (MISSING, 0, None), name


IN_MEMORY = (
    "cifar10_lt",
    "cifar100_lt",
    "digits_lt",
    "synthetic_lt",
    "mnist_lt",
    "fashion_mnist_lt",
    "svhn_lt",
    "stl10_lt",
)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_nothing_is_tuned_on_the_test_split(name):
    cfg = _load(name)
    model = _get(cfg, "model.init_args")
    tunes_tau = name.endswith("/tau_norm") and _get(cfg, "model.init_args.tau") in (MISSING, None)
    tunes_alpha = isinstance(model, dict) and model.get("alpha_from_validation") is True
    if (tunes_tau or tunes_alpha) and name.split("/")[0] in IN_MEMORY:
        # these datamodules validate on the test split unless val_per_class > 0
        assert (_get(cfg, "data.init_args.val_per_class") or 0) > 0, name


@pytest.mark.parametrize(
    "name", [n for n in sorted(CONFIGS) if n.endswith(("/crt", "/lws", "/tau_norm", "/ncm"))]
)
def test_stage2_uses_the_split_of_its_stage1(name):
    # the held-out images of stage 2 must not be training images of the stage-1 checkpoint it loads
    stage1 = Path(
        _get(_load(name), "model.init_args.stage1_checkpoint")
    ).parent.parent.name  # <method>/seed{seed}
    key = "data.init_args.val_per_class"
    s1, s2 = _get(_load(f"{name.split('/')[0]}/{stage1}"), key), _get(_load(name), key)
    if name.split("/")[0] == "digits_lt":
        return  # digits: val_per_class <= 4 never touches a training image (every class keeps 4 unused)
    assert s1 == s2, (name, s1, s2)


def test_readme_recipes_section_covers_every_config():
    readme = (ROOT / "README.md").read_text()
    assert "## Recipes" in readme
    section = readme.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    for name in CONFIGS:
        dataset, method = name.split("/")
        assert f"`{name}`" in section or (f"`{dataset}`" in section and f"`{method}`" in section), name


def test_every_datamodule_has_a_config():
    import inspect

    import lt_lightning.data as data

    modules = {
        f"lt_lightning.data.{name}"
        for name, obj in list(vars(data).items())
        if inspect.isclass(obj)
        and issubclass(obj, data.LongTailDataModule)
        and obj is not data.LongTailDataModule
        and not name.startswith("_")
    }
    used = {_load(n)["data"]["class_path"] for n in CONFIGS}
    assert modules <= used, sorted(modules - used)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in sorted(CONFIGS)
        if str(_get(_load(n), "model.init_args.optimizer.class_path")).endswith("optim.AGD")
    ],
)
def test_agd_configs_train_only_conv_and_linear_weights(name):
    # Markou's --declarative_ETF --no-bias ResNet-18 gives AGD its 20 conv weights and nothing else
    # (nc/models/model_structure.py make_optimiser: trainable parameters, no classifier; BN affine=False)
    import importlib

    from lt_lightning.optim import AGD

    cfg = _load(name)
    module_name, _, cls_name = cfg["model"]["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    init_args = {
        k: v for k, v in cfg["model"]["init_args"].items() if k not in ("class_counts", "shot_groups")
    }
    model = cls(**{**init_args, "num_classes": 10})
    named = model.named_trainable_parameters()
    assert all(p.dim() == 4 for _, p in named), [(n, tuple(p.shape)) for n, p in named if p.dim() != 4]
    assert all(n.startswith("backbone.") for n, _ in named)
    assert not [n for n, _ in model.head.named_parameters()]  # the implicit ETF head: buffers only
    assert len(named) == 20  # ResNet-18: stem + 16 block convs + 3 downsample 1x1 convs
    gain = cfg["model"]["init_args"]["optimizer"]["init_args"]["gain"]
    assert AGD(named, gain=gain).depth == 20
