"""Where the gateway may send webhooks (contract section 9, "Safety"): `https` only, plain
`http` to the hosts in `webhooks.allow_http_hosts`; never to an address in a loopback, private,
link-local, multicast or otherwise non-global range (cloud metadata endpoints included) unless
it is inside `webhooks.allow_networks`. Checked when a URL is saved and again, on the address
actually connected to, at delivery time (so a name that later resolves elsewhere cannot slip
through).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import weakref
from urllib.parse import urlsplit

from gateway.config import IPNetwork, WebhookSettings
from gateway.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def refuse(message: str) -> ValidationError:
    return ValidationError([{"field": "webhook_url", "message": message}])


def split_url(url: str, settings: WebhookSettings) -> tuple[str, int]:
    """(host, port) of a webhook URL the rules allow by its form, else ValidationError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise refuse("is not a valid URL") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise refuse("must be an https:// URL")
    if parts.username is not None or parts.password is not None:
        raise refuse("must not carry credentials")
    if parts.fragment:
        raise refuse("must not have a fragment")
    if parts.scheme == "http" and host not in settings.allow_http_hosts:
        raise refuse("must use https (plain http only to webhooks.allow_http_hosts)")
    return host, port or (443 if parts.scheme == "https" else 80)


# IPv6 a webhook may reach: global unicast, less the ranges that carry an IPv4 address inside
# (6to4, Teredo) and could lead back into a private network. NAT64 (64:ff9b::/96), IPv4-
# compatible (::a.b.c.d) and old site-local (fec0::/10) are outside 2000::/3 to begin with.
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
_TUNNELS = (ipaddress.ip_network("2002::/16"), ipaddress.ip_network("2001::/32"))
DNS_TIMEOUT = 5.0
# At most 8 lookups at once per event loop: a flood of saves cannot take the resolver's threads.
_lookups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def address_allowed(address: IPAddress, allowed: tuple[IPNetwork, ...]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return True
    if isinstance(address, ipaddress.IPv6Address) and (
        address not in _GLOBAL_UNICAST or any(address in net for net in _TUNNELS)
    ):
        return False
    return address.is_global and not address.is_multicast


async def resolve_allowed(host: str, port: int, settings: WebhookSettings) -> list[str]:
    """The addresses `host` resolves to, every one of them allowed; else ValidationError."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [str(literal)]
    else:
        try:
            loop = asyncio.get_running_loop()
            async with _lookups.setdefault(loop, asyncio.Semaphore(8)):
                infos = await asyncio.wait_for(
                    asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                    DNS_TIMEOUT,
                )
        except (OSError, UnicodeError, TimeoutError):
            infos = []
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    # One answer for "does not resolve" and "resolves somewhere private", naming no address:
    # the endpoint must not become a way to map an internal network.
    if not found or not all(
        address_allowed(ipaddress.ip_address(text.split("%")[0]), settings.allow_networks)
        for text in found
    ):
        raise refuse(
            f"{host} must resolve to public addresses only, and is not a public address "
            "(loopback, private, link-local and metadata ranges are refused unless in "
            "webhooks.allow_networks)"
        )
    return found


async def check_webhook_url(url: str, settings: WebhookSettings) -> None:
    host, port = split_url(url, settings)
    await resolve_allowed(host, port, settings)
