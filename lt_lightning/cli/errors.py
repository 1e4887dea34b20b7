"""One-line messages for the errors a user causes (a bad option, a missing file, a run that diverged).

A jsonargparse error is a nested report (every union member tried, the namespace dumped);
:func:`format_parser_error` keeps the option as the user typed it (``init_args`` included), the value
and the reason, and says where an option or value of lt_lightning 0.1 went (from the checkpoint
migration, which owns that mapping).
"""

from __future__ import annotations

import ast
import inspect
import re
from argparse import ArgumentError
from dataclasses import dataclass
from typing import Any

from lightning.pytorch.utilities.exceptions import MisconfigurationException

from lt_lightning.callbacks.finite import NonFiniteError
from lt_lightning.data import LongTailDataModule
from lt_lightning.models.migration import LEGACY_KEYS, migrate_hparams
from lt_lightning.optim import LRSchedule

__all__ = ["USER_ERRORS", "format_error", "format_parser_error", "root_cause"]

#: errors that are the user's (bad option, missing file, diverged run): one line, no traceback
USER_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    FileExistsError,
    IsADirectoryError,
    PermissionError,
    NonFiniteError,
    MisconfigurationException,
    ArgumentError,
)
_STRUCTURAL = re.compile(
    r"^(- )?(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value|"
    r"Expected a <class 'NoneType'>|Problem with given class_path|Parser key|Not a valid subclass|"
    r"Validation failed|Key \"[^\"]*\" is required but not included)"
)
#: what jsonargparse adds when a value is neither a file nor an import path: the reason only when
#: nothing else explains the error
_FALLBACKS = re.compile(
    r"^(Expected a path but .* either not accessible or invalid|Expected a dot import path string: .*|"
    r"Unexpected import path format: .*)$"
)
#: jsonargparse's wrapping of an error in a callable's arguments (e.g. an optimizer's)
_CALLABLE = re.compile(r"^Type .* expects a function or a callable class: ")
_GOT_NAMESPACE = re.compile(r"\. Got value: Namespace\(.*\)$")
_NESTED = re.compile(r"NestedArg\(key='([^']+)', val=(.*)\)$", re.M)
_OWNER = re.compile(r"(?:Problem with given class_path '|Namespace\(class_path=')([\w.]+)'")
_LITERAL = re.compile(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)$")
#: a union member's cause: the same, the value optional (the report may name it once, for the union)
_LITERAL_MEMBER = re.compile(r"Expected a typing\.Literal\[(.*)\](?:\. Got value: .*)?$")
_TYPED = re.compile(r"Expected a <class '([\w.]+)'>(?:\. Got value: (.*))?$")
_REFUSED = re.compile(r"Option '([^']+)' is not accepted$")
#: a value no option of lt_lightning 0.1 can take, to find where :func:`migrate_hparams` moves one
_PROBE = 0.1234567


@dataclass
class _Report:
    """What a jsonargparse error says: the option, parser keys below it, the values, the reasons."""

    option: str
    rest: list[str]  # keys of a dict value below the option
    value: Any  # the option's value (None: unknown)
    inner: Any  # the innermost value jsonargparse rejected
    lines: list[str]  # the report's lines, stripped of bullets and wrappers
    owner: str  # the innermost class whose option it is


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _read(message: str) -> _Report:
    keys = re.findall(r'Parser key "([^"]+)"', message)
    lines = [
        re.sub(r'^Parser key "[^"]+":\s*', "", ln.strip()).removeprefix("- ") for ln in message.splitlines()
    ]
    lines = [_GOT_NAMESPACE.sub("", _CALLABLE.sub("", ln)).removeprefix("- ") for ln in lines if ln]
    lines = [ln for ln in lines if ln]
    given = [ln.removeprefix("Given value: ") for ln in lines if ln.startswith("Given value: ")]
    inner = _literal(given[0]) if given and "(" not in given[0] else None
    owners = _OWNER.findall(message)
    report = _Report("", [], inner, inner, lines, owners[-1] if owners else "it")
    if not keys:
        return report
    top, nested = keys[0], keys[1:]
    found = _NESTED.findall(message)
    if top in ("model", "data") and found:
        key, value = found[-1]  # the last one is the outermost: the option as typed
        covered = [k for k in key.split(".") if k not in ("init_args", "class_path")]
        report.rest = nested[len(covered) :] if nested[: len(covered)] == covered else []
        report.option, report.value = f"--{top}.init_args.{key}", _literal(value)
    elif top in ("model", "data") and nested:
        report.option = f"--{top}.init_args.{'.'.join(nested)}"
    else:
        report.option = "--" + ".".join(keys)
    return report


