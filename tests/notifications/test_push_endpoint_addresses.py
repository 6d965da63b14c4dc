"""Browser-push endpoints cannot aim the server at the inside: every spelling of an internal address
is refused when a browser subscribes, the worker checks the address it actually dials (so a name
rebound to loopback after subscribing gets no connection), redirects are not followed, and only the
documented local-testing escape hatch (off by default) lets the local fake push service through.

Addresses on this machine only: names resolve through FakeDNS (no query leaves the machine) and
LoopbackOnlySocket fails any test that would connect beyond loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import select
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.management import call_command
from django.test import Client

from notifications import outbound, webpush
from notifications.models import Notification, PushSubscription
from notifications.tasks import send_web_push
from tests.notifications.push_service import (
    PUBLIC_ADDRESSES,
    Browser,
    FakeDNS,
    FakePushService,
    LoopbackOnlySocket,
)

SUBSCRIPTIONS = "/api/v1/push/subscriptions/"
HATCH = "RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL"

# Names FakeDNS answers for, each with what it resolves to.
NAMES = {
    "push.example.com": PUBLIC_ADDRESSES,
    "loopback.example.net": ["127.0.0.1"],
    "private.example.net": ["10.1.2.3"],
    "metadata.example.net": ["169.254.169.254"],
    "cgnat.example.net": ["100.64.0.1"],
    "unique-local.example.net": ["fd00:ec2::254"],
    "mapped.example.net": ["::ffff:127.0.0.1"],
    "nat64.example.net": ["64:ff9b::a00:1"],
    "sixtofour.example.net": ["2002:c0a8:101::1"],
    "zero.example.net": ["0.0.0.0"],
    "multicast.example.net": ["ff02::1"],
    "documentation.example.net": ["192.0.2.10"],
    # One public address is not enough: every address a name resolves to must be public.
    "mixed.example.net": [*PUBLIC_ADDRESSES, "127.0.0.1"],
    "mixed-v6.example.net": [PUBLIC_ADDRESSES[0], "::1"],
    "rebinds.example.net": PUBLIC_ADDRESSES,
}


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    fake = FakeDNS()
    for name, addresses in NAMES.items():
        fake.answer(name, addresses)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.setattr(socket, "socket", LoopbackOnlySocket)
    return fake


@pytest.fixture(autouse=True)
def hatch_off(settings, monkeypatch):
    """The escape hatch as production has it: neither the setting nor the environment variable."""
    monkeypatch.delenv(HATCH, raising=False)
    if hasattr(settings, HATCH):
        delattr(settings, HATCH)


@pytest.fixture
def listener():
    """A TCP listener on 127.0.0.1 that should never hear from the worker; ``connections()`` counts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)

    class Listener:
        port = sock.getsockname()[1]

        @staticmethod
        def connections(wait: float = 0.5) -> int:
            count = 0
            while select.select([sock], [], [], wait)[0]:
                conn, _ = sock.accept()
                conn.close()
                count += 1
                wait = 0.1
            return count

    yield Listener
    sock.close()


