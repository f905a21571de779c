"""Query-string parsing for the admin API: declared parameters only, typed, else 400."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from gateway.errors import ValidationError
from gateway.timeutil import parse_rfc3339

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: str  # "string" | "integer" | "boolean" | "date-time"
    description: str
    enum: tuple[str, ...] | None = None


LIMIT = Param("limit", "integer", f"Page size, 1-{MAX_LIMIT} (default {DEFAULT_LIMIT})")
CURSOR = Param("cursor", "string", "The next_cursor of the previous page")
PAGING = (LIMIT, CURSOR)


def parse_query(request: web.Request, params: tuple[Param, ...]) -> dict[str, object]:
    known = {p.name: p for p in params}
    out: dict[str, object] = {}
    errors = []
    for name in request.query:
        if name not in known:
            errors.append({"field": name, "message": "unknown query parameter"})
            continue
        values = request.query.getall(name)
        if len(values) > 1:
            errors.append({"field": name, "message": "given more than once"})
            continue
        param, raw = known[name], values[0]
        if "\x00" in raw:  # no stored value holds one, and PostgreSQL cannot even be asked
            errors.append({"field": name, "message": "must not contain NUL characters"})
            continue
        try:
            out[name] = _convert(param, raw)
        except ValueError as exc:
            errors.append({"field": name, "message": str(exc)})
    if errors:
        raise ValidationError(errors)
    return out


def _convert(param: Param, raw: str) -> object:
    if param.kind == "integer":
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
            raise ValueError("must be a positive integer")
        value = int(raw)
        if param is LIMIT and not 1 <= value <= MAX_LIMIT:
            raise ValueError(f"must be between 1 and {MAX_LIMIT}")
        return value
    if param.kind == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("must be true or false")
        return raw == "true"
    if param.kind == "date-time":
        try:
            return parse_rfc3339(raw)
        except ValueError:
            raise ValueError("must be an RFC 3339 timestamp, e.g. 2030-01-31T12:00:00Z") from None
    if param.enum is not None and raw not in param.enum:
        raise ValueError("must be one of " + ", ".join(param.enum))
    if not raw:
        raise ValueError("must not be empty")
    return raw


def paging(query: dict[str, object]) -> tuple[int, str | None]:
    limit = query.get("limit", DEFAULT_LIMIT)
    cursor = query.get("cursor")
    assert isinstance(limit, int)
    return limit, cursor if isinstance(cursor, str) else None
