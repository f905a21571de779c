"""Time in one representation: integer microseconds since the Unix epoch, UTC (stdlib only).

The store keeps integers (cheap to compare and sort); the APIs speak RFC 3339 strings.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

MICROS = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    return time.time_ns() // 1000


def to_rfc3339(us: int | None) -> str | None:
    """`2026-11-24T13:37:06.123456Z`, or None for None."""
    if us is None:
        return None
    dt = _EPOCH + timedelta(microseconds=us)  # integer arithmetic: no float rounding
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("datetime must carry a time zone")
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * MICROS + delta.microseconds


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 `date-time` with an explicit offset (`Z` or `+hh:mm`), and nothing
    else: no ISO 8601 week or ordinal dates, no `+05` or `+0530` offsets, no space for `T`.
    Fractions go to the microsecond the store keeps; more digits are refused rather than
    silently cut."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("not an RFC 3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction = int((m.group(7) or "0").ljust(6, "0"))
    if m.group(8):
        offset = timedelta(0)
    else:
        hours, minutes = int(m.group(10)), int(m.group(11))
        if hours > 23 or minutes > 59:
            raise ValueError("not an RFC 3339 time offset")
        offset = timedelta(hours=hours, minutes=minutes)
        if m.group(9) == "-":
            offset = -offset
    # datetime checks the calendar (month 1-12, day of that month, hour < 24, second < 60).
    dt = datetime(year, month, day, hour, minute, second, fraction, tzinfo=timezone(offset))
    return from_datetime(dt)