@pytest.fixture
def vapid(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.RUNBOARD_VAPID_PRIVATE_KEY = settings.RUNBOARD_VAPID_PUBLIC_KEY = ""
    call_command("generate_vapid_keys", "--quiet")


def subscribe_through_the_api(user, endpoint: str):
    client = Client()
    client.force_login(user)
    body = Browser(endpoint=endpoint).subscription_json()
    return client.post(SUBSCRIPTIONS, data=json.dumps(body), content_type="application/json")


def stored(user, endpoint: str, browser: Browser | None = None) -> PushSubscription:
    """A row as it could have been saved before these rules (or by hand): the sender must check too."""
    browser = browser or Browser(endpoint=endpoint)
    return PushSubscription.objects.create(
        user=user, endpoint=endpoint, p256dh=browser.p256dh, auth=browser.auth
    )


def notify(user) -> int:
    return Notification.objects.create(recipient=user, title="Done").pk


# --- When a browser subscribes -------------------------------------------------------------------

INSIDE = [
    # Non-canonical spellings of 127.0.0.1 (each one resolves to loopback through getaddrinfo).
    ("https://127.1/x", "not a canonical IPv4 address"),
    ("https://0x7f.0.0.1/x", "neither a canonical IP address nor a host name"),
    ("https://0x7f000001/x", "neither a canonical IP address nor a host name"),
    ("https://2130706433/x", "not a canonical IPv4 address"),
    ("https://0177.0.0.1/x", "not a canonical IPv4 address"),
    ("https://127.000.000.001/x", "not a canonical IPv4 address"),
    ("https://127.0x1/x", "neither a canonical IP address nor a host name"),
    ("https://%31%32%37.0.0.1/x", "percent-encoded"),
    ("https://[::ffff:127.0.0.1]/x", "not written in canonical form"),
    ("https://[::127.0.0.1]/x", "not written in canonical form"),
    ("https://[0:0:0:0:0:0:0:1]/x", "not written in canonical form"),
    ("https://[fe80::1%25eth0]/x", "zone index"),
    # Canonical literals of addresses that are not public.
    ("https://127.0.0.1/x", "loopback"),
    ("https://[::1]/x", "loopback"),
    ("https://[::ffff:7f00:1]/x", "IPv6 form of 127.0.0.1, a loopback address"),
    ("https://[::7f00:1]/x", "IPv4-compatible"),
    ("https://0.0.0.0/x", "unspecified"),
    ("https://[::]/x", "unspecified"),
    ("https://10.0.0.1/x", "private"),
    ("https://172.16.5.4/x", "private"),
    ("https://192.168.1.1/x", "private"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://100.64.0.1/x", "carrier-grade NAT"),
    ("https://[fd00:ec2::254]/x", "unique-local"),
    ("https://[fe80::1]/x", "link-local"),
    ("https://224.0.0.1/x", "multicast"),
    ("https://[ff02::1]/x", "multicast"),
    ("https://255.255.255.255/x", "reserved"),
    ("https://240.0.0.1/x", "reserved"),
    ("https://192.0.2.1/x", "documentation"),
    ("https://[2001:db8::1]/x", "documentation"),
    ("https://[64:ff9b::a9fe:a9fe]/x", "IPv6 form of 169.254.169.254"),
    ("https://[2002:a00:1::1]/x", "IPv6 form of 10.0.0.1"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x", "Teredo"),
    # Host names that are, or resolve to, the inside.
    ("https://localhost/x", "not a fully qualified host name"),
    ("https://push.localhost/x", ".localhost names"),
    ("https://printer.local/x", ".local names"),
    ("https://metadata.google.internal/x", ".internal names"),
    ("https://loopback.example.net/x", "resolves to 127.0.0.1, a loopback address"),
    ("https://private.example.net/x", "resolves to 10.1.2.3, a private address"),
    ("https://metadata.example.net/x", "resolves to 169.254.169.254"),
    ("https://cgnat.example.net/x", "resolves to 100.64.0.1"),
    ("https://unique-local.example.net/x", "resolves to fd00:ec2::254, a unique-local address"),
    ("https://mapped.example.net/x", "resolves to ::ffff:7f00:1, an IPv6 form of 127.0.0.1"),
    ("https://nat64.example.net/x", "an IPv6 form of 10.0.0.1"),
    ("https://sixtofour.example.net/x", "an IPv6 form of 192.168.1.1"),
    ("https://zero.example.net/x", "resolves to 0.0.0.0"),
    ("https://multicast.example.net/x", "resolves to ff02::1, a multicast address"),
    ("https://documentation.example.net/x", "resolves to 192.0.2.10, a documentation address"),
    ("https://mixed.example.net/x", "resolves to 127.0.0.1"),
    ("https://mixed-v6.example.net/x", "resolves to ::1"),
    ("https://nowhere.example.net/x", "does not resolve"),
    # Spellings that hide where the request goes, or leave https and its port.
    ("https://push.example.com./x", "ends with a dot"),
    ("https://push.example.com@127.0.0.1/x", "user name or password"),
    ("https://user:pw@push.example.com/x", "user name or password"),
    ("https://push.example.com\\@127.0.0.1/x", "backslashes"),
    ("https://127.0.0.1#@push.example.com/x", "loopback"),
    ("https://push.example.com:8443/x", "default https port"),
    ("https://push.example.com:0443/x", "Not a valid port"),
    ("http://push.example.com/x", "https URL"),
    ("http://127.0.0.1:9999/x", "https URL"),
    ("HTTPS://push.example.com/x", "https URL"),
    ("https://PUSH.EXAMPLE.COM/x", "not a host name"),
    ("https://push.exämple.com/x", "printable ASCII"),
    ("https://push.example.com/x y", "printable ASCII"),
]


@pytest.mark.parametrize(("endpoint", "reason"), INSIDE)
@pytest.mark.django_db
def test_subscribing_refuses_every_spelling_of_an_inside_address_with_a_clear_message(
    make_user, endpoint, reason
):
    response = subscribe_through_the_api(make_user(), endpoint)

    assert response.status_code == 400, response.content
    messages = response.json()["fields"]["endpoint"]
    assert any(reason in message for message in messages), messages
    assert not PushSubscription.objects.exists()


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://push.example.com/wpush/v2/abc",
        "https://push.example.com:443/wpush/v2/abc",
        "https://push.example.com/w/?token=a%2Bb",
        "https://93.184.215.14/x",
    ],
)
@pytest.mark.django_db
def test_subscribing_accepts_https_endpoints_whose_every_address_is_public(make_user, endpoint):
    assert subscribe_through_the_api(make_user(), endpoint).status_code == 201


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/x",
        "https://[64:ff9b::808:808]/x",  # DNS64's spelling of a public IPv4 address
    ],
)
@pytest.mark.django_db
def test_an_ipv6_literal_endpoint_is_refused_since_no_push_to_it_could_be_signed(make_user, endpoint):
    """Found by review: accepted with 201, then every push failed (py_vapid's audience pattern
    has no room for brackets). Public or not, it is refused at subscribe time, with the reason."""
    response = subscribe_through_the_api(make_user(), endpoint)
    assert response.status_code == 400
    assert "IPv6 address literal" in response.content.decode()


