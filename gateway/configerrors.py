"""How a settings error is worded: one line naming the key, from pydantic's account of it.

Pydantic validates the settings dataclasses (gateway.config); this module turns the first error
it reports into `section.key` and a message in the gateway's own words, so that messages do not
change with pydantic's wording: `must be an integer between 0 and 65535, got 70000`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import annotated_types
from pydantic_core import ErrorDetails, PydanticCustomError


@dataclass(frozen=True, slots=True)
class Expect:
    """How an error words a value of the wrong kind: `must be {kind}{hint}, got {value}`.
    Without one, the kind comes from the field's type; `hint` None: from its bounds."""

    kind: str
    hint: str | None = None


def invalid(hint: str = "") -> PydanticCustomError:
    """A value of the wrong kind: `must be {kind}{hint}, got ...`."""
    return PydanticCustomError("invalid", "invalid value", {"hint": hint})


def placed(key: str, message: str) -> PydanticCustomError:
    """An error about `key` (below where it is raised) with exactly this message."""
    return PydanticCustomError("config", "{message}", {"key": key, "message": message})


# Pydantic's error types for a value within the right kind but out of bounds: the message then
# says the bounds. Every other failure of a typed field says only what kind is wanted.
_OUT_OF_BOUNDS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "literal_error",
}
_NOT_A_TABLE = {"dataclass_type", "dataclass_args_type", "model_type", "dict_type"}


def explain(error: ErrorDetails, root: type[Any]) -> tuple[str, str]:
    """(`section.key`, message) for pydantic's account of one error under `root`."""
    key, cls, info = "", root, None
    for part in error["loc"]:
        if info is not None or isinstance(part, int):
            break  # below a field (an item of a list): the field is what the message names
        key = f"{key}.{part}" if key else str(part)
        fields = getattr(cls, "__pydantic_fields__", {})
        if part not in fields:
            break
        info = fields[part]
        if hasattr(info.annotation, "__pydantic_fields__"):
            cls, info = info.annotation, None  # a section: descend
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "config":
        inner = str(ctx["key"])
        if inner:
            key = f"{key}{'' if inner.startswith('[') or not key else '.'}{inner}"
        return key, str(ctx["message"])
    if kind == "missing":
        if info is None and cls is not root:  # a required section: name its first required key
            first = next(n for n, f in cls.__pydantic_fields__.items() if f.is_required())
            key = f"{key}.{first}"
        return key, "is required"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return key, "unknown key"
    if kind in _NOT_A_TABLE:
        return key, "must be a table"
    if kind == "value_error":
        return key, str(ctx["error"])
    expect = _expectation(info)
    if kind == "invalid":
        hint = str(ctx["hint"])
    elif kind in _OUT_OF_BOUNDS:
        hint = expect.hint if expect.hint is not None else _bounds(info)
    else:
        hint = ""
    return key, f"must be {expect.kind}{hint}, got {_show(error['input'])}"


def _expectation(info: Any) -> Expect:
    for item in getattr(info, "metadata", ()):
        if isinstance(item, Expect):
            return item
    annotation = getattr(info, "annotation", None)
    if annotation is bool:
        return Expect("true or false")
    if annotation is int:
        return Expect("an integer")
    if annotation is float:
        return Expect("a number")
    return Expect("a string")


def _bounds(info: Any) -> str:
    """How an error states a field's bounds: ` between 0 and 65535`, ` > 0`, ` one of ...`."""
    annotation = getattr(info, "annotation", None)
    if get_origin(annotation) is Literal:
        return " one of " + ", ".join(repr(c) for c in get_args(annotation))
    low: Any = None
    high: Any = None
    strictly = False
    for item in getattr(info, "metadata", ()):
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, strictly = item.gt, True
        elif isinstance(item, annotated_types.Le):
            high = item.le
    if strictly:
        return f" > {low}"
    if high is not None:
        return f" between {low} and {high}"
    return f" >= {low}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) < 60 else repr(value[:57] + "...")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
