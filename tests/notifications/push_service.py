"""A fake Web Push service for tests: a real HTTP server that checks what a push service checks
(RFC 8030 headers, the RFC 8292 VAPID JWT) and decrypts each message as the browser would (RFC 8291).

Each test makes its own ``Browser`` (a P-256 key pair and auth secret, like a browser's subscription);
the server decrypts whatever is POSTed to that browser's endpoint with its keys and records it.
Endpoints under ``/gone/`` answer 410 and under ``/broken/`` 500, like a push service would.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
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
        self._changed = threading.Condition()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
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