def test_every_special_purpose_range_is_refused_and_public_unicast_is_not():
    refused = [
        "0.1.2.3", "10.255.255.255", "100.127.255.254", "127.8.9.10", "169.254.0.1", "172.31.0.1",
        "192.0.0.170", "192.0.2.255", "192.88.99.1", "192.168.255.1", "198.18.0.1", "198.51.100.7",
        "203.0.113.9", "224.0.0.251", "239.255.255.250", "240.0.0.1", "255.255.255.255", "168.63.129.16",
        "::", "::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0:7f00:1", "::127.0.0.1",
        "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "100::1", "2001::1", "2001:2::1", "2001:db8::1",
        "2002:7f00:1::", "2002:a9fe:a9fe::1", "3fff::1", "5f00::1", "fc00::1", "fd12:3456::1", "fe80::1",
        "fec0::1", "ff02::1", "ff05::2", "4000::1",
    ]  # fmt: skip
    public = ["1.1.1.1", "8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001::200e",
              "64:ff9b::101:101", "::ffff:8.8.8.8", "2002:808:808::1"]  # fmt: skip

    assert [a for a in refused if outbound.address_refusal(ipaddress.ip_address(a)) is None] == []
    assert {a: outbound.address_refusal(ipaddress.ip_address(a)) for a in public} == dict.fromkeys(public)


# --- When the worker connects --------------------------------------------------------------------


@pytest.mark.parametrize(
    "rebound_to",
    [
        ["127.0.0.1"],
        ["127.0.0.1", *PUBLIC_ADDRESSES],  # one inside address among public ones is enough to refuse
    ],
)
@pytest.mark.django_db
def test_a_name_rebound_to_loopback_after_subscribing_gets_no_connection(
    make_user, dns, listener, vapid, caplog, rebound_to
):
    user = make_user()
    endpoint = "https://rebinds.example.net/wpush/abc"
    # First lookup (subscribing): public. Every later one (the worker's): this machine's listener.
    dns.answer("rebinds.example.net", PUBLIC_ADDRESSES, [(a, listener.port) for a in rebound_to])
    assert subscribe_through_the_api(user, endpoint).status_code == 201

    with caplog.at_level(logging.WARNING, logger="notifications.webpush"):
        delivered = send_web_push(notify(user))  # the worker's task, run here

    assert delivered == 0
    assert dns.lookups == ["rebinds.example.net", "rebinds.example.net"]  # checked again when sending
    assert listener.connections() == 0
    assert "refused, no connection made" in caplog.text
    assert "rebinds.example.net resolves to 127.0.0.1, a loopback address" in caplog.text
    assert PushSubscription.objects.filter(endpoint=endpoint).exists()  # may be DNS trouble: kept


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/push/x",  # the escape hatch's own spelling, with the hatch off
        "http://localhost:{port}/push/x",
        "https://127.1:{port}/push/x",
        "https://0x7f.0.0.1:{port}/push/x",
        "https://[::ffff:127.0.0.1]:{port}/push/x",
        "https://loopback.example.net:{port}/push/x",
    ],
)
@pytest.mark.django_db
def test_a_stored_endpoint_that_points_inside_gets_no_connection(
    make_user, listener, vapid, caplog, template
):
    user = make_user()
    stored(user, template.format(port=listener.port))

    assert webpush.send_for_notification(notification_id=notify(user)) == 0

    assert listener.connections() == 0
    assert "refused, no connection made" in caplog.text


