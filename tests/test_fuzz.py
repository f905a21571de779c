"""Property-based fuzzing (hypothesis) of the pure parsers and rules the data plane and the admin
API stand on: header scanning, the key format, the bearer rule, route matching, callback origins,
admin JSON bodies; and one end-to-end property (no admin body makes the admin port answer 5xx).

Example counts are kept modest so the whole file runs in well under a minute; no example database
is written (`database=None`), so nothing lands in the work tree.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from support import ADMIN_TOKEN, make_settings, resolve_dots, running_gateway

from gateway import auth
from gateway.admin.problems import validate_json
from gateway.admin.schemas import (
    AccountCreate,
    AccountUpdate,
    ChildKeyCreate,
    KeyCreate,
    KeyUpdate,
    OriginCreate,
)
from gateway.config import parse_settings
from gateway.errors import ConfigError, ValidationError
from gateway.http.wire import (
    BadRequest,
    RequestHead,
    normalise_name,
    scan_request,
    scan_response,
)
from gateway.index import KeyIndex
from gateway.keys import (
    BASE62,
    KEY_LENGTH,
    PREFIX_PATTERN,
    checksum,
    generate_key,
    has_valid_checksum,
    is_well_formed,
)
from gateway.origins import callback_values, normalise_entry, origin_allowed, url_origin
from gateway.routes import NO_ROUTE, Route, RouteTable, has_dot_segments, normalise

FAST = settings(max_examples=300, deadline=None, database=None)
MEDIUM = settings(max_examples=150, deadline=None, database=None)


# == header scanning ===========================================================================

# Written out from the contract (section 3) rather than imported, so the test is an oracle.
IDENTITY = [
    b"x-account-id",
    b"x-key-id",
    b"x-environment",
    b"x-scopes",
    b"x-tool-pack-ids",
    b"x-registered-user-ids",
    b"x-request-id",
]
HOP_BY_HOP = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
]
CREDENTIALS = [b"authorization", b"proxy-authorization"]
# Everything else the request scan consumes itself instead of forwarding.
CONSUMED = [
    b"host",
    b"content-length",
    b"expect",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
]
SPECIAL = [*IDENTITY, *HOP_BY_HOP, *CREDENTIALS, *CONSUMED, b"user-agent"]
BENIGN = [b"x-custom", b"accept", b"content-type", b"cookie", b"x-foo", b"x_foo", b"x-a_b"]
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@st.composite
def spelled(draw: st.DrawFn, name: bytes) -> bytes:
    """`name` in any case, each `-` possibly written `_`."""
    out = bytearray()
    for byte in name:
        c = bytes([byte])
        if c == b"-" and draw(st.booleans()):
            c = b"_"
        elif c.isalpha() and draw(st.booleans()):
            c = c.upper()
        out += c
    return bytes(out)


token_names = st.text(TCHAR, min_size=1, max_size=12).map(str.encode)
header_names = st.one_of(
    st.sampled_from(SPECIAL + BENIGN).flatmap(spelled),
    token_names,
)


def connection_value() -> st.SearchStrategy[bytes]:
    item = st.one_of(
        st.sampled_from([b"close", b"keep-alive", b"", b"upgrade", *BENIGN]).flatmap(spelled),
        token_names,
    )
    pad = st.sampled_from([b"", b" ", b"\t"])
    return st.lists(st.tuples(pad, item, pad).map(b"".join), min_size=1, max_size=4).map(b",".join)


header_values = st.one_of(
    st.binary(max_size=20),
    st.sampled_from(
        [b"chunked", b" chunked ", b"gzip, chunked", b"100-continue", b"5", b"0", b"-1", b"abc"]
    ),
    connection_value(),
)


@st.composite
def header_lists(draw: st.DrawFn, with_host: bool = True) -> list[tuple[bytes, bytes]]:
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=12))
    # Name some of the headers in a Connection header, in some spelling.
    if headers and draw(st.booleans()):
        named = draw(st.lists(st.sampled_from([n for n, _ in headers]), min_size=1, max_size=3))
        value = b", ".join(draw(spelled(n.lower())) if draw(st.booleans()) else n for n in named)
        headers.insert(draw(st.integers(0, len(headers))), (b"Connection", value))
    if with_host and draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), (b"Host", b"example.com"))
    return headers


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens |= {t.strip().lower() for t in value.split(b",")}
    return tokens - {b"", b"close", b"keep-alive"}


def scan(headers: list[tuple[bytes, bytes]], http11: bool) -> tuple[RequestHead | None, int]:
    """The scan, or the status of the BadRequest it raised (anything else propagates)."""
    try:
        return scan_request(headers, http11), 0
    except BadRequest as exc:
        return None, exc.status


def is_subsequence(sub: list[Any], seq: list[Any]) -> bool:
    it = iter(seq)
    return all(any(x is y for y in it) for x in sub)


@MEDIUM
@given(
    st.lists(st.tuples(st.binary(max_size=16), st.binary(max_size=24)), max_size=10), st.booleans()
)
def test_scan_request_raises_only_bad_request_on_arbitrary_bytes(
    headers: list[tuple[bytes, bytes]], http11: bool
) -> None:
    head, refused = scan(headers, http11)
    if head is None:
        assert refused in (400, 417)
        return
    assert is_subsequence(head.kept, headers)
    assert not any(normalise_name(n) in IDENTITY + CREDENTIALS + HOP_BY_HOP for n, _ in head.kept)


@FAST
@given(header_lists(), st.booleans())
@example(
    # Connection names a header whose own name is spelled with `_`: it must not be forwarded.
    headers=[(b"Host", b"h"), (b"Connection", b"x_foo"), (b"x_foo", b"1")],
    http11=True,
)
def test_scan_request_keeps_only_what_may_be_forwarded_in_order(
    headers: list[tuple[bytes, bytes]], http11: bool
) -> None:
    head, refused = scan(headers, http11)
    if head is None:
        assert refused in (400, 417)
        return
    kept_names = [n for n, _ in head.kept]
    # Identity headers in any case and with `_` for `-`; credentials; hop-by-hop.
    for name in kept_names:
        norm = normalise_name(name)
        assert norm not in IDENTITY, name
        assert norm not in CREDENTIALS, name
        assert norm not in HOP_BY_HOP, name
        assert norm not in CONSUMED, name
    # Headers named in Connection: the exact name, and its `_`/`-` spellings.
    listed = connection_tokens(headers)
    listed_norm = {normalise_name(t) for t in listed}
    for name in kept_names:
        assert name.lower() not in listed, (name, listed)
        assert normalise_name(name) not in listed_norm, (name, listed)
    # Order is the input order, and nothing else is lost: every other header is forwarded.
    assert is_subsequence(head.kept, headers)
    expected = [
        p
        for p in headers
        if (p[0].lower() == b"user-agent" or normalise_name(p[0]) not in SPECIAL)
        and p[0].lower() not in listed
        and normalise_name(p[0]) not in listed_norm
    ]
    assert head.kept == expected


@FAST
@given(header_lists(with_host=False))
def test_scan_response_never_keeps_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> None:
    head = scan_response(headers)  # never raises
    listed = connection_tokens(headers)
    for name, _ in head.kept:
        assert name.lower() not in HOP_BY_HOP, name
        assert name.lower() not in listed, (name, listed)
        assert name.lower() not in (b"content-length", b"x-request-id"), name
    assert is_subsequence(head.kept, headers)
    expected = [
        p
        for p in headers
        if p[0].lower() not in [*HOP_BY_HOP, b"content-length", b"x-request-id"]
        and p[0].lower() not in listed
    ]
    assert head.kept == expected


@MEDIUM
@given(st.lists(st.tuples(st.binary(max_size=16), st.binary(max_size=24)), max_size=10))
def test_scan_response_never_raises_on_arbitrary_bytes(headers: list[tuple[bytes, bytes]]) -> None:
    head = scan_response(headers)
    assert is_subsequence(head.kept, headers)
    assert not any(n.lower() in HOP_BY_HOP for n, _ in head.kept)


# == keys ======================================================================================

prefixes = st.from_regex(PREFIX_PATTERN, fullmatch=True)


@MEDIUM
@given(prefixes, st.booleans())
def test_generated_keys_are_well_formed(prefix: str, is_test: bool) -> None:
    key = generate_key(prefix, is_test)
    assert len(key) == KEY_LENGTH
    assert key.startswith(f"{prefix}_{'test' if is_test else 'live'}_")
    assert has_valid_checksum(key.encode("ascii"))
    assert is_well_formed(key, prefix)


@st.composite
def drawn_keys(draw: st.DrawFn) -> tuple[str, str]:
    """(key, prefix): a well-formed key whose random part hypothesis chose (so it shrinks)."""
    prefix = draw(prefixes)
    head = f"{prefix}_{draw(st.sampled_from(['live', 'test']))}_"
    body = draw(
        st.text(BASE62, min_size=KEY_LENGTH - len(head) - 6, max_size=KEY_LENGTH - len(head) - 6)
    )
    unsigned = head + body
    return unsigned + checksum(unsigned), prefix


@MEDIUM
@given(drawn_keys(), st.data())
def test_any_single_character_change_in_the_body_fails_the_checksum(
    drawn: tuple[str, str], data: st.DataObject
) -> None:
    key, prefix = drawn
    assert is_well_formed(key, prefix)
    body_start = len(prefix) + 6
    pos = data.draw(st.integers(body_start, KEY_LENGTH - 1), label="position")
    replacement = data.draw(
        st.one_of(st.sampled_from(BASE62), st.characters()).filter(lambda c: c != key[pos]),
        label="replacement",
    )
    mutated = key[:pos] + replacement + key[pos + 1 :]
    raw = mutated.encode("utf-8", "surrogatepass")
    assert not has_valid_checksum(raw)
    assert not is_well_formed(mutated, prefix)


@MEDIUM
@given(st.one_of(st.binary(), st.binary(min_size=KEY_LENGTH, max_size=KEY_LENGTH)))
def test_checksum_of_arbitrary_bytes_never_raises(raw: bytes) -> None:
    assert has_valid_checksum(raw) in (True, False)


@MEDIUM
@given(st.text(), prefixes)
def test_is_well_formed_of_arbitrary_text_never_raises(text: str, prefix: str) -> None:
    assert is_well_formed(text, prefix) in (True, False)


# == the bearer rule ===========================================================================

REASONS = {
    auth.MISSING,
    auth.DUPLICATE,
    auth.SCHEME,
    auth.EMPTY,
    auth.LENGTH,
    auth.CHECKSUM,
    auth.UNKNOWN,
}
valid_keys = st.builds(generate_key, prefixes, st.booleans()).map(str.encode)
header_value = st.one_of(
    st.none(),
    st.binary(max_size=120),
    st.builds(lambda v: b"Bearer " + v, st.binary(max_size=120)),
    st.builds(lambda v: b"Bearer " + v, st.binary(min_size=96, max_size=96)),
    st.builds(lambda k: b"Bearer " + k, valid_keys),
    st.builds(
        lambda s, k, t: s + k + t,
        st.sampled_from([b"bearer ", b"BEARER ", b"Bearer  ", b"Bearer\t", b"Basic ", b""]),
        valid_keys,
        st.sampled_from([b"", b" ", b"x"]),
    ),
)


@FAST
@given(header_value, st.floats(allow_nan=False))
def test_authenticate_against_an_empty_index_never_authenticates(
    value: bytes | None, now: float
) -> None:
    entry, reason = auth.authenticate(value, KeyIndex(), now)
    assert entry is None
    assert reason in REASONS


# == route matching ============================================================================

TABLE_ROUTES: list[dict[str, Any]] = [
    {"path": "/mcp/*", "methods": ["POST", "GET"], "scopes": ["runtime:all"]},
    {"path": "/registered-users/{registered_user_id}/*"},
    {"path": "/tool-packs/{tool_pack_id}"},
    {"path": "/oauth/authorize", "callback_param": "redirect_uri"},
    {"path": "/status", "public": True},
    {"path": "/public/*", "public": True},
    {"path": "/admin/*", "scopes": ["management:all"]},
    {"path": "/{x}/secret/*", "scopes": ["management:all"]},
    {"path": "/v1/users/{user_id}/*", "methods": ["DELETE"], "scopes": ["management:all"]},
    {"path": "/*", "methods": ["TRACE"], "scopes": ["management:all"]},
]
METHODS = ["GET", "POST", "DELETE", "TRACE", "PUT"]
LITERALS = ["mcp", "public", "status", "admin", "secret", "a"]


def build_table(routes: list[dict[str, Any]]) -> RouteTable:
    settings_ = parse_settings({"upstream": {"url": "http://x"}, "routes": routes}, "t.toml")
    return RouteTable(settings_.routes)


FIXED_TABLE = build_table(TABLE_ROUTES)


@st.composite
def route_tables(draw: st.DrawFn) -> RouteTable:
    routes = []
    for _ in range(draw(st.integers(1, 5))):
        segments = draw(
            st.lists(st.sampled_from([*LITERALS, "{p}", "{q}"]), max_size=3, unique=True)
        )
        path = "/" + "/".join(segments)
        if draw(st.booleans()):
            path = path.rstrip("/") + "/*"
        route: dict[str, Any] = {"path": path}
        if draw(st.booleans()):
            route["methods"] = draw(st.lists(st.sampled_from(METHODS), min_size=1, unique=True))
        if draw(st.booleans()):
            route["public"] = True
        elif draw(st.booleans()):
            route["scopes"] = ["runtime:all"]
        routes.append(route)
    try:
        return build_table(routes)
    except ConfigError:
        assume(False)
        raise


PIECES = [
    b"/", b"//", b"mcp", b"public", b"status", b"admin", b"secret", b"a", b"x",
    b"%2F", b"%2f", b"%5C", b"%5c", b"\\", b"%6Dcp", b"%70ublic", b"%", b"%zz", b"%00",
    b"%FF", b".", b"..", b"%2e", b"%2E", b".x", b"~", b" ", b";", b"?",
]  # fmt: skip
paths = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=10).map(lambda ps: b"/" + b"".join(ps)),
    st.binary(max_size=40),
)
# Spellings that upstreams read more than one way; `;` (a path parameter) since issue 15.
AMBIGUOUS = (b"%2f", b"%5c", b"\\", b"//", b";", b"%3b")


def plain_first(table: RouteTable, method: str, segments: list[bytes]) -> Route:
    """First match by a linear scan in config order (no buckets): the reference."""
    for route in table.routes:
        if route.matches(method, segments) is not None:
            return route
    return NO_ROUTE


def readings(raw: bytes) -> list[list[bytes]]:
    """The ways an upstream may read the path (what the gateway's matching must cover)."""
    unq = urllib.parse.unquote_to_bytes
    out = [resolve_dots([unq(p) for p in raw.split(b"/")])]
    lowered = raw.lower()
    if b"%2f" in lowered or b"%5c" in lowered or b"\\" in raw:
        split = raw.replace(b"\\", b"/")
        for sep in (b"%2F", b"%2f", b"%5C", b"%5c"):
            split = split.replace(sep, b"/")
        out.append(resolve_dots([unq(p) for p in split.split(b"/")]))
    if b"//" in raw:  # not merging slashes: empty segments are segments, decoded or not
        out.append(raw.split(b"/")[1:])
        if raw.startswith(b"/"):
            out.append([unq(p) for p in raw.split(b"/")[1:]])
    return out


def check_covers_every_reading(table: RouteTable, method: str, raw: bytes) -> None:
    found = table.match(method, raw)
    assert found == table.match(method, raw)  # deterministic
    routes = [r for r, _ in found]
    if has_dot_segments(raw):
        return  # refused before matching (tests/test_routes.py)
    expected = [plain_first(table, method, r) for r in readings(raw)]
    if not found:
        assert all(r is NO_ROUTE for r in expected), (raw, [r.path for r in expected])
        return
    for route in expected:
        assert route in routes, (raw, route.path, [r.path for r in routes])
    if all(r.public for r in routes):
        assert all(r.public for r in expected)
    if not any(sep in raw.lower() for sep in AMBIGUOUS):
        # An unambiguous path has one reading: exactly its first match, public or not.
        assert len(found) == 1
        assert found[0][0] is expected[0]
        assert found[0][1] == (expected[0].matches(method, readings(raw)[0]) or {})


@FAST
@given(st.sampled_from(METHODS), paths)
def test_route_matching_on_the_fixed_table(method: str, raw: bytes) -> None:
    normalise(raw)
    normalise(raw, split_encoded_slashes=True)
    has_dot_segments(raw)
    check_covers_every_reading(FIXED_TABLE, method, raw)


@MEDIUM
@given(route_tables(), st.sampled_from(METHODS), paths)
def test_route_matching_on_generated_tables(table: RouteTable, method: str, raw: bytes) -> None:
    check_covers_every_reading(table, method, raw)


@MEDIUM
@given(st.sampled_from(METHODS), paths)
def test_a_public_match_of_an_unambiguous_path_is_the_only_match(method: str, raw: bytes) -> None:
    assume(not has_dot_segments(raw))
    assume(not any(sep in raw.lower() for sep in AMBIGUOUS))
    found = FIXED_TABLE.match(method, raw)
    if found and found[0][0].public:
        assert len(found) == 1
    if any(r.public for r, _ in found):
        assert all(r.public for r, _ in found)


# == callback origins ==========================================================================

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=3).map(".".join)
ports = st.none() | st.integers(1, 65535)


