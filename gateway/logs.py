"""Logging: application messages through `logging`, and the per-request access log written
straight to stdout in batches (one JSON object per line, or a text line for humans).

Neither ever receives a key or an Authorization header: only key ids and prefixes.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson

from gateway.config import LogSettings

PIPE_BUF = 4096
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def setup_logging(settings: LogSettings) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_gateway", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler._gateway = True  # type: ignore[attr-defined]
    if settings.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(_LEVELS[settings.level])
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class AccessLog:
    """Buffered request log: lines collect in memory and reach stdout on the data plane's
    next tick (every 50 to 250 ms) or once PIPE_BUF bytes (4 KiB) have collected, so logging
    does not cost a write system call per request."""

    def __init__(self, settings: LogSettings, fd: int | None = None) -> None:
        self._fd = fd
        self._buf: list[bytes] = []
        self._size = 0
        self.reconfigure(settings)

    def reconfigure(self, settings: LogSettings) -> None:
        self.enabled = _LEVELS[settings.level] <= logging.INFO
        self.json = settings.format == "json"

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        fields["time"] = _iso(time.time())
        if self.json:
            line = orjson.dumps(fields) + b"\n"
        else:
            line = (
                " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and v != "") + "\n"
            ).encode("utf-8", "replace")
        self._buf.append(line)
        self._size += len(line)
        if self._size >= PIPE_BUF:
            self.flush()

    def flush(self) -> None:
        """Write whole lines, at most PIPE_BUF bytes a write: several workers share stdout,
        and writes that size to a pipe are atomic, so their lines never interleave."""
        if not self._buf:
            return
        lines, self._buf = self._buf, []
        self._size = 0
        fd = self._fd if self._fd is not None else 1
        batch: list[bytes] = []
        size = 0
        try:
            for line in lines:
                if size + len(line) > PIPE_BUF and batch:
                    _write_all(fd, b"".join(batch))
                    batch, size = [], 0
                batch.append(line)
                size += len(line)
            if batch:
                _write_all(fd, b"".join(batch))
        except OSError:
            pass  # a closed stdout must not take the data plane down


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
