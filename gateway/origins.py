"""Callback-origin allow-list entries: validation of an entry (pure, stdlib only).

An entry is a bare `host` or `host:port`, lower-cased: no scheme, path, wildcard or userinfo.
`app.example.com` allows `https://app.example.com` only; `localhost:3000` allows http or https
on that host and port (contract section 4).
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def split_entry(entry: str) -> tuple[str, int | None]:
    """(host, port or None) of a normalised entry."""
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        host += "]"
        return host, int(rest[1:]) if rest else None
    host, sep, port = entry.partition(":")
    return host, int(port) if sep else None


def normalise_entry(text: str) -> str:
    """The stored form of an allow-list entry, or ValueError saying what is wrong."""
    if not text or len(text) > 262:
        raise ValueError("must be a host or host:port")
    if not text.isascii():
        raise ValueError("must be ASCII: write internationalised names in their xn-- form")
    entry = text.lower()
    if "://" in entry or entry.endswith(":"):
        raise ValueError(
            "must not include a scheme: write app.example.com, not https://app.example.com"
        )
    for bad, what in (
        ("@", "userinfo"),
        ("*", "a wildcard"),
        ("/", "a path"),
        ("?", "a query"),
        ("#", "a fragment"),
    ):
        if bad in entry:
            raise ValueError(f"must not contain {what}")
    if any(c.isspace() for c in entry):
        raise ValueError("must not contain whitespace")
    if entry.startswith("["):
        host, _, port = entry.partition("]")
        host = host[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("has an invalid IPv6 address") from None
        if port and not port.startswith(":"):
            raise ValueError("must be host or host:port")
        port = port[1:]
        host = f"[{host}]"
    else:
        host, _, port = entry.partition(":")
        if host.endswith("."):
            raise ValueError("must not end with a dot")
        labels = host.split(".")
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise ValueError("has an invalid host name")
        if all(label.isdigit() for label in labels):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError("has an invalid IPv4 address") from None
    if port:
        if not _PORT.fullmatch(port) or int(port) > 65535:
            raise ValueError("has an invalid port (1-65535)")
        return f"{host}:{port}"
    return host