@st.composite
def entries(draw: st.DrawFn, loopback: bool | None = None) -> str:
    is_loop = draw(st.booleans()) if loopback is None else loopback
    host = (
        draw(st.sampled_from(["localhost", "127.0.0.1", "[::1]"])) if is_loop else draw(hostnames)
    )
    port = draw(ports)
    text = host if port is None else f"{host}:{port}"
    try:
        entry = normalise_entry(text)
    except ValueError:
        assume(False)
        raise
    if not is_loop:
        assume(host not in ("localhost", "127.0.0.1"))
    return entry


def entry_host(entry: str) -> str:
    if entry.startswith("["):
        return entry[: entry.index("]") + 1]
    return entry.partition(":")[0]


def entry_port(entry: str) -> int | None:
    rest = entry[len(entry_host(entry)) :]
    return int(rest[1:]) if rest else None


def swap_case(text: str, flips: list[bool]) -> str:
    return "".join(
        c.upper() if f else c for c, f in zip(text, flips + [False] * len(text), strict=False)
    )


LOOKALIKES = [
    "evil.{h}",
    "www.{h}",
    "{h}.evil.com",
    "{h}evil.com",
    "{h}-evil.com",
    "x{h}",
    "{h}.",
    "{h}..",
    "{h}@evil.com",
    "{h}:443@evil.com",
    "evil.com@{h}",
    "{h}%2eevil.com",
    "{h}\\.evil.com",
    "{h}%00",
    "{h}\t",
    " {h}",
]


