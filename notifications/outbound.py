"""Outbound HTTP to URLs that users hand the server (browser-push endpoints) that cannot be aimed at
the inside: not at loopback, private, link-local (the cloud metadata service), shared (CGNAT),
unique-local, multicast, reserved or documentation addresses, however they are spelled.

A URL is checked twice. When it is accepted (``check_url`` + ``resolve_public``): https on the
default port, no user info, a host name in canonical form or a canonical IP literal (``127.1``,
``0x7f.0.0.1``, ``2130706433``, ``0177.0.0.1``, percent-encoding and trailing dots are refused), and
every address the name resolves to public. And when ``PinnedSession`` connects: the name is resolved
again, every address is checked again, and the socket connects to exactly the checked address (TLS
SNI, certificate checks and ``Host`` stay the name), so a DNS answer that changes after the first
check (DNS rebinding) cannot turn the connection inward. Redirects are never followed, and the
environment's proxy, ``.netrc`` and CA-bundle variables are ignored (a proxy would dial unchecked).

Built on the standard library's ``ipaddress`` plus a table of the IANA special-purpose ranges (its
``is_global`` alone lets IPv4-compatible, 6to4 and newer documentation ranges through on some Python
versions). Address literals that embed an IPv4 address (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4)
are judged by the IPv4 address they carry.

``allow_local`` is the local-testing escape hatch: it additionally allows ``http`` or ``https`` to
``127.0.0.1``, ``[::1]`` or ``localhost`` on any port, connecting only to loopback addresses.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import sys
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Host names under which only the local testing escape hatch may reach loopback.
LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# Special-use names (RFC 6761, 6762, 7686, 8375, 9476, and ICANN's .internal): never on the internet.
SPECIAL_USE_NAMES = frozenset({"localhost", "local", "internal", "invalid", "test", "onion", "alt", "arpa"})

_V4_REFUSED = [
    (ipaddress.IPv4Network(network), label)
    for network, label in (
        ("0.0.0.0/8", 'the unspecified "this network" range'),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address (the range of the cloud metadata service)"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "an IETF protocol assignment"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.31.196.0/24", "an AS112 (DNS sink) address"),
        ("192.52.193.0/24", "an AMT relay address"),
        ("192.88.99.0/24", "a deprecated 6to4 relay address"),
        ("192.168.0.0/16", "a private address"),
        ("192.175.48.0/24", "an AS112 (DNS sink) address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        # A public address that only answers from inside Azure (its host platform endpoint).
        ("168.63.129.16/32", "a cloud platform address"),
    )
]
_V6_REFUSED = [
    (ipaddress.IPv6Network(network), label)
    for network, label in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible address"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol assignment (Teredo, benchmarking, ORCHID)"),
        ("2001:db8::/32", "a documentation address"),
        ("2620:4f:8000::/48", "an AS112 (DNS sink) address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "an SRv6 address"),
        ("fc00::/7", "a unique-local address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
]
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

_URL = re.compile(r"(?P<scheme>[^:/?#]*)://(?P<authority>[^/?#]*)(?P<rest>[/?#].*)?", re.DOTALL)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")


class RefusedURL(requests.exceptions.InvalidURL):
    """A URL the server will not send to; the message is a sentence a user can act on."""


class RefusedConnection(NewConnectionError):
    """A connection refused at the last moment: the name now resolves to an address that is not public."""

    def __init__(self, conn: Any, message: str) -> None:
        super().__init__(conn, message)
        self.refusal = message


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # without the brackets of an IPv6 literal
    port: int
    literal: IPAddress | None  # the host, when it is an IP address


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` is not a public unicast address, or None if it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return "a scoped (link-local) address"
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = _v4_refusal(embedded)
            return f"an IPv6 form of {embedded}, {reason}" if reason else None
        for network, label in _V6_REFUSED:
            if address in network:
                return label
        if address not in _V6_GLOBAL_UNICAST:
            return "a reserved address"
        return None if address.is_global else "not a globally reachable address"
    return _v4_refusal(address)


def _v4_refusal(address: ipaddress.IPv4Address) -> str | None:
    for network, label in _V4_REFUSED:
        if address in network:
            return label
    return None if address.is_global else "not a globally reachable address"


def _refuse(message: str) -> RefusedURL:
    return RefusedURL(f"Must be a push service on the internet: {message}")


def _host_literal(host: str) -> IPAddress | None:
    """The address of a canonical IP literal host; None for a host name; raises for anything else."""
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if "%" in inner:
            raise _refuse(f"{host} has a zone index.")
        try:
            address: IPAddress = ipaddress.IPv6Address(inner)
        except ValueError:
            raise _refuse(f"{host} is not an IPv6 address.") from None
        if str(address) != inner:
            raise _refuse(f"{host} is not written in canonical form ([{address}]).")
        return address
    if re.fullmatch(r"[0-9.]+", host):
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise _refuse(f"{host} is not a canonical IPv4 address (four decimal numbers).") from None
        if str(address) != host:
            raise _refuse(f"{host} is not a canonical IPv4 address.")
        return address
    return None


def _check_host_name(host: str) -> None:
    if "%" in host:
        raise _refuse(f"{host} is percent-encoded.")
    if host.endswith("."):
        raise _refuse(f"{host} ends with a dot.")
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _refuse(f"{host} is not a host name (lower-case letters, digits, hyphens and dots).")
    # Top-level domains start with a letter; a last label like "1" or "0x1" is an address in disguise.
    if not labels[-1][0].isalpha():
        raise _refuse(f"{host} is neither a canonical IP address nor a host name.")
    if len(labels) < 2:
        raise _refuse(f"{host} is not a fully qualified host name.")
    if labels[-1] in SPECIAL_USE_NAMES:
        raise _refuse(f".{labels[-1]} names are not on the internet.")


def check_url(url: str, *, allow_local: bool = False) -> Target:
    """Where ``url`` points, if its spelling is acceptable (no name resolution); raises RefusedURL."""
    if not url.isascii() or not url.isprintable() or " " in url or "\\" in url:
        raise RefusedURL("Not a valid URL: only printable ASCII without spaces or backslashes.")
    match = _URL.fullmatch(url)
    if not match or not match["authority"]:
        raise RefusedURL("Not a valid URL.")
    scheme, authority = match["scheme"], match["authority"]
    if "@" in authority:
        raise RefusedURL("Must not contain a user name or password.")
    if authority.startswith("["):
        host, bracket, after = authority.partition("]")
        host += bracket
        if not bracket or (after and not after.startswith(":")):
            raise RefusedURL("Not a valid URL.")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = authority.partition(":")
        port_text = port_text if colon else None
    if port_text is not None and (not _PORT.fullmatch(port_text) or int(port_text) > 65535):
        raise RefusedURL("Not a valid port.")
    literal = _host_literal(host)
    bare_host = host.strip("[]")
    port = int(port_text) if port_text else (443 if scheme == "https" else 80)
    if allow_local and scheme in ("http", "https") and bare_host in LOCAL_HOSTS:
        return Target(scheme, bare_host, port, literal)
    if scheme != "https":
        raise RefusedURL("Must be an https URL.")
    if port != 443:
        raise RefusedURL("Must use the default https port (443).")
    if literal is None:
        _check_host_name(host)
    return Target(scheme, bare_host, port, literal)


def resolve_public(target: Target, *, allow_local: bool = False) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` results for the target, if every address is public; raises RefusedURL otherwise.

    With ``allow_local`` and a local host name, every address must be loopback instead.
    """
    loopback_only = allow_local and target.host in LOCAL_HOSTS
    if target.literal is not None:
        family = socket.AF_INET6 if target.literal.version == 6 else socket.AF_INET
        sockaddr = (str(target.literal), target.port) + ((0, 0) if family == socket.AF_INET6 else ())
        infos: list[tuple[Any, ...]] = [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise _refuse(f"{target.host} does not resolve ({exc}).") from None
    if not infos:
        raise _refuse(f"{target.host} does not resolve.")
    for info in infos:
        sockaddr = info[4]
        try:
            address = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            raise _refuse(f"{target.host} resolves to {sockaddr[0]!r}, not an IP address.") from None
        if len(sockaddr) == 4 and sockaddr[3]:
            reason: str | None = "a scoped (link-local) address"
        elif loopback_only:
            reason = None if address.is_loopback else "not a loopback address"
        else:
            reason = address_refusal(address)
        if reason:
            if target.literal is not None:
                raise _refuse(f"{address} is {reason}.")
            raise _refuse(f"{target.host} resolves to {address}, {reason}.")
    return infos


def check_and_resolve(url: str, *, allow_local: bool = False) -> Target:
    """Both checks, as done when a URL is accepted; raises RefusedURL."""
    target = check_url(url, allow_local=allow_local)
    resolve_public(target, allow_local=allow_local)
    if (
        target.literal is not None
        and target.literal.version == 6
        and not (allow_local and target.host in LOCAL_HOSTS)
    ):
        # Public, but py_vapid signs an audience of scheme://host[:port] with no brackets: no push
        # to it could ever be sent (found by review: accepted, then every push failed). Push
        # services use host names.
        raise RefusedURL("Must name its host: an IPv6 address literal cannot be signed for (VAPID).")
    return target


def refusal_of(exc: BaseException) -> str | None:
    """The refusal behind an exception raised by a PinnedSession, if it was one."""
    if isinstance(exc, RefusedURL):
        return str(exc)
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, RefusedConnection):
        return reason.refusal
    return None