@pytest.mark.django_db
def test_a_redirect_from_the_push_service_is_not_followed(make_user, listener, vapid, caplog, settings):
    settings.RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL = True
    service = FakePushService().start()
    try:
        user = make_user()
        browser = service.browser("moved")
        service.redirects[browser.path] = f"http://127.0.0.1:{listener.port}/elsewhere"
        stored(user, browser.endpoint)

        assert webpush.send_for_notification(notification_id=notify(user)) == 0
    finally:
        service.stop()

    assert listener.connections() == 0
    assert "HTTP 307" in caplog.text


# --- The local-testing escape hatch --------------------------------------------------------------


@pytest.mark.django_db
def test_the_escape_hatch_is_off_by_default_and_when_on_lets_the_local_fake_push_service_work(
    make_user, vapid, settings, monkeypatch
):
    service = FakePushService().start()
    try:
        user = make_user()
        browser = service.browser()
        assert webpush.insecure_local_allowed() is False
        assert subscribe_through_the_api(user, browser.endpoint).status_code == 400
        stored(user, browser.endpoint, browser)
        assert webpush.send_for_notification(notification_id=notify(user)) == 0
        assert service.received(browser) == []

        settings.RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL = True
        assert webpush.send_for_notification(notification_id=notify(user)) == 1
        assert len(service.received(browser)) == 1

        del settings.RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL
        monkeypatch.setenv(HATCH, "1")  # how the worker is told (tests/conftest.py)
        assert webpush.send_for_notification(notification_id=notify(user)) == 1
        assert subscribe_through_the_api(user, service.browser().endpoint).status_code == 201
    finally:
        service.stop()


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://push.example.com/x",  # never plain http elsewhere
        "https://loopback.example.net/x",  # only the three local spellings, not names resolving inward
        "http://127.1:9999/x",
        "http://10.0.0.1:9999/x",
    ],
)
@pytest.mark.django_db
def test_the_escape_hatch_opens_loopback_only_under_its_three_local_spellings(make_user, settings, endpoint):
    settings.RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL = True

    assert subscribe_through_the_api(make_user(), endpoint).status_code == 400


def test_with_the_escape_hatch_localhost_must_resolve_to_loopback_when_connecting(dns, monkeypatch):
    def localhost_elsewhere(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    monkeypatch.setattr(socket, "getaddrinfo", localhost_elsewhere)
    with pytest.raises(
        outbound.RefusedURL, match=r"localhost resolves to 10\.0\.0\.7, not a loopback address"
    ):
        outbound.check_and_resolve("http://localhost:8000/x", allow_local=True)
    session = outbound.PinnedSession(allow_local=True)
    with pytest.raises(requests.ConnectionError) as raised:
        session.post("http://localhost:8000/x", data=b"", timeout=2)
    assert "localhost resolves to 10.0.0.7" in (outbound.refusal_of(raised.value) or "")


def test_the_pinned_connection_keeps_the_host_name_for_tls_and_the_host_header(tmp_path):
    """The socket goes to the checked address; certificate checks, SNI and ``Host`` still use the name."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    seen: dict[str, str | None] = {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = lambda _sock, server_name, _ctx: seen.update(sni=server_name)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen["host"] = self.headers["Host"]
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with outbound.PinnedSession(allow_local=True) as session:
            response = session.post(f"https://localhost:{port}/push/x", data=b"hi", verify=str(cert_path))
    finally:
        server.shutdown()
        server.server_close()

    assert response.status_code == 201
    assert seen == {"sni": "localhost", "host": f"localhost:{port}"}