@MEDIUM
@given(
    st.lists(entries(), min_size=1, max_size=3),
    st.data(),
    st.sampled_from(["https", "http", "HTTPS", "Https"]),
    st.sampled_from(LOOKALIKES),
    st.sampled_from(["", "/", "/cb?x=1", "#frag", "?a=b"]),
    st.lists(st.booleans(), max_size=40),
)
def test_a_look_alike_host_is_never_allowed(
    allow: list[str], data: st.DataObject, scheme: str, shape: str, tail: str, flips: list[bool]
) -> None:
    target = data.draw(st.sampled_from(allow))
    host = entry_host(target)
    port = entry_port(target)
    fake = shape.format(h=host)
    url = f"{scheme}://{fake}" + (f":{port}" if port and "@" not in shape else "") + tail
    hosts = {entry_host(e) for e in allow}
    origin = url_origin(url)
    if origin is not None and origin[1] in hosts:
        return  # the look-alike happened to be another allowed entry
    assert not origin_allowed(url, frozenset(allow)), url
    assert not origin_allowed(swap_case(url, flips), frozenset(allow)), url


@MEDIUM
@given(
    st.lists(entries(), min_size=1, max_size=3),
    st.data(),
    st.sampled_from(["https", "http"]),
    st.sampled_from(["", "/", "/cb?x=1", "#x", "?a=b"]),
    st.lists(st.booleans(), max_size=40),
)
def test_exact_entries_case_and_scheme(
    allow: list[str], data: st.DataObject, scheme: str, tail: str, flips: list[bool]
) -> None:
    target = data.draw(st.sampled_from(allow))
    host, port = entry_host(target), entry_port(target)
    default = 443 if scheme == "https" else 80
    url = f"{scheme}://{host}" + (f":{port}" if port else "") + tail
    allowed = origin_allowed(url, frozenset(allow))
    loopback = host in ("localhost", "127.0.0.1", "[::1]")
    if scheme == "http" and not loopback:
        # http:// is never allowed for a non-loopback host, whatever the entries.
        assert not allowed, url
    elif port is None or port == default:
        assert allowed, url
    # Upper-case spellings behave exactly like lower-case ones.
    upper_url = swap_case(f"{scheme}://{host}", flips) + url[len(f"{scheme}://{host}") :]
    assert origin_allowed(upper_url, frozenset(allow)) == allowed, upper_url
    if allowed:
        # What a standard URL parser sees is the same origin.
        parts = urllib.parse.urlsplit(url)
        assert parts.username is None and parts.password is None
        assert parts.scheme in ("http", "https")
        seen_host = parts.hostname or ""
        assert seen_host in (host, host.strip("[]")), (url, seen_host)
        assert (parts.port or default) == (port or default)


