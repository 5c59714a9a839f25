"""Reading the config file safely: bounded size, UTF-8, and YAML that cannot explode.

A YAML file can ask for far more than it holds: aliases of aliases (a billion laughs)
expand exponentially once the parsed data is walked, an alias inside its own anchor makes
the data recursive, and deep nesting exhausts the recursive composer. So the YAML events are
scanned first (an iterative parser: depth and aliases counted, nothing expanded), and the
parsed data is walked once more with a budget before anything else touches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1_000_000
MAX_DEPTH = 50
MAX_ALIASES = 100
MAX_VALUES = 100_000  # scalars, lists and mappings of the data with aliases expanded


class ConfigFileError(Exception):
    """The file cannot be read as a config: one line says why."""


def read_yaml(path: Path) -> Any:
    """The parsed YAML of `path`, or ConfigFileError."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigFileError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigFileError(f"{path}: larger than {MAX_BYTES:,} bytes: not a config file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigFileError(f"{path}: not UTF-8 (byte 0x{data[exc.start]:02x} at line {line})") from None
    try:
        _scan(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(f"{path}: invalid YAML{where}: {reason}") from None
    _check_shape(raw, path)
    return raw


def _scan(text: str) -> None:
    """Refuse deep nesting and many aliases before composing anything."""
    depth = aliases = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _error(event, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _error(event, f"more than {MAX_ALIASES} aliases (*name)")


def _error(event: yaml.Event, reason: str) -> yaml.YAMLError:
    error = yaml.MarkedYAMLError(problem=reason, problem_mark=event.start_mark)
    return error


def _check_shape(raw: Any, path: Path) -> None:
    """Walk the data as later steps will, with aliases expanded, within a budget; refuse
    recursion (an alias inside its own anchor) and keys that are not strings."""
    values = 0
    stack: list[tuple[Any, str, frozenset[int]]] = [(raw, "", frozenset())]
    while stack:
        node, where, ancestors = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise ConfigFileError(f"{path}: expands to more than {MAX_VALUES:,} values (aliases of aliases?)")
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in ancestors:
            raise ConfigFileError(f"{path}: {where} refers back to a value that holds it "
                                  f"(an alias inside its own anchor)")
        inner = ancestors | {id(node)}
        if isinstance(node, list):
            stack.extend((item, f"{where}[{i}]", inner) for i, item in enumerate(node))
            continue
        for key, value in node.items():
            if not isinstance(key, str):
                raise ConfigFileError(f"{path}: {where + '.' if where else ''}{key!r}: keys must be "
                                      f"strings (quote it)")
            stack.append((value, f"{where}.{key}" if where else key, inner))