# --- The transport ------------------------------------------------------------------------------


class _PinnedConnectionMixin:
    """Resolve, check every address, and connect the socket to a checked one: never resolve twice."""

    allow_local = False

    def _new_conn(self: Any) -> socket.socket:
        host = self._dns_host.strip("[]")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        try:
            infos = resolve_public(Target("", host, self.port, literal), allow_local=self.allow_local)
        except RefusedURL as exc:
            raise RefusedConnection(self, str(exc)) from None
        last_error: OSError | None = None
        for family, type_, proto, _, sockaddr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        if isinstance(last_error, TimeoutError):
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from last_error
        raise NewConnectionError(self, f"Failed to establish a new connection: {last_error}") from last_error


@functools.cache
def _pool_classes(allow_local: bool) -> dict[str, type[HTTPConnectionPool]]:
    class PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
        pass

    class PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
        pass

    PinnedHTTPConnection.allow_local = PinnedHTTPSConnection.allow_local = allow_local

    class PinnedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTPConnection

    class PinnedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPSConnection

    return {"http": PinnedHTTPConnectionPool, "https": PinnedHTTPSConnectionPool}


class _PinnedAdapter(HTTPAdapter):
    def __init__(self, *, allow_local: bool) -> None:
        self._allow_local = allow_local  # before super().__init__, which builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self._allow_local)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise RefusedURL("Outbound requests to user-given URLs do not go through a proxy.")


class PinnedSession(requests.Session):
    """A requests session that sends only to acceptable URLs, connects only to checked public
    addresses, and never follows a redirect (a 3xx is returned as it is)."""

    def __init__(self, *, allow_local: bool = False) -> None:
        super().__init__()
        self.allow_local = allow_local
        self.trust_env = False
        self.mount("https://", _PinnedAdapter(allow_local=allow_local))
        self.mount("http://", _PinnedAdapter(allow_local=allow_local))

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        check_url(request.url or "", allow_local=self.allow_local)
        kwargs["allow_redirects"] = False
        kwargs["proxies"] = {}
        return super().send(request, **kwargs)