@MEDIUM
@given(st.lists(entries(loopback=False), min_size=1, max_size=3), st.text(max_size=60))
def test_http_is_never_allowed_for_non_loopback_entries(allow: list[str], rest: str) -> None:
    for entry in allow:
        for url in (
            f"http://{entry}{rest}",
            f"HTTP://{entry}/{rest}",
            f"http://{entry_host(entry)}:443",
        ):
            assert not origin_allowed(url, frozenset(allow)), url


@FAST
@given(
    st.one_of(
        st.text(max_size=80),
        st.builds(
            lambda s, r: s + r,
            st.sampled_from(["https://", "http://", "HTTPS://"]),
            st.text(max_size=60),
        ),
    ),
    st.lists(entries(), max_size=3),
)
def test_origin_helpers_never_raise(url: str, allow: list[str]) -> None:
    origin = url_origin(url)
    if origin is not None:
        scheme, host, port = origin
        assert scheme in ("http", "https")
        assert host and host == host.lower()
        assert 0 <= port <= 65535
    allowed = origin_allowed(url, frozenset(allow))
    if allowed:
        assert origin is not None and origin[1] in {entry_host(e) for e in allow}


@FAST
@given(
    st.one_of(
        st.text(max_size=40), st.builds(lambda h, p: f"{h}:{p}", hostnames, st.text(max_size=6))
    )
)
def test_normalise_entry_raises_only_value_error_and_is_idempotent(text: str) -> None:
    try:
        entry = normalise_entry(text)
    except ValueError:
        return
    assert normalise_entry(entry) == entry
    assert entry == entry.lower()
    assert normalise_entry(text.upper()) == entry