def _expected(report: _Report) -> str:
    """What a value that is neither a file nor an import path should have been (the innermost union)."""
    subtypes = [ln for ln in report.lines if ln.startswith("Subtypes: ")]
    kinds = re.split(r", (?![^\[]*\])", subtypes[-1].removeprefix("Subtypes: ")[1:-1]) if subtypes else []
    kinds = [k for k in kinds if k != "<class 'NoneType'>"]
    if not kinds:
        return ""
    returns = re.match(r"collections\.abc\.Callable\[\[.*\], ([\w.]+)\]$", kinds[0])
    if returns:
        example = "e.g. torch.optim.AdamW; " if returns.group(1).endswith(".Optimizer") else ""
        return (
            f"a {returns.group(1)} class path ({example}its options: {report.option}.init_args.<name> VALUE)"
        )
    cls = re.match(r"<class '([\w.]+)'>$", kinds[0])
    if cls:
        return f"{cls.group(1)} options: {report.option}.<name> VALUE, or '{{<name>: value, ...}}'"
    return ""


def _literal_values(inside: str) -> str:
    """``'a', 'b'`` (the inside of a ``typing.Literal[...]``) as ``a, b``."""
    return ", ".join(v.strip().strip("'\"") for v in inside.split(","))


def _union_members(causes: list[str]) -> list[str]:
    """What each member of the innermost union expected (``["bool", "one of: step"]``): the run of bare
    "Expected a ..." causes the report starts with, when there are several; else ``[]``."""
    members = []
    for cause in causes:
        literal, typed = _LITERAL_MEMBER.match(cause), _TYPED.match(cause)
        if literal:
            members.append("one of: " + _literal_values(literal.group(1)))
        elif typed and typed.group(2) is None:
            members.append(typed.group(1))
        else:
            break  # the union's own errors come first; what follows belongs to outer unions
    return members if len(members) > 1 else []


def _path_of(record: Any, prefix: str = "") -> str:
    """The dotted key of :data:`_PROBE` in a migrated record (``""``: dropped)."""
    if record == _PROBE or (isinstance(record, list) and _PROBE in record):
        return prefix
    if isinstance(record, dict):
        for key, value in record.items():
            found = _path_of(value, f"{prefix}.{key}".lstrip("."))
            if found:
                return found
    return ""


def _moved_option(name: str, value: Any) -> str:
    """Where the lt_lightning 0.1 model option ``name`` went (``""``: it was not one)."""
    if name not in LEGACY_KEYS:
        return ""
    shown = "VALUE" if value is None or isinstance(value, dict) else str(value)
    probe = [_PROBE] if name.startswith("milestone") else _PROBE
    for context in ({}, {"optimizer": "agd"}):  # 0.1's gain was an option of its AGD only
        new = migrate_hparams({**context, name: probe})
        path = _path_of(new)
        if path:
            which = f" (with --model.init_args.optimizer {new['optimizer']['class_path']})" if context else ""
            return f"lt_lightning 0.1's {name} is now --model.init_args.{path} {shown}{which}"
    if name in inspect.signature(LongTailDataModule.__init__).parameters:
        return f"the shot thresholds are the data's: --data.init_args.{name} {shown}"
    return ""


