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


def address_allowed(address: IPAddress, allowed: tuple[IPNetwork, ...]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return True
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
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            raise refuse(f"{host} does not resolve") from None
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for text in found:
        address = ipaddress.ip_address(text.split("%")[0])
        if not address_allowed(address, settings.allow_networks):
            raise refuse(
                f"{host} is {address}, which is not a public address (loopback, private, "
                "link-local and metadata ranges are refused unless in webhooks.allow_networks)"
            )
    return found


async def check_webhook_url(url: str, settings: WebhookSettings) -> None:
    host, port = split_url(url, settings)
    await resolve_allowed(host, port, settings)