@FAST
@given(
    st.one_of(
        st.binary(max_size=60),
        st.lists(
            st.sampled_from(
                [b"redirect_uri", b"=", b"&", b";", b"%3D", b"%26", b"x", b"+", b"%", b"\xff"]
            ),
            max_size=12,
        ).map(b"".join),
    ),
    st.sampled_from(["redirect_uri", "x", ""]),
)
def test_callback_values_never_raise(query: bytes, name: str) -> None:
    values = callback_values(query, name)
    assert values is None or (isinstance(values, list) and len(values) <= 1)


# == admin JSON bodies =========================================================================

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:?[0-9]{2})\Z"
    ),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+23:59",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31T23:59:59.999999Z",
            "2030-01-01T00:00:00",
            "2030-01-01T00:00:00+24:00",
            "2030-02-30T00:00:00Z",
        ]
    ),
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "expires_at": timestamps,
    "expires_in": st.integers(-(2**70), 2**70) | st.sampled_from([59, 60, 100 * 365 * 86400 + 1]),
    "scopes": st.lists(st.sampled_from(["runtime:all", "management:all", "", "x" * 65, "nope"])),
    "tool_pack_ids": st.none() | st.lists(st.text(max_size=12)),
    "registered_user_ids": st.none() | st.lists(st.text(max_size=12)),
    "status": st.sampled_from(["active", "deactivated", "ACTIVE", ""]),
    "id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,4}", fullmatch=True) | st.text(max_size=8),
}
MODELS = [AccountCreate, AccountUpdate, KeyCreate, KeyUpdate, OriginCreate, ChildKeyCreate]


