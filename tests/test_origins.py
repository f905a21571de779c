"""Callback origins: allow-list entries and URL matching, table-driven."""

from __future__ import annotations

import pytest

from gateway.origins import callback_values, normalise_entry, origin_allowed

ENTRIES = frozenset(
    {
        "app.example.com",
        "localhost:3000",
        "127.0.0.1:8080",
        "api.example.org:8443",
        "[::1]:5000",
        "xn--bcher-kva.example",
    }
)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://app.example.com/callback", True),
        ("https://app.example.com", True),
        ("https://app.example.com:443/cb", True),  # default port written out
        ("https://APP.Example.COM/cb", True),  # host case is not significant
        ("HTTPS://app.example.com/cb", True),
        ("http://app.example.com/cb", False),  # ordinary hosts: https only
        ("https://app.example.com:8443/cb", False),  # another port
        ("https://evil.app.example.com/cb", False),  # subdomain
        ("https://app.example.com.evil.com/cb", False),  # look-alike suffix
        ("https://evilapp.example.com/cb", False),
        ("https://app.example.com./cb", False),  # trailing dot
        ("https://app.example.com@evil.com/cb", False),  # userinfo
        ("https://user:pw@app.example.com/cb", False),
        ("https://app.example.com\\@evil.com", False),  # backslash tricks
        ("https://app.example.com%2F@evil.com", False),
        ("https:\\\\app.example.com", False),
        ("//app.example.com/cb", False),  # scheme-relative
        ("https:app.example.com", False),
        ("javascript:alert(1)//app.example.com", False),
        ("data:text/html,x", False),
        ("ftp://app.example.com", False),
        ("", False),
        (" https://app.example.com", False),
        ("https://app.example.com /cb", False),
        ("https://app.exa\tmple.com", False),
        ("https://bücher.example/cb", False),  # IDN must arrive in xn-- form
        ("https://xn--bcher-kva.example/cb", True),
        ("http://localhost:3000/cb", True),  # loopback entries: http or https, their port
        ("https://localhost:3000/cb", True),
        ("http://localhost:3001/cb", False),
        ("http://localhost/cb", False),
        ("http://127.0.0.1:8080/cb", True),
        ("http://127.0.0.1:80/cb", False),
        ("http://[::1]:5000/cb", True),
        ("http://[::1]/cb", False),
        ("https://api.example.org:8443/x", True),
        ("https://api.example.org/x", False),
        ("https://app.example.com:99999", False),
        ("https://app.example.com:-1", False),
        ("https://app.example.com:", True),  # empty port = default port, as browsers read it
        ("https://[::1", False),
        ("https://256.256.256.256", False),
    ],
)
def test_origin_matching(url: str, allowed: bool) -> None:
    assert origin_allowed(url, ENTRIES) is allowed


def test_nothing_is_allowed_by_an_empty_list() -> None:
    assert not origin_allowed("https://app.example.com", frozenset())


@pytest.mark.parametrize(
    ("entry", "stored"),
    [
        ("App.Example.com", "app.example.com"),
        ("localhost:3000", "localhost:3000"),
        ("[::1]:8080", "[::1]:8080"),
        ("127.0.0.1", "127.0.0.1"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
    ],
)
def test_entries_are_normalised(entry: str, stored: str) -> None:
    assert normalise_entry(entry) == stored


@pytest.mark.parametrize(
    ("query", "values"),
    [
        (b"redirect_uri=https%3A%2F%2Fa.example%2Fcb&x=1", ["https://a.example/cb"]),
        (b"x=1", []),
        (b"redirect_uri=a&redirect_uri=b", None),
        (b"redirect_uri=a&redirect_uri=a", None),
        (b"x=1;redirect_uri=https://evil.example", ["https://evil.example"]),
        (b"redirect%5Furi=https://evil.example", ["https://evil.example"]),
        (b"redirect_uri=a;redirect_uri=b", None),
    ],
)
def test_callback_parameter_is_read_every_way_an_upstream_might(
    query: bytes, values: list[str] | None
) -> None:
    assert callback_values(query, "redirect_uri") == values
