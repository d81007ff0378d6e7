"""The one config engine, for experiment and data configs alike: YAML read as LLaMA-Factory reads it,
`--override KEY=VALUE`, and values typed for dataclass fields through the argparse actions that
transformers' HfArgumentParser builds (the parser LLaMA-Factory itself uses), every problem at once.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from movierec.errors import UserError
from movierec.resources import config_path
from movierec.train.checks import _to_text


class _Loader(yaml.SafeLoader):
    """YAML as LLaMA-Factory (OmegaConf) reads it: only true/false are booleans (so `no`, `on`
    stay strings, e.g. `eval_strategy: no`), and `1e-4` is a float, not a string."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?[\d_]*[eE][-+]?\d+|\d[\d_]*\.[\d_]*|\.\d[\d_]*|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line UserError."""
    path = config_path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); save the config as UTF-8") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`["lr=1e-4", "report_to=[tensorboard]"]` -> dict, values read as YAML."""
    out: dict[str, Any] = {}
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--override {item!r}: expected KEY=VALUE")
            continue
        try:
            out[key] = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw  # not valid YAML: keep the text, type checks decide
    if problems:
        raise UserError("\n".join(problems))
    return out


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    cfg = load_yaml(path)
    cfg.update(parse_overrides(overrides or []))
    return cfg


LIST_KEYS = {"report_to"}  # typed str, yet a list is valid (transformers reads it as several integrations)


@lru_cache(maxsize=None)
def field_table(classes: tuple[type, ...]) -> dict[str, tuple[argparse.Action, Any, str]]:
    """name -> (argparse action, default, type text) for every init field of the dataclasses.

    The actions are those transformers' HfArgumentParser builds for the dataclasses (the parser
    LLaMA-Factory itself uses), so a key or type it would reject is rejected here first.
    """
    import typing

    from transformers import HfArgumentParser

    # the annotations, read before HfArgumentParser rewrites the fields' types (it strips Optional)
    hints = {cls: typing.get_type_hints(cls) for cls in classes}
    parser = HfArgumentParser(list(classes))
    # bool fields defaulting to true also get a `--no_<key>` action with the same dest: skip it
    actions = {a.dest: a for a in parser._actions if f"--{a.dest}" in a.option_strings}
    out = {}
    for cls in classes:
        for f in fields(cls):
            if f.init:
                default = f.default if f.default is not MISSING else (
                    f.default_factory() if f.default_factory is not MISSING else MISSING)
                out[f.name] = (actions[f.name], default.value if isinstance(default, enum.Enum) else default,
                               str(hints[cls][f.name]))
    return out


def parse_fields(classes: Sequence[type], raw: Mapping[Any, Any], prefix: str = "") -> tuple[dict[str, Any], list[str]]:
    """The one config engine (experiment and data configs): `raw`'s values typed for the dataclasses'
    fields, and one `key: problem` line per unknown key (with a "did you mean"), wrong type or missing
    required field. A field whose type is a dataclass reads a nested mapping (`synth: {users: 500}`).
    """
    table = field_table(tuple(classes))
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in table:
            hint = difflib.get_close_matches(str(key), list(table), n=1, cutoff=0.6)
            problems.append(f"{prefix}{key}: unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
            continue
        action, default, type_str = table[key]
        if is_dataclass(action.type):
            if value is None and "None" in type_str:
                out[key] = None
            elif not isinstance(value, dict):
                problems.append(f"{prefix}{key}: expected a mapping of {action.type.__name__} keys, got {value!r}")
            else:
                values, nested = parse_fields([action.type], value, f"{prefix}{key}.")
                nested += [f"{prefix}{key}.{name}: missing" for name, (_, d, _) in
                           field_table((action.type,)).items() if d is MISSING and name not in value]
                problems += nested
                out[key] = None if nested else action.type(**values)
            continue
        try:
            out[key] = _coerce(key, value, action, default, type_str)
        except ValueError as e:
            problems.append(f"{prefix}{key}: invalid value {value!r}: {e}")
    return out, problems


def _type_name(action: argparse.Action) -> str:
    if action.choices:
        return "one of " + ", ".join(str(c) for c in action.choices)
    name = getattr(action.type, "__name__", "str")
    # transformers' string_to_bool (LLaMA-Factory's command line too) reads these, in any case
    return {"string_to_bool": "bool (true/false, yes/no, 1/0)"}.get(name, name)


def _coerce(key: str, value: Any, action: argparse.Action, default: Any, type_str: str) -> Any:
    """Return `value` converted to the action's type, or raise ValueError with the reason."""
    if value is None:
        if default is None or "None" in type_str or "Optional" in type_str:
            return None
        raise ValueError(f"null is not allowed, expected {_type_name(action)}")
    if isinstance(value, dict):
        if "dict" in type_str:
            return value
        raise ValueError(f"expected {_type_name(action)}, got a mapping")
    if isinstance(value, list):
        if action.nargs not in ("+", "*"):
            # report_to: LLaMA-Factory's dataclass types it str, transformers' Trainer takes a list too
            if "list" in type_str or "dict" in type_str or key in LIST_KEYS:
                return [_coerce(key, v, action, default, "str") for v in value]
            raise ValueError(f"expected {_type_name(action)}, got a list")
        return [_coerce(key, v, action, default, "str") for v in value]
    convert = action.type or str
    # a bool for a non-bool field (or a float for an int field) is a type error, not a silent cast
    if isinstance(value, bool) and getattr(convert, "__name__", "") not in ("string_to_bool", "str"):
        raise ValueError(f"expected {_type_name(action)}")
    if isinstance(value, float) and convert is int:
        if not value.is_integer():
            raise ValueError("expected int")
        value = int(value)
    try:
        out = convert(_to_text(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ValueError(f"expected {_type_name(action)}") from None
    if isinstance(out, enum.Enum):
        out = out.value
    if action.choices and out not in action.choices and _to_text(out) not in [str(c) for c in action.choices]:
        raise ValueError(f"expected {_type_name(action)}")
    return out