def _moved_value(option: str, value: Any) -> str:
    """Where an lt_lightning 0.1 value of ``optimizer`` (``sgd``) or ``lr_schedule`` (``cosine``) went."""
    name = option.removeprefix("--model.init_args.")
    if name not in ("optimizer", "lr_schedule") or not isinstance(value, str):
        return ""
    try:
        new = migrate_hparams({name: value})[name]
        if name == "lr_schedule":
            LRSchedule.from_config(new)  # a name the schedule has
    except ValueError:
        return ""
    if name == "optimizer":
        return f"got {value!r}, lt_lightning 0.1's name: now {option} {new['class_path']}"
    return f"got {value!r}, lt_lightning 0.1's form: now {option}.name {value}"


def _refused(report: _Report, name: str) -> str:
    """The reason for an option the class does not take (naming it in the option when a dict held it)."""
    if not report.rest and not report.option.endswith(f".{name}"):
        report.option = f"{report.option}.{name}"
    elif report.rest == [name]:
        report.option, report.rest = f"{report.option}.{name}", []
    typed = report.option.endswith(f".{name}") and not isinstance(report.value, dict)
    hint = (
        _moved_option(name, report.value if typed else None) if report.option.startswith("--model.") else ""
    )
    return f"{report.owner} has no option {name!r}" + (f"; {hint}" if hint else "")


def format_parser_error(message: str) -> str:
    """One line from a jsonargparse error: the option (``--data.init_args.sampler``), the bad value and
    what is valid, without the usage text and the namespace dump. An option or value of lt_lightning
    0.1 also says where it went (``--model.init_args.lr`` is now ``...optimizer.init_args.lr``)."""
    report = _read(message)
    causes = [ln for ln in report.lines if not _STRUCTURAL.match(ln)]
    specific = [ln for ln in causes if not _FALLBACKS.match(ln)]
    moved = "" if specific else _moved_value(report.option, report.value)
    if moved:
        cause = moved
    elif specific:
        cause = specific[0]
    elif causes and _expected(report):
        cause = f"got {report.value!r}; expected {_expected(report)}"
    else:
        cause = causes[0] if causes else report.lines[-1] if report.lines else message
    literal, typed, refused = _LITERAL.match(cause), _TYPED.match(cause), _REFUSED.match(cause)
    union = _union_members(specific)
    if union and not moved:  # each member of a union (``bool | Literal["step"]``) refused it: name them all
        got = report.inner if report.inner is not None else report.value
        cause = f"got {str(got)!r}; expected {' or '.join(union)}"
    elif literal:
        cause = f"got {literal.group(2)!r}; valid: {_literal_values(literal.group(1))}"
    elif typed:
        got = typed.group(2) if typed.group(2) is not None else report.inner if report.rest else report.value
        cause = f"expected {typed.group(1)}" + (f", got {str(got)!r}" if got is not None else "")
    elif refused:
        cause = _refused(report, refused.group(1))
    if report.rest:
        cause = f"{'.'.join(report.rest)}: {cause}"
    return f"{report.option}: {cause}" if report.option else cause


def root_cause(err: BaseException) -> BaseException:
    """The innermost ``__cause__`` of ``err``."""
    seen = {id(err)}
    while err.__cause__ is not None and id(err.__cause__) not in seen:
        err = err.__cause__
        seen.add(id(err))
    return err


def format_error(err: BaseException) -> str:
    """The one-line message ``lt-lightning`` prints for ``err`` (without the ``error:`` prefix)."""
    if isinstance(err, ArgumentError):
        return format_parser_error(str(err))
    root = root_cause(err)
    text = " ".join(str(root).split()) or type(root).__name__
    # jsonargparse wraps errors raised while instantiating a class; name the class
    wrapper = re.search(r"class_path='([\w.]+)'", str(err)) if root is not err else None
    where = f"{wrapper.group(1).rpartition('.')[2]}: " if wrapper else ""
    kind = "" if isinstance(root, (ValueError, TypeError, FileNotFoundError)) else f"{type(root).__name__}: "
    return f"{where}{kind}{text}"