@st.composite
def model_shaped(draw: st.DrawFn, model: Any) -> dict[str, Any]:
    names = list(model.model_fields)
    chosen = draw(st.lists(st.sampled_from(names), unique=True))
    doc = {
        name: draw(st.one_of(json_values, FIELD_VALUES.get(name, json_values))) for name in chosen
    }
    if draw(st.integers(0, 9)) == 0:
        doc[draw(st.text(max_size=8))] = draw(json_values)
    return doc


def raw_bodies(model: Any) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=60),
        json_values.map(lambda v: json.dumps(v).encode()),
        model_shaped(model).map(lambda v: json.dumps(v).encode()),
        model_shaped(model).map(
            lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")
        ),
    )


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_validate_json_returns_or_raises_validation_error_only(model: Any) -> None:
    @settings(max_examples=250, deadline=None, database=None)
    @given(raw_bodies(model))
    def check(raw: bytes) -> None:
        try:
            body, present = validate_json(raw, model)
        except ValidationError as exc:
            errors = exc.errors
            status = exc.status
        else:
            assert isinstance(body, model)
            assert present <= set(model.model_fields)
            return
        assert status == 400
        assert errors and all(set(e) == {"field", "message"} for e in errors)

    check()


# == end to end: no admin body makes the admin port answer 5xx ==================================


