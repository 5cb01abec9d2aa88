"""Typed configuration in layers: YAML mappings checked against a dataclass's fields, later
layers winning. A pair's training config (recipe < defaults < model < override) and a
submission's cluster settings (grid < profile < flags) are both resolved here, so an unknown key
or a wrong type reads the same wherever it was written: the layer that holds it, then the key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import yaml

from kbench.errors import ConfigError

Layer = tuple[Any, str]  # (a mapping or None, where it came from: "grid.yaml: defaults")


def merge_layers(
    cls: type,
    layers: list[Layer],
    what: str,
    fits: Callable[[Any, Any], bool] | None = None,
) -> dict[str, Any]:
    """The layers merged into one mapping of `cls`'s fields; a layer may be None (absent).
    `what` names the keys in messages ("config keys"); `fits(value, hint)` decides whether a
    value suits a field (default: `fits_type`)."""
    fits = fits or fits_type
    hints = typing.get_type_hints(cls)
    merged: dict[str, Any] = {}
    for layer, where in layers:
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise ConfigError(f"{where}: expected a mapping of {what}")
        for key, value in layer.items():
            if key not in hints:
                raise ConfigError(f"{where}: unknown key {key!r}; allowed: {', '.join(hints)}")
            if not fits(value, hints[key]):
                raise ConfigError(
                    f"{where}: {key}: expected {type_name(hints[key])}, got {value!r}"
                )
            merged[key] = value
    return merged


def missing_fields(cls: type, data: dict[str, Any]) -> list[str]:
    """The fields of `cls` without a default that `data` lacks."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping with a repeated key is an error (YAML 1.2
    says keys are unique; PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            if isinstance(key, Hashable):  # an unhashable key: the base class says so
                seen.add(key)
        return super().construct_mapping(node, deep)


def read_text(path: Path, what: str) -> str:
    """A UTF-8 file a user named, or one line that says why it cannot be read."""
    try:
        return path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read it ({e.strerror})") from None


def load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "cannot parse"
        raise ConfigError(f"{source}: not valid YAML{line}: {problem}") from None


def fits_type(value: Any, hint: Any) -> bool:
    """Whether a value read from YAML fits a dataclass field's type hint."""
    if hint is Any:
        return True
    if isinstance(hint, types.UnionType):
        return any(fits_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # YAML `yes` must not pass as an integer
        return hint is bool
    if hint is float:  # YAML's .nan and .inf are floats, but no setting means them
        return isinstance(value, (int, float)) and math.isfinite(value)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(fits_type(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def type_name(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list of strings" if typing.get_args(hint) == (str,) else "a list"
    if origin is dict:
        return "a mapping"
    return {
        int: "an integer",
        float: "a finite number",
        str: "a string",
        bool: "true or false",
    }.get(hint, "null")
