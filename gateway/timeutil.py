"""Time in one representation: integer microseconds since the Unix epoch, UTC (stdlib only).

The store keeps integers (cheap to compare and sort); the APIs speak RFC 3339 strings.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

MICROS = 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def to_rfc3339(us: int | None) -> str | None:
    """`2026-11-24T13:37:06.123456Z`, or None for None."""
    if us is None:
        return None
    dt = datetime.fromtimestamp(us / MICROS, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("datetime must carry a time zone")
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * MICROS + delta.microseconds


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 timestamp with an explicit offset (`Z` or `+hh:mm`)."""
    if len(text) < 20 or text[10] not in "Tt" or not text.isascii():
        raise ValueError("not an RFC 3339 timestamp")
    dt = datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    if dt.tzinfo is None:
        raise ValueError("timestamp must carry a time zone offset such as Z")
    return from_datetime(dt)
