"""Every shipped config against the recipe table configs/RECIPES.yaml (facts from the authors' code, each
with its source file), and the recipe rules of issue 8 that hold across configs."""

from __future__ import annotations

import functools
import re
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


#: "<source> <file>:<line>" or "<source> <file>:<first>-<last>", the line(s) of the authors' file
WHERE = re.compile(r"^(?P<source>\w+) (?P<file>[\w./{},*-]+):(?P<first>\d+)(?:-(?P<last>\d+))?$")
#: our own documented rules instead of an author's file
OUR_RULES = re.compile(r"^(ours|issue \d+)$")
#: keys whose value an author's config or script states as a literal number: the quote must hold it
LITERAL_NUMBERS = {
    "lr",
    "momentum",
    "weight_decay",
    "max_epochs",
    "batch_size",
    "global_batch_size",
    "alpha",
    "reg_lambda",
    "gain",
    "feature_scale",
    "delta",
    "max_iterations",
    "cb_beta",
    "ldam_scale",
    "ldam_max_margin",
}
#: what a recipe is not: where data lives, how many workers, seeds, callbacks, devices, checkpoint paths
NOT_RECIPE_PREFIXES = (
    "seed_everything",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.callbacks",
    "trainer.default_root_dir",
    "trainer.logger",
    "data.class_path",
    "model.class_path",
)
NOT_RECIPE_LEAVES = {
    "data_dir",
    "num_workers",
    "seed",
    "download",
    "pin_memory",
    "persistent_workers",
    "check_files",
    "train_file",
    "val_file",
    "test_file",
    "stage1_checkpoint",
    "weights_path",
}
#: the training keys, not part of a recipe that does not train (tau-norm and NCM only evaluate stage 1)
TRAINING_PREFIXES = (
    "trainer.",
    "model.init_args.optimizer.",
    "model.init_args.lr_schedule.",
    "data.init_args.batch_size",
    "data.init_args.global_batch_size",
    "data.init_args.drop_last",
    "data.init_args.sampler",
)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _flatten(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set_keys(path: Path) -> list[str]:
    """The dotted leaf keys a config file sets, its included ``_base.yaml`` first (defaults excluded)."""
    doc = yaml.safe_load(path.read_text())
    keys = _set_keys(path.parent / doc.pop("config")) if "config" in doc else []
    return keys + [k for k in _flatten(doc) if k not in keys]


def recipe_keys(name: str) -> list[str]:
    """The recipe-relevant keys ``name`` sets: optimiser, schedule, epochs, batch, precision, data, loss, head."""
    keys = [
        k
        for k in _set_keys(CONFIGS[name])
        if not k.startswith(NOT_RECIPE_PREFIXES) and k.split(".")[-1] not in NOT_RECIPE_LEAVES
    ]
    if _get(_load(name), "model.init_args.mode") in ("tau_norm", "ncm"):
        keys = [k for k in keys if not k.startswith(TRAINING_PREFIXES)]
    return keys


PAPER_CONFIGS = sorted(n for n, e in RECIPES.items() if e["follows"] != "own")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_entry_is_well_formed(name):
    entry = RECIPES[name]
    assert entry["follows"] in set(TABLE["sources"]) | {"own"}, entry["follows"]
    assert entry["follows"] in TABLE["checkpoints"]
    for key, spec in (entry.get("values") or {}).items():
        # a value, the file and line of the authors' repository it comes from, and the text there
        assert isinstance(spec, list) and len(spec) == 3, (key, spec)
        _, where, quote = spec
        match = WHERE.match(where)
        assert (match and match["source"] in TABLE["sources"]) or OUR_RULES.match(where), (key, where)
        assert isinstance(quote, str) and quote.strip(), (key, quote)
        if match and match["last"]:
            assert int(match["first"]) < int(match["last"]), (key, where)
    if entry["follows"] == "own":
        assert entry.get("deviations") or name.split("/")[0] in ("digits_lt", "synthetic_lt"), name


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_config_follows_its_recipe(name):
    cfg = _load(name)
    for key, (value, where, quote) in (RECIPES[name].get("values") or {}).items():
        got = _get(cfg, key)
        assert got is not MISSING, f"{name}: {key} missing (recipe: {value!r} from {where}: {quote!r})"
        if isinstance(value, float):
            assert got == pytest.approx(value), (
                f"{name}: {key} = {got!r}, recipe {value!r} ({where}: {quote!r})"
            )
        else:
            assert got == value, f"{name}: {key} = {got!r}, recipe {value!r} ({where}: {quote!r})"


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_a_paper_config_lists_every_recipe_key_it_sets(name):
    # the table is complete: nothing a paper-following config trains with goes unchecked
    listed = set(RECIPES[name].get("values") or {})
    missing = [k for k in recipe_keys(name) if k not in listed]
    assert not missing, f"{name} sets recipe keys RECIPES.yaml does not list: {missing}"


def unnamed_foreign_values(entry: dict) -> list[str]:
    """Keys of an entry that follows X whose value is not from X's files and that no deviation names."""
    author = entry["follows"]
    deviations = " ".join(entry.get("deviations") or [])
    return [
        key
        for key, (_, where, _) in (entry.get("values") or {}).items()
        if not where.startswith(f"{author} ") and key.split(".")[-1] not in deviations
    ]


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_a_claim_without_deviation_is_all_the_authors_values(name):
    # "follows X": every value comes from X's files, or the deviations name it (by its last key)
    unnamed = unnamed_foreign_values(RECIPES[name])
    assert not unnamed, (
        f"{name} follows {RECIPES[name]['follows']}: not its values, no deviation names them: {unnamed}"
    )


def test_the_claim_check_catches_issue_16s_claims():
    # places_lt/tde as it was: "follows tang", no deviation, but Kang's Places lr 0.01 and 30 epochs
    old_places_tde = {
        "follows": "tang",
        "values": {
            "model.init_args.optimizer.init_args.lr": [
                0.01,
                "kang config/Places_LT/cls_crt.yaml:20",
                "lr: 0.01",
            ],
            "trainer.max_epochs": [30, "ours", "Kang's Places-LT stage 1"],
            "model.init_args.alpha": [3.0, "tang config/Places_LT/causal_norm.yaml:19", "alpha: 3.0"],
        },
    }
    assert unnamed_foreign_values(old_places_tde) == [
        "model.init_args.optimizer.init_args.lr",
        "trainer.max_epochs",
    ]
    named = {**old_places_tde, "deviations": ["lr 0.01 and max_epochs 30 from Kang's Places-LT recipe"]}
    assert unnamed_foreign_values(named) == []
    # and the completeness check sees a key a config sets beyond its table entry
    assert "trainer.precision" in recipe_keys("places_lt/tde")
    assert "data.init_args.data_dir" not in recipe_keys("places_lt/tde")
    assert recipe_keys("imagenet_lt/tau_norm") == ["model.init_args.mode"]  # evaluates only


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_quoted_numbers_are_the_values(name):
    # where an author's file states a number literally, the quoted text holds the value the table gives
    for key, (value, where, quote) in (RECIPES[name].get("values") or {}).items():
        if OUR_RULES.match(where) or key.split(".")[-1] not in LITERAL_NUMBERS:
            continue
        numbers = [float(x) for x in NUMBER.findall(quote)]
        assert any(x == pytest.approx(float(value)) for x in numbers), (name, key, value, quote)


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
        return  # digits: val_per_class <= 8 never touches a training image (the datamodule checks it per class)
    assert s1 == s2, (name, s1, s2)


#: how the README names whose recipe a config follows
FOLLOWS_LABELS = {
    "kang": "Kang et al. ICLR 2020 (classifier-balancing)",
    "tang": "Tang et al. NeurIPS 2020 (Long-Tailed-Recognition.pytorch)",
    "yang": "Yang et al. NeurIPS 2022 (ImbalancedLearning)",
    "markou": "Markou et al. (Guiding-Neural-Collapse)",
    "ldam": "Cao et al. NeurIPS 2019 (LDAM-DRW)",
    "wb": "Alshammari et al. CVPR 2022 (LTR-weight-balancing)",
    "own": "our own composition",
}


def readme_recipe_rows() -> list[str]:
    """The README "Recipes" table rows, written from RECIPES.yaml (regenerate the README's from this)."""
    return [
        f"| `{name}` | {FOLLOWS_LABELS[e['follows']]} | {'; '.join(e.get('deviations') or []) or '–'} |"
        for name, e in RECIPES.items()
    ]


def test_readme_recipes_table_is_written_from_the_table():
    readme = (ROOT / "README.md").read_text()
    assert "## Recipes" in readme
    section = readme.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == readme_recipe_rows()  # every config, every deviation, in the table's order
    assert set(FOLLOWS_LABELS) == set(TABLE["sources"]) | {"own"}


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


# ---- issue 16: facts of the originals, across configs --------------------------------------------------


def _trains(name: str) -> bool:
    return _get(_load(name), "model.init_args.mode") not in ("tau_norm", "ncm")


@pytest.mark.parametrize("name", [n for n in PAPER_CONFIGS if _trains(n)])
def test_paper_configs_train_in_float32(name):
    # no autocast in any author's training loop (Kang, Tang, Yang, LDAM-DRW, Markou)
    assert _get(_load(name), "trainer.precision") == "32-true", name


@pytest.mark.parametrize("name", [n for n in PAPER_CONFIGS if _trains(n)])
def test_epochs_end_where_the_authors_loops_end_them(name):
    # Kang's and Tang's run_networks.py break at step == int(N / batch_size): the last partial batch never
    # trains; Yang's and LDAM-DRW's DataLoaders keep it; Markou's stratified folds are handled by the sampler
    drop_last = _get(_load(name), "data.init_args.drop_last")
    assert drop_last is (RECIPES[name]["follows"] in ("kang", "tang")), (name, drop_last)


def test_places_lt_tde_is_tangs_places_recipe():
    # Tang's config/Places_LT/causal_norm.yaml: ResNeXt-50 from scratch, lr 0.2, wd 5e-4, batch 512,
    # 90 epochs cosine, alpha 3.0
    cfg = _load("places_lt/tde")
    m = cfg["model"]["init_args"]
    assert m["backbone"] == "resnext50_32x4d" and not (m.get("backbone_kwargs") or {}).get("weights_path")
    assert not m.get("trainable_backbone")  # the whole net trains
    assert m["optimizer"]["init_args"] == {"lr": 0.2, "momentum": 0.9, "weight_decay": 0.0005} | {
        k: v for k, v in m["optimizer"]["init_args"].items() if k not in ("lr", "momentum", "weight_decay")
    }
    assert (m["lr_schedule"]["name"], m["alpha"], cfg["trainer"]["max_epochs"]) == ("cosine", 3.0, 90)
    assert cfg["data"]["init_args"]["global_batch_size"] == 512


@pytest.mark.parametrize("dataset", ["cifar10_lt", "cifar100_lt"])
def test_tangs_lws_rescales_tangs_stage1(dataset):
    # Tang's cls_lws.yaml loads the model of feat_unifrom.yaml: his 128-d ResNet-32, lr 0.2, wd 1e-4,
    # batch 512, 90 epochs cosine
    lws = _load(f"{dataset}/lws")
    assert (
        lws["model"]["init_args"]["stage1_checkpoint"] == f"runs/{dataset}/joint_tang/seed{{seed}}/last.ckpt"
    )
    s1 = _load(f"{dataset}/joint_tang")
    m = s1["model"]["init_args"]
    assert m["backbone"] == "resnet32_tde" and m["lr_schedule"]["name"] == "cosine"
    assert (m["optimizer"]["init_args"]["lr"], m["optimizer"]["init_args"]["weight_decay"]) == (0.2, 0.0001)
    assert (s1["trainer"]["max_epochs"], s1["data"]["init_args"]["batch_size"]) == (90, 512)
    assert RECIPES[f"{dataset}/lws"]["follows"] == RECIPES[f"{dataset}/joint_tang"]["follows"] == "tang"


@pytest.mark.parametrize("dataset", ["cifar10_lt", "cifar100_lt"])
def test_yangs_ce_baseline_and_our_learnable_one(dataset):
    # Yang's models/resnet_cifar.py Classifier: kaiming-normal, requires_grad False; mixup 1.0
    yang = _load(f"{dataset}/joint_yang")["model"]["init_args"]
    assert yang["freeze_classifier"] is True and yang["classifier_init"] == "kaiming_normal"
    assert yang["mixup"]["alpha"] == 1.0
    ours = _load(f"{dataset}/joint")["model"]["init_args"]
    assert not ours.get("freeze_classifier") and not (ours.get("mixup") or {}).get("alpha")
    assert any("frozen" in d for d in RECIPES[f"{dataset}/joint"]["deviations"])  # the difference is recorded


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in sorted(CONFIGS)
        if n.endswith(("/logit_adjust", "/balanced_softmax", "/logit_adjust_posthoc"))
        and not n.startswith("digits_lt")
    ],
)
def test_ldam_ce_configs_keep_ldams_kaiming_normal_classifier(name):
    # kaidic/LDAM-DRW models/resnet_cifar.py: self.apply(_weights_init) -> kaiming_normal_ on the nn.Linear
    assert _get(_load(name), "model.init_args.classifier_init") == "kaiming_normal"


def test_comments_describe_what_the_config_does():
    for name in CONFIGS:
        text = CONFIGS[name].read_text()
        if _get(_load(name), "model.init_args.reweight") in (MISSING, None, "none"):
            assert "DRW:" not in text, f"{name} describes DRW but does not use it"
    assert (
        "CIFAR10_LT" in RECIPES["cifar10_lt/tde"]["values"]["model.init_args.alpha"][1]
    )  # Tang's CIFAR-10 file
