"""A fake Web Push service for tests: a real HTTP server that checks what a push service checks
(RFC 8030 headers, the RFC 8292 VAPID JWT) and decrypts each message as the browser would (RFC 8291).

Each test makes its own ``Browser`` (a P-256 key pair and auth secret, like a browser's subscription);
the server decrypts whatever is POSTed to that browser's endpoint with its keys and records it.
Endpoints under ``/gone/`` answer 410 and under ``/broken/`` 500, like a push service would, and
those in ``redirects`` answer 307 to the location given there.

It listens on http://127.0.0.1, which the outbound rules allow only with the local-testing escape
hatch ``RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL`` (tests/conftest.py turns it on for the worker; tests
sending in-process use ``allow_insecure_local``).

``FakeDNS`` and ``LoopbackOnlySocket`` keep tests about addresses on this machine: names resolve from
a table (never through DNS) and no socket may connect beyond loopback.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import http_ece
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

# example.com's addresses when this was written: public, so the outbound rules accept them, and
# never dialled (tests resolve through FakeDNS and connect through LoopbackOnlySocket).
PUBLIC_ADDRESSES = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Browser:
    """One browser's subscription: the keys the browser keeps, and what it gives the server."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth_secret: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64url(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)

    @property
    def path(self) -> str:
        return "/" + self.endpoint.split("/", 3)[3]

    def subscription_json(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives the page."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": self.p256dh, "auth": self.auth},
        }


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]  # names in lower case
    claims: dict[str, Any]
    vapid_public_key: str
    payload: dict[str, Any]


def verify_vapid(authorization: str) -> tuple[dict[str, Any], str]:
    """The JWT claims and the sender's key from ``vapid t=<jwt>, k=<key>``; raises if the signature fails."""
    scheme, _, params = authorization.partition(" ")
    assert scheme.lower() == "vapid", authorization
    values = dict(part.strip().split("=", 1) for part in params.split(","))
    token, key = values["t"], values["k"]
    header_b64, claims_b64, signature_b64 = token.split(".")
    header = json.loads(unb64url(header_b64))
    assert header == {"typ": "JWT", "alg": "ES256"}, header
    signature = unb64url(signature_b64)
    assert len(signature) == 64  # JOSE: r and s, 32 bytes each
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    public_key.verify(der, f"{header_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    return json.loads(unb64url(claims_b64)), key


class FakePushService:
    def __init__(self) -> None:
        self.browsers: dict[str, Browser] = {}
        self.deliveries: list[Delivery] = []
        self.rejected: list[tuple[str, str]] = []
        self.redirects: dict[str, str] = {}
        self._changed = threading.Condition()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path in service.redirects:
                    self.send_response(307)
                    self.send_header("Location", service.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = service._receive(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakePushService:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def browser(self, kind: str = "push") -> Browser:
        browser = Browser(endpoint=f"{self.base_url}/{kind}/{secrets.token_urlsafe(16)}")
        self.browsers[browser.path] = browser
        return browser

    def _receive(self, path: str, headers: dict[str, str], body: bytes) -> int:
        try:
            status = self._check(path, headers, body)
        except (AssertionError, InvalidSignature, KeyError, ValueError) as exc:
            with self._changed:
                self.rejected.append((path, repr(exc)))
                self._changed.notify_all()
            return 400
        return status

    def _check(self, path: str, headers: dict[str, str], body: bytes) -> int:
        if path.startswith("/gone/"):
            return 410
        if path.startswith("/broken/"):
            return 500
        browser = self.browsers.get(path)
        if browser is None:
            return 404
        assert headers["content-encoding"] == "aes128gcm", headers
        assert int(headers["ttl"]) > 0, headers
        claims, key = verify_vapid(headers["authorization"])
        assert claims["aud"] == self.base_url and claims["exp"] > time.time() and claims["sub"], claims
        plain = http_ece.decrypt(
            body, private_key=browser.private_key, auth_secret=browser.auth_secret, version="aes128gcm"
        )
        delivery = Delivery(path, headers, claims, key, json.loads(plain))
        with self._changed:
            self.deliveries.append(delivery)
            self._changed.notify_all()
        return 201

    def received(self, browser: Browser) -> list[Delivery]:
        with self._changed:
            return [d for d in self.deliveries if d.path == browser.path]

    def wait_for(self, browser: Browser, timeout: float) -> Delivery:
        """The first message for ``browser``; fails after ``timeout`` seconds or if one was rejected."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                assert not self.rejected, self.rejected
                got = [d for d in self.deliveries if d.path == browser.path]
                if got:
                    return got[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no push reached {browser.path} within {timeout} s")
                self._changed.wait(remaining)


# --- Addresses on this machine only -------------------------------------------------------------


class FakeDNS:
    """A stand-in for ``socket.getaddrinfo``: names answer from a table, one answer per call (the last
    one repeats), so a test can change what a name resolves to between two lookups, as DNS rebinding
    does. Numeric hosts and ``localhost`` resolve as the system does (no query leaves the machine);
    any other name does not resolve."""

    def __init__(self, real: Any = socket.getaddrinfo) -> None:
        self._real = real
        self._answers: dict[str, list[list[str | tuple[str, int]]]] = {}
        self.lookups: list[str] = []

    def answer(self, name: str, *answers: list[str | tuple[str, int]]) -> None:
        """Each answer is a list of addresses, or ``(address, port)`` to point a lookup at another port."""
        self._answers[name] = list(answers)

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0):
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            ipaddress.ip_address(name.partition("%")[0])
        except ValueError:
            pass
        else:
            return self._real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        if name == "localhost":
            return self._real(host, port, family, type, proto, flags)
        self.lookups.append(name)
        queue = self._answers.get(name)
        if not queue:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        results = []
        for entry in answer:
            address, answer_port = entry if isinstance(entry, tuple) else (entry, int(port or 0))
            if ipaddress.ip_address(address).version == 6:
                if family in (0, socket.AF_INET6):
                    results.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, answer_port, 0, 0)))
            elif family in (0, socket.AF_INET):
                results.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, answer_port)))
        return results


class LoopbackOnlySocket(socket.socket):
    """``socket.socket`` for tests about outbound addresses: connecting beyond loopback fails the test
    instead of sending anything off the machine, whatever the code under test resolved."""

    def _check(self, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0]).partition("%")[0]
            assert ipaddress.ip_address(host).is_loopback, f"a connection to {address} was attempted"

    def connect(self, address: Any) -> None:
        self._check(address)
        super().connect(address)

    def connect_ex(self, address: Any) -> int:
        self._check(address)
        return super().connect_ex(address)