def post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            path,
            body=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_admin_posts_of_arbitrary_json_never_answer_5xx(
    tmp_path: Path, upstream: TestServer
) -> None:
    settings_ = make_settings(tmp_path, str(upstream.make_url("")).rstrip("/"))
    async with running_gateway(settings_) as gw:
        account = await gw.account(provision_production_key=False)
        port = gw.gateway.admin_port
        key_bodies = st.one_of(
            json_values,
            model_shaped(KeyCreate),
            model_shaped(KeyCreate).map(lambda d: {**d, "account_id": account["id"]}),
        )
        account_bodies = st.one_of(json_values, model_shaped(AccountCreate))
        seen: list[tuple[str, Any, int]] = []

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            st.one_of(
                st.tuples(st.just("/admin/v1/keys"), key_bodies),
                st.tuples(st.just("/admin/v1/accounts"), account_bodies),
            )
        )
        @example(("/admin/v1/accounts", {"name": "fuzz", "provision_production_key": False}))
        @example(("/admin/v1/keys", {"account_id": account["id"]}))
        def check(case: tuple[str, Any]) -> None:
            path, doc = case
            raw = json.dumps(doc).encode()
            status, answer = post(port, path, raw)
            seen.append((path, doc, status))
            assert status < 500, f"POST {path} {raw!r} -> {status} {answer!r}"

        await asyncio.to_thread(check)
        assert any(status in (200, 201) for _, _, status in seen)
