"""Route matching (table-driven): patterns, methods, parameters, and path normalisation that
cannot be used to move a request from a protected route to a public one."""

from __future__ import annotations

import pytest

from gateway.config import parse_settings
from gateway.errors import ConfigError
from gateway.routes import NO_ROUTE, RouteTable, has_dot_segments, normalise

ROUTES = [
    {"path": "/mcp/*", "methods": ["POST", "GET"], "scopes": ["runtime:all"]},
    {"path": "/registered-users/{registered_user_id}/*"},
    {"path": "/tool-packs/{tool_pack_id}"},
    {"path": "/oauth/authorize", "callback_param": "redirect_uri"},
    {"path": "/status", "public": True},
    {"path": "/public/*", "public": True},
    {"path": "/admin/*", "scopes": ["management:all"]},
    {"path": "/v1/users/{user_id}/*", "methods": ["DELETE"], "scopes": ["management:all"]},
    {"path": "/*", "methods": ["TRACE"], "scopes": ["management:all"]},
]


def table(routes: list[dict] = ROUTES) -> RouteTable:
    settings = parse_settings({"upstream": {"url": "http://x"}, "routes": routes}, "t.toml")
    return RouteTable(settings.routes)


def first(method: str, path: str) -> tuple[str, dict[str, bytes]] | None:
    found = table().match(method, path.encode())
    if not found:
        return None
    assert len(found) == 1, found
    return found[0][0].path, found[0][1]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/mcp/x", ("/mcp/*", {})),
        ("GET", "/mcp/a/b/c", ("/mcp/*", {})),
        ("GET", "/mcp", ("/mcp/*", {})),
        ("GET", "/mcp/", ("/mcp/*", {})),
        ("PUT", "/mcp/x", None),
        ("GET", "/mcpx", None),
        ("GET", "/MCP/x", None),
        (
            "GET",
            "/registered-users/u1/profile",
            ("/registered-users/{registered_user_id}/*", {"registered_user_id": b"u1"}),
        ),
        (
            "GET",
            "/registered-users/u1",
            ("/registered-users/{registered_user_id}/*", {"registered_user_id": b"u1"}),
        ),
        ("GET", "/registered-users", None),
        ("GET", "/tool-packs/tp%201", ("/tool-packs/{tool_pack_id}", {"tool_pack_id": b"tp 1"})),
        ("GET", "/tool-packs/a/b", None),
        ("GET", "/oauth/authorize", ("/oauth/authorize", {})),
        ("GET", "/status", ("/status", {})),
        ("GET", "/status/", ("/status", {})),
        ("GET", "/./status", ("/status", {})),
        ("GET", "/x/../status", ("/status", {})),
        ("GET", "/%73tatus", ("/status", {})),
        ("GET", "/status/x", None),
        ("DELETE", "/v1/users/42/keys", ("/v1/users/{user_id}/*", {"user_id": b"42"})),
        ("GET", "/v1/users/42/keys", None),
        ("TRACE", "/anything/at/all", ("/*", {})),
        ("GET", "/", None),
    ],
)
def test_matching(method: str, path: str, expected: tuple[str, dict[str, bytes]] | None) -> None:
    assert first(method, path) == expected


def test_first_match_wins() -> None:
    t = table([{"path": "/a/{x}", "scopes": ["runtime:all"]}, {"path": "/a/b", "public": True}])
    assert t.match("GET", b"/a/b")[0][0].path == "/a/{x}"


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        (b"/", []),
        (b"//a///b/", [b"a", b"b"]),
        (b"/a/./b/../c", [b"a", b"c"]),
        (b"/../../a", [b"a"]),
        (b"/a/%2e%2E/b", [b"b"]),
        (b"/a%2Fb", [b"a/b"]),
        (b"/a%20b", [b"a b"]),
        (b"/%zz", [b"%zz"]),
    ],
)
def test_normalise(path: bytes, segments: list[bytes]) -> None:
    assert normalise(path) == segments


@pytest.mark.parametrize(
    "path",
    [
        "/status%2F..%2Fadmin/users",
        "/status/..%2F..%2Fadmin",
        "/public/..%2Fadmin/x",
        "/public/..%5Cadmin",
        "/public/..\\admin",
    ],
)
def test_an_encoded_slash_cannot_turn_a_protected_path_public(path: str) -> None:
    found = table().match("GET", path.encode())
    assert not all(route.public for route, _ in found) or not found
    assert any(route.path == "/admin/*" for route, _ in found), found


def test_merged_slashes_are_also_read_as_empty_segments() -> None:
    assert [r.path for r, _ in table().match("GET", b"//status")] == ["/status", NO_ROUTE.path]
    assert [r.path for r, _ in table().match("GET", b"/mcp//x")] == ["/mcp/*"]


@pytest.mark.parametrize(
    ("path", "dots"),
    [
        (b"/a/../b", True),
        (b"/a/./b", True),
        (b"/a/..", True),
        (b"/%2e%2E/x", True),
        (b"/a%2F..%2Fb", True),
        (b"/a\\..\\b", True),
        (b"/a/.%2e/b", True),
        (b"/a/...", False),
        (b"/a/.hidden", False),
        (b"/a..b/c", False),
        (b"/v1.2/x", False),
        (b"/", False),
    ],
)
def test_dot_segments_in_any_spelling_are_detected(path: bytes, dots: bool) -> None:
    assert has_dot_segments(path) is dots


def test_an_encoded_slash_that_leaves_public_for_no_route_needs_a_key() -> None:
    found = table().match("GET", b"/public/..%2Fsomewhere")
    assert [r.path for r, _ in found] == ["/public/*", NO_ROUTE.path]


def test_encoded_slash_inside_a_parameter_still_matches() -> None:
    found = table().match("GET", b"/tool-packs/a%2Fb")
    paths = [r.path for r, _ in found]
    assert paths[0] == "/tool-packs/{tool_pack_id}"
    assert found[0][1] == {"tool_pack_id": b"a/b"}


@pytest.mark.parametrize(
    ("routes", "key", "fragment"),
    [
        ([{"path": "mcp/*"}], "routes[0].path", "must start with /"),
        ([{"path": "/a/*/b"}], "routes[0].path", "only allowed as the whole last segment"),
        ([{"path": "/a*"}], "routes[0].path", "only allowed"),
        ([{"path": "/a/{x"}], "routes[0].path", "invalid segment"),
        ([{"path": "/a/{x}/{x}"}], "routes[0].path", "twice"),
        ([{"path": "/a//b"}], "routes[0].path", "empty"),
        ([{"path": "/a/../b"}], "routes[0].path", "'..'"),
        ([{"path": "/a", "scopes": ["nope:all"]}], "routes[0].scopes", "unknown scope"),
        ([{"path": "/a", "methods": ["get"]}], "routes[0].methods", "not an HTTP method"),
        ([{"path": "/a", "methods": []}], "routes[0].methods", "non-empty"),
        (
            [{"path": "/a", "public": True, "scopes": ["runtime:all"]}],
            "routes[0].public",
            "cannot also",
        ),
        ([{"path": "/a", "public": True, "callback_param": "r"}], "routes[0].public", "callback"),
        ([{"path": "/a", "publik": True}], "routes[0].publik", "unknown key"),
        ([{"path": "/ok"}, {"methods": ["GET"]}], "routes[1].path", "is required"),
        ([{"path": "/a", "callback_param": "a b"}], "routes[0].callback_param", "query parameter"),
    ],
)
def test_invalid_routes_stop_start_up(routes: list[dict], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings({"upstream": {"url": "http://x"}, "routes": routes}, "g.toml")
    assert str(info.value).startswith(f"g.toml: {key}: ")
    assert fragment in str(info.value)
