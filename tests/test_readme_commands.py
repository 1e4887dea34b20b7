"""Every ``lt-lightning`` command the README shows parses (``--print_config``) against the shipped configs, and
every option it sets lands on that key of the resolved config (an abbreviated or stale key would not)."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from lt_lightning.cli import build_cli
from lt_lightning.cli.seeds import _parser as seeds_parser

ROOT = Path(__file__).parents[1]


def readme_commands() -> list[list[str]]:
    """The argument lists after ``lt-lightning`` / ``-m lt_lightning.cli`` in the README's bash blocks."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if "lt-lightning" in words:
                    commands.append(words[words.index("lt-lightning") + 1 :])
                elif "lt_lightning.cli" in words:
                    commands.append(words[words.index("lt_lightning.cli") + 1 :])
    return commands


COMMANDS = readme_commands()


def test_the_readme_shows_commands():
    assert len(COMMANDS) >= 20
    subcommands = {c[0] for c in COMMANDS}
    assert {"fit", "test", "predict", "seeds"} <= subcommands


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a)[:90])
def test_readme_command_parses(args, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    if args[0] == "seeds":
        opts, overrides = seeds_parser().parse_known_args(args[1:])
        assert (ROOT / opts.config).is_file() and opts.seeds
        args = ["fit", "-c", opts.config, *overrides]  # the overrides must parse against that config
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        build_cli([*args, "--print_config"])
    assert info.value.code in (0, None)
    config = yaml.safe_load(out.getvalue())
    assert config["model"]["class_path"].startswith("lt_lightning.models.")
    for option, value in _overrides(args):
        node = config
        for key in option.removeprefix("--").split("."):
            assert isinstance(node, dict) and key in node, f"{option}: no such key in the resolved config"
            node = node[key]
        assert node == yaml.safe_load(value) or str(node) == value, f"{option}: {node!r} != {value!r}"


def _overrides(args: list[str]) -> list[tuple[str, str]]:
    """The ``--dotted.key VALUE`` pairs of a command (not ``-c``)."""
    pairs = []
    for i, word in enumerate(args[:-1]):
        if (
            word.startswith("--")
            and word not in ("--config", "--print_config")
            and not args[i + 1].startswith("-")
        ):
            pairs.append((word, args[i + 1]))
    return pairs


def test_override_pairs():
    args = ["fit", "-c", "x.yaml", "--trainer.devices", "4", "--print_config", "--ckpt_path", "a.ckpt"]
    assert _overrides(args) == [("--trainer.devices", "4"), ("--ckpt_path", "a.ckpt")]
