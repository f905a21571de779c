"""Callback-origin allow-list entries: validation of an entry (pure, stdlib only).

An entry is a bare `host` or `host:port`, lower-cased: no scheme, path, wildcard or userinfo.
`app.example.com` allows `https://app.example.com` only; `localhost:3000` allows http or https
on that host and port (contract section 4).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import parse_qsl

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})


def _ipv6_host(text: str) -> str:
    """`[::1]` for `0:0::1`: one spelling per address (RFC 5952), so equal addresses compare
    equal. ValueError for anything else, zone ids (`fe80::1%eth0`) included: no URL a browser
    sends can name one, so such an entry could never match."""
    if "%" in text:
        raise ValueError("must not carry a zone id")
    return f"[{ipaddress.IPv6Address(text).compressed}]"


@functools.lru_cache(maxsize=4096)  # pure; keeps IPv6 parsing off the per-request path
def split_entry(entry: str) -> tuple[str, int | None]:
    """(host, port or None) of a normalised entry."""
    if entry.startswith("["):
        host, _, rest = entry.partition("]")
        try:
            host = _ipv6_host(host[1:])
        except ValueError:  # stored by an older release (a zone id): it can match nothing
            return "", None
        return host, int(rest[1:]) if rest else None
    host, sep, port = entry.partition(":")
    return host, int(port) if sep else None


_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
_DEFAULT_PORT = {"http": 80, "https": 443}


def url_origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL, or None when it is not one we can
    trust: no userinfo, no backslashes, whitespace or controls, ASCII host without a trailing
    dot (internationalised names must arrive in their xn-- form), valid port."""
    if not url or len(url) > 4096 or _URL_FORBIDDEN.search(url) or not url.isascii():
        return None
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORT:
        return None
    end = len(rest)
    for stop in "/?#":
        i = rest.find(stop)
        if i != -1:
            end = min(end, i)
    authority = rest[:end].lower()
    if not authority or "@" in authority or "%" in authority:
        return None
    if authority.startswith("["):
        host, bracket, port_text = authority.partition("]")
        if not bracket:
            return None
        try:
            host = _ipv6_host(host[1:])
        except ValueError:
            return None
        if port_text and not port_text.startswith(":"):
            return None
        port_text = port_text[1:]
    else:
        host, _, port_text = authority.partition(":")
        if host.endswith(".") or not all(_LABEL.fullmatch(label) for label in host.split(".")):
            return None
        if all(label.isdigit() for label in host.split(".")):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                return None
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
            return None
        port = int(port_text)
    else:
        port = _DEFAULT_PORT[scheme]
    return scheme, host, port


def origin_allowed(url: str, entries: frozenset[str]) -> bool:
    """Does `url` point at an origin on the allow-list? Exact host match (no subdomains);
    https only, except loopback entries which allow http too; the port must be the entry's
    (or the scheme's default when the entry names none)."""
    origin = url_origin(url)
    if origin is None:
        return False
    scheme, host, port = origin
    for entry in entries:
        entry_host, entry_port = split_entry(entry)
        if entry_host != host:
            continue
        if entry_host in LOOPBACK_HOSTS:
            if port == (entry_port if entry_port is not None else _DEFAULT_PORT[scheme]):
                return True
        elif scheme == "https" and port == (entry_port if entry_port is not None else 443):
            return True
    return False


def fold_param_name(name: str) -> str:
    """A query key reduced to what lenient frameworks look at, to compare with the configured
    name: PHP cuts a key at NUL, drops leading spaces, reads `.`, spaces and an unclosed `[`
    as `_`; PHP, Rails and Express's `qs` read `name[]`, `name[0]` and `name[a]` as `name`,
    and Rack and `qs` drop leading `[` and trailing `]` (`[name]`); ASP.NET ignores case.
    Only letters and digits are kept, so every such spelling folds to the same word."""
    name = name.split("\x00", 1)[0].lstrip(" [")
    bracket = name.find("[")
    if bracket >= 0 and "]" in name[bracket:]:
        name = name[:bracket]
    return "".join(c for c in name if c.isalnum()).lower()


def callback_values(query: bytes, name: str) -> list[str] | None:
    """Every value the query gives `name`, read the ways upstream frameworks read queries
    (`&`, and `;` too). None when it is ambiguous, so refused: given more than once, or under
    a spelling that some framework files under `name` (`name[]`, `name.x`, `Name`, ...)."""
    text = query.decode("utf-8", "replace")
    readings = [text, text.replace(";", "&")] if ";" in text else [text]
    folded = fold_param_name(name)
    found: set[str] = set()
    for reading in readings:
        values = []
        for key, value in parse_qsl(reading, keep_blank_values=True):
            if key == name:
                values.append(value)
            elif fold_param_name(key) == folded:
                return None
        if len(values) > 1:
            return None
        found.update(values)
    return sorted(found) if len(found) <= 1 else None


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
        if "%" in host:
            raise ValueError("must not carry an IPv6 zone id (%...): no URL can name one")
        try:
            host = _ipv6_host(host[1:])
        except ValueError:
            raise ValueError("has an invalid IPv6 address") from None
        if port and not port.startswith(":"):
            raise ValueError("must be host or host:port")
        port = port[1:]
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
