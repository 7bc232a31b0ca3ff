"""Checked values of a study file: the error that names a YAML key (`StudyError`), the
checks every section is built with (numbers, whole numbers, lists, mappings, dataclasses from
mappings), and a YAML reader bounded against alias bombs. config.py builds the sections.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

import yaml

from trainer.spec import SpecError

MAX_YAML_NODES = 100_000  # nodes after alias expansion (a 445-byte alias bomb expands to billions)
MAX_LIST = 10_000  # entries of any one list in the study file
MAX_SHOWN = 200  # characters of an offending value echoed in an error


class StudyError(ValueError):
    """Bad study input. `key` names the YAML key; the message says how to fix it."""

    def __init__(self, key: str, message: str):
        if len(message) > 4 * MAX_SHOWN:  # never echo megabytes back to the terminal
            message = message[: 4 * MAX_SHOWN] + " ..."
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def show(value: Any) -> str:
    """repr(value) cut to MAX_SHOWN characters, for error messages."""
    r = reprlib.Repr()
    r.maxstring = r.maxother = MAX_SHOWN
    r.maxlist = r.maxdict = 6
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "..."


def _mapping(value: Any, key: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StudyError(key, f"must be a mapping of keys to values, got {type(value).__name__}")
    return value


def _check_keys(value: Mapping[str, Any], allowed: set[str], key: str) -> None:
    for k in value:
        if k not in allowed:
            where = f"{key}.{k}" if key else str(k)
            raise StudyError(where, f"unknown key; allowed here: {', '.join(sorted(allowed))}")


def _number(value: Any, key: str, *, positive: bool = True, maximum: float | None = None) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 2e5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise StudyError(key, f"must be a number, got {show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StudyError(key, f"must be a finite number, got {show(value)}")
    if positive and value <= 0:
        raise StudyError(key, f"must be > 0, got {value}")
    if maximum is not None and value > maximum:
        raise StudyError(key, f"{value:g} is larger than the allowed {maximum:g}; check the exponent")
    return float(value)


def _integer(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, str) and not isinstance(value, bool):  # YAML 1.1 reads 1.0e7 as a string
        try:
            value = float(value.strip())
        except ValueError:
            raise StudyError(key, f"must be a whole number, got {show(value)}") from None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    elif isinstance(value, float) and math.isfinite(value):
        raise StudyError(
            key, f"must be a whole number, got {value:g}; round it (e.g. {max(math.floor(value), minimum)})"
        )
    if isinstance(value, bool) or not isinstance(value, int):
        raise StudyError(key, f"must be a whole number, got {show(value)}")
    if value < minimum:
        raise StudyError(key, f"must be >= {minimum}, got {value}")
    return value


def _list(value: Any, key: str, *, allow_empty: bool = False) -> list[Any]:
    if not isinstance(value, list):
        raise StudyError(key, f"must be a list, got {type(value).__name__}")
    if not value and not allow_empty:
        raise StudyError(key, "must not be empty")
    if len(value) > MAX_LIST:
        raise StudyError(
            key,
            f"has {len(value)} entries, more than the {MAX_LIST} allowed; split the study into several files",
        )
    return value


def _build(cls: type, value: Mapping[str, Any], key: str, convert: Mapping[str, Any] = {}) -> Any:
    """Construct a dataclass from a YAML mapping, checking keys and mapping SpecError to the key."""
    names = {f.name for f in fields(cls) if f.name != "source_path"}
    _check_keys(value, names, key)
    int_fields = {f.name for f in fields(cls) if f.type in (int, "int")}
    kwargs = {}
    for k, v in value.items():
        if k in convert:
            v = convert[k](v, f"{key}.{k}")
        elif k in int_fields:
            v = _integer(v, f"{key}.{k}", minimum=-(2**62))  # range checks are the spec's
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except SpecError as e:
        raise StudyError(f"{key}.{e.field.split('.', 1)[-1]}", e.message) from None
    except TypeError as e:
        raise StudyError(key, str(e)) from None


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in the document once every alias is expanded (memoised: aliases share nodes)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once, then is cut
    n = 1
    if isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_size(v, memo) for v in node.value)
    elif isinstance(node, yaml.MappingNode):
        n += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = n
    return n


def _safe_load_bounded(text: str, path: str) -> Any:
    """yaml.safe_load, refusing documents whose aliases expand past MAX_YAML_NODES nodes."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)  # libyaml when built with it
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise StudyError(
                "",
                f"{path} holds more than {MAX_YAML_NODES} values (each YAML "
                "alias *name counted as expanded); a study needs far fewer: "
                "list fewer values and write them out without aliases",
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
