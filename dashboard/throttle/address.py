"""The client address sign-in throttles count by.

It is ``REMOTE_ADDR`` (``scope["client"]`` on a socket): the peer's address, or, when the peer is a
proxy uvicorn trusts (``--proxy-headers`` with the proxy in ``FORWARDED_ALLOW_IPS``), the client
address that proxy put in ``X-Forwarded-For``. Nothing here reads ``X-Forwarded-For`` itself: any
client can write one, and only the server knows which peers to believe.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

IPV6_PREFIX = 64


def client_address(ip: str | None) -> str | None:
    """``ip`` as the throttles key it: IPv4 as is; IPv6 as its /64 network address (one subscriber
    is handed a whole /64, and rotating through it must not buy fresh guesses); None if unusable."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False).network_address)
    return str(address)


def request_address(request: HttpRequest) -> str | None:
    """The address of an HTTP request (also django-axes' ``AXES_CLIENT_IP_CALLABLE``)."""
    return client_address(request.META.get("REMOTE_ADDR"))


def scope_address(scope: Mapping[str, Any]) -> str | None:
    """The address of an ASGI connection (a WebSocket handshake)."""
    client = scope.get("client")
    return client_address(client[0]) if client else None
