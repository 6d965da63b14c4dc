"""Browser push end to end: a real worker sends through pywebpush to a fake push service that checks
the VAPID signature and decrypts the message (RFC 8291) as a browser would; plus the subscription
API, the preferences that decide who gets pushed, and the key command."""

from __future__ import annotations

import json
import socket
import stat
import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from jobs import launch
from jobs.models import FINAL_STATES
from jobs.tokens import token_create
from notifications import inbox, webpush
from notifications.models import Level, Notification, PushSubscription, SocketConnection
from tests.jobs.live import signed_in_socket, wait_for_job
from tests.notifications.push_service import (
    PUBLIC_ADDRESSES,
    Browser,
    FakeDNS,
    FakePushService,
    LoopbackOnlySocket,
    b64url,
)

SUBSCRIPTIONS = "/api/v1/push/subscriptions/"
DELETE = "/api/v1/push/subscriptions/delete/"
PUSH_TIMEOUT = 15
# How long to listen for a push that must not come (the worker sends within milliseconds).
QUIET_FOR = 3


@pytest.fixture(autouse=True)
def fake_dns(monkeypatch):
    """push.example.com resolves to public addresses without a DNS query, and nothing is dialled
    beyond loopback."""
    dns = FakeDNS()
    dns.answer("push.example.com", PUBLIC_ADDRESSES)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    monkeypatch.setattr(socket, "socket", LoopbackOnlySocket)
    return dns


@pytest.fixture
def allow_insecure_local(settings):
    """The documented local-testing escape hatch, in this process (the worker has it from conftest)."""
    settings.RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL = True


@pytest.fixture
def push_service(allow_insecure_local):
    # It listens on http://127.0.0.1, which only the escape hatch lets anyone send to.
    service = FakePushService().start()
    yield service
    service.stop()


@pytest.fixture
def vapid_keys():
    """The key pair of this test session's VAR_DIR (shared with the worker, which reads it when it sends)."""
    call_command("generate_vapid_keys", "--quiet")
    return webpush.vapid_keys()


def subscribe(user, browser: Browser) -> PushSubscription:
    # Straight into the table: the fake service is on http://127.0.0.1, which the API accepts only with
    # the insecure-local escape hatch; the worker has it (tests/conftest.py), and so do in-process sends.
    return PushSubscription.objects.create(
        user=user, endpoint=browser.endpoint, p256dh=browser.p256dh, auth=browser.auth
    )


def finish_a_job(user, **params):
    job = launch.job_create(owner=user, kind="simulate", params={"steps": 1, "step_ms": 0, **params})
    return wait_for_job(job.id, lambda j: j.state in FINAL_STATES, timeout=30)


def eventually(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never became true"
        time.sleep(0.05)


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def post_json(client: Client, path: str, body, **extra):
    return client.post(path, data=json.dumps(body), content_type="application/json", **extra)


# --- End to end, on the real worker ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_job_finishing_while_its_owner_is_away_reaches_their_browser_signed_and_encrypted(
    celery_worker, push_service, vapid_keys, make_user
):
    user = make_user()
    browser = push_service.browser()
    subscribe(user, browser)

    job = finish_a_job(user)
    delivery = push_service.wait_for(browser, timeout=PUSH_TIMEOUT)

    notification = Notification.objects.get(job_id=job.id)
    assert delivery.payload == {
        "title": "Simulated work finished: 1 step of 0 ms",  # the kind's title and the job's label
        "body": "",
        "link": f"/jobs/{job.id}/",
        "level": Level.SUCCESS,
        "notification_id": notification.pk,
        "unread_count": 1,
    }
    assert delivery.vapid_public_key == vapid_keys[0]  # signed with the key browsers subscribed with
    assert delivery.claims["aud"] == push_service.base_url
    assert delivery.claims["sub"].startswith("mailto:")
    assert int(delivery.headers["ttl"]) == webpush.TTL_SECONDS
    # The worker records the success just after the push service answered.
    eventually(lambda: PushSubscription.objects.get(endpoint=browser.endpoint).last_success_at is not None)


@pytest.mark.django_db(transaction=True)
def test_an_owner_with_an_open_tab_is_not_pushed_until_the_tab_closes(
    celery_worker, ws_connect, push_service, vapid_keys, make_user
):
    user = make_user()
    browser = push_service.browser()
    subscribe(user, browser)
    ws = signed_in_socket(ws_connect, user)

    online_job = finish_a_job(user)
    time.sleep(QUIET_FOR)
    assert push_service.received(browser) == []

    # The same user once the tab is closed: pushed, and only for the job that ended while away.
    ws.close()
    eventually(lambda: not SocketConnection.objects.filter(user=user).exists())
    away_job = finish_a_job(user)
    delivery = push_service.wait_for(browser, timeout=PUSH_TIMEOUT)
    assert delivery.payload["link"] == f"/jobs/{away_job.id}/"
    assert Notification.objects.filter(job_id=online_job.id).exists()
    assert len(push_service.received(browser)) == 1


@pytest.mark.django_db(transaction=True)
def test_with_browser_push_turned_off_a_finished_job_is_not_pushed(
    celery_worker, push_service, vapid_keys, make_user
):
    user = make_user()
    browser = push_service.browser()
    subscribe(user, browser)
    inbox.preference_update(user_id=user.pk, browser_push=False)

    job = finish_a_job(user)
    time.sleep(QUIET_FOR)

    assert Notification.objects.filter(job_id=job.id).exists()  # still in the bell
    assert push_service.received(browser) == []
    inbox.preference_update(user_id=user.pk, browser_push=True)
    later = finish_a_job(user)
    assert push_service.wait_for(browser, timeout=PUSH_TIMEOUT).payload["link"] == f"/jobs/{later.id}/"


@pytest.mark.django_db(transaction=True)
def test_with_job_succeeded_turned_off_a_success_makes_no_notification_but_a_failure_still_does(
    celery_worker, push_service, vapid_keys, make_user
):
    user = make_user()
    browser = push_service.browser()
    subscribe(user, browser)
    inbox.preference_update(user_id=user.pk, job_succeeded=False)

    succeeded = finish_a_job(user)
    failed = finish_a_job(user, fail_at_step=1)

    assert succeeded.state == "succeeded" and failed.state == "failed"
    assert not Notification.objects.filter(job_id=succeeded.id).exists()
    delivery = push_service.wait_for(browser, timeout=PUSH_TIMEOUT)
    assert delivery.payload["title"] == "Simulated work failed: 1 step of 0 ms, fails at step 1"
    assert delivery.payload["level"] == Level.ERROR
    assert delivery.payload["body"] == "Simulated failure at step 1 of 1"
    time.sleep(1)
    assert len(push_service.received(browser)) == 1


# --- Sending, in this process --------------------------------------------------------------------


def notification_for(user, **fields) -> Notification:
    # A bare row: inbox.notify would also queue a push for the worker, racing this test's own send.
    return Notification.objects.create(recipient=user, title=fields.pop("title", "Done"), **fields)


@pytest.mark.django_db
def test_a_subscription_the_push_service_says_is_gone_is_deleted_and_the_others_still_get_it(
    push_service, vapid_keys, make_user
):
    user = make_user()
    alive, gone, unknown = (
        push_service.browser(),
        push_service.browser("gone"),
        push_service.browser("unknown"),
    )
    del push_service.browsers[unknown.path]  # the service no longer knows it: 404
    for browser in (gone, alive, unknown):
        subscribe(user, browser)

    delivered = webpush.send_for_notification(notification_id=notification_for(user).pk)

    assert delivered == 1
    assert list(PushSubscription.objects.values_list("endpoint", flat=True)) == [alive.endpoint]
    assert len(push_service.received(alive)) == 1


@pytest.mark.django_db
def test_a_push_service_error_is_logged_and_keeps_the_subscription(
    push_service, vapid_keys, make_user, caplog
):
    user = make_user()
    broken = push_service.browser("broken")
    subscribe(user, broken)

    assert webpush.send_for_notification(notification_id=notification_for(user).pk) == 0

    subscription = PushSubscription.objects.get()
    assert subscription.endpoint == broken.endpoint and subscription.last_success_at is None
    assert "HTTP 500" in caplog.text


@pytest.mark.django_db
def test_an_unreachable_push_service_is_logged_not_raised(
    vapid_keys, make_user, caplog, allow_insecure_local
):
    from tests.support.net import free_port

    user = make_user()
    subscribe(user, Browser(endpoint=f"http://127.0.0.1:{free_port()}/push/nobody-listens"))

    assert webpush.send_for_notification(notification_id=notification_for(user).pk) == 0
    assert PushSubscription.objects.exists()
    assert "failed" in caplog.text


@pytest.mark.django_db
def test_a_long_body_is_cut_so_the_message_fits_a_push(push_service, vapid_keys, make_user):
    user = make_user()
    browser = push_service.browser()
    subscribe(user, browser)
    body = "é" * 20_000  # two bytes each in UTF-8

    webpush.send_for_notification(notification_id=notification_for(user, body=body, link="/jobs/x/").pk)

    payload = push_service.received(browser)[0].payload
    assert (
        len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
        <= webpush.MAX_PAYLOAD_BYTES
    )
    assert payload["body"].endswith("…") and payload["body"][:-1] == body[: len(payload["body"]) - 1]
    assert len(payload["body"]) > 1000 and payload["link"] == "/jobs/x/"


# --- The subscription API ----------------------------------------------------------------------


def valid_browser() -> Browser:
    return Browser(endpoint="https://push.example.com/wpush/v2/abc123")


@pytest.mark.django_db
def test_subscribing_stores_this_browser_for_the_signed_in_user(make_user):
    user = make_user()
    browser = valid_browser()
    client = logged_in(user)

    response = post_json(client, SUBSCRIPTIONS, browser.subscription_json(), HTTP_USER_AGENT="Firefox/130")

    assert response.status_code == 201
    stored = PushSubscription.objects.get()
    assert (stored.user, stored.endpoint, stored.p256dh, stored.auth, stored.user_agent) == (
        user, browser.endpoint, browser.p256dh, browser.auth, "Firefox/130"
    )  # fmt: skip
    listed = client.get(SUBSCRIPTIONS).json()["results"]
    assert [s["endpoint"] for s in listed] == [browser.endpoint]
    assert post_json(client, SUBSCRIPTIONS, browser.subscription_json()).status_code == 201  # idempotent
    assert PushSubscription.objects.count() == 1


def bad(subscription, **changes):
    keys = {**subscription["keys"], **changes.pop("keys", {})}
    return {**subscription, **changes, "keys": keys}


GOOD = valid_browser().subscription_json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (bad(GOOD, endpoint="http://push.example.com/x"), "endpoint"),
        (bad(GOOD, endpoint="ftp://push.example.com/x"), "endpoint"),
        (bad(GOOD, endpoint="https://127.0.0.1/x"), "endpoint"),
        (bad(GOOD, endpoint="http://127.0.0.1:9999/x"), "endpoint"),  # insecure-local is off
        (bad(GOOD, endpoint="https://10.1.2.3/x"), "endpoint"),
        (bad(GOOD, endpoint="https://169.254.169.254/latest/meta-data"), "endpoint"),
        (bad(GOOD, endpoint="https://localhost/x"), "endpoint"),
        (bad(GOOD, endpoint="https://push.example.com:8443/x"), "endpoint"),
        (bad(GOOD, endpoint="https://user:pw@push.example.com/x"), "endpoint"),
        (bad(GOOD, endpoint="https://push.example.com/" + "x" * 1000), "endpoint"),
        ({k: v for k, v in GOOD.items() if k != "endpoint"}, "endpoint"),
        (bad(GOOD, keys={"p256dh": "not base64!"}), "keys.p256dh"),
        (bad(GOOD, keys={"p256dh": b64url(b"\x04" + b"\x01" * 64)}), "keys.p256dh"),  # not on the curve
        (bad(GOOD, keys={"p256dh": b64url(b"\x04" * 33)}), "keys.p256dh"),  # compressed length
        (bad(GOOD, keys={"auth": b64url(b"x" * 8)}), "keys.auth"),
        (bad(GOOD, keys={"auth": None}), "keys.auth"),
        ({"endpoint": GOOD["endpoint"]}, "keys.p256dh"),
    ],
)
@pytest.mark.django_db
def test_subscribing_refuses_bad_endpoints_and_keys_with_field_errors(make_user, body, field):
    response = post_json(logged_in(make_user()), SUBSCRIPTIONS, body)

    assert response.status_code == 400
    assert field in response.json()["fields"], response.json()
    assert not PushSubscription.objects.exists()


@pytest.mark.django_db
def test_local_http_endpoints_are_accepted_only_when_insecure_local_is_allowed(
    make_user, settings, monkeypatch
):
    monkeypatch.delenv("RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL", raising=False)
    client = logged_in(make_user())
    local = Browser(endpoint="http://127.0.0.1:9999/push/abc").subscription_json()
    assert post_json(client, SUBSCRIPTIONS, local).status_code == 400

    settings.RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL = True
    assert post_json(client, SUBSCRIPTIONS, local).status_code == 201
    elsewhere = Browser(endpoint="http://push.example.com/push/abc").subscription_json()
    assert post_json(client, SUBSCRIPTIONS, elsewhere).status_code == 400  # only loopback, never plain http

    del settings.RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL
    monkeypatch.setenv("RUNBOARD_WEBPUSH_ALLOW_INSECURE_LOCAL", "1")  # how a worker or server process is told
    other = Browser(endpoint="http://localhost:9999/push/def").subscription_json()
    assert post_json(client, SUBSCRIPTIONS, other).status_code == 201


@pytest.mark.django_db
def test_another_user_cannot_delete_my_subscription(make_user):
    me, other = make_user(), make_user()
    browser = valid_browser()
    assert post_json(logged_in(me), SUBSCRIPTIONS, browser.subscription_json()).status_code == 201

    assert post_json(logged_in(other), DELETE, {"endpoint": browser.endpoint}).status_code == 404
    assert PushSubscription.objects.get().user == me
    assert post_json(logged_in(me), DELETE, {"endpoint": browser.endpoint}).status_code == 200
    assert not PushSubscription.objects.exists()
    assert post_json(logged_in(me), DELETE, {"endpoint": browser.endpoint}).status_code == 404


@pytest.mark.django_db
def test_the_same_browser_subscribing_under_another_login_moves_to_that_user(make_user):
    first, second = make_user(), make_user()
    browser = valid_browser()
    post_json(logged_in(first), SUBSCRIPTIONS, browser.subscription_json())

    assert post_json(logged_in(second), SUBSCRIPTIONS, browser.subscription_json()).status_code == 201

    assert PushSubscription.objects.get().user == second
    assert logged_in(first).get(SUBSCRIPTIONS).json()["results"] == []


@pytest.mark.django_db
def test_someone_who_only_knows_an_endpoint_cannot_take_it_over(make_user):
    owner, intruder = make_user(), make_user()
    browser = valid_browser()
    post_json(logged_in(owner), SUBSCRIPTIONS, browser.subscription_json())
    forged = Browser(endpoint=browser.endpoint).subscription_json()  # same URL, the intruder's own keys

    response = post_json(logged_in(intruder), SUBSCRIPTIONS, forged)

    assert response.status_code == 400 and "endpoint" in response.json()["fields"]
    stored = PushSubscription.objects.get()
    assert (stored.user, stored.p256dh) == (owner, browser.p256dh)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/push/vapid-public-key/"),
        ("get", SUBSCRIPTIONS),
        ("post", SUBSCRIPTIONS),
        ("post", DELETE),
    ],
)
@pytest.mark.django_db
def test_the_push_api_needs_authentication(method, path):
    client = Client()
    response = client.get(path) if method == "get" else post_json(client, path, GOOD)

    assert response.status_code == 401


@pytest.mark.django_db
def test_the_push_api_checks_csrf_for_sessions_but_not_for_tokens(make_user):
    user = make_user()
    browser_session = logged_in(user, enforce_csrf_checks=True)

    assert post_json(browser_session, SUBSCRIPTIONS, GOOD).status_code == 403
    assert post_json(browser_session, DELETE, {"endpoint": GOOD["endpoint"]}).status_code == 403
    assert not PushSubscription.objects.exists()

    _, raw = token_create(user=user, name="script")
    assert post_json(Client(), SUBSCRIPTIONS, GOOD, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 201


@pytest.mark.django_db
def test_the_vapid_public_key_endpoint_gives_the_key_browsers_subscribe_with(make_user, vapid_keys):
    response = logged_in(make_user()).get("/api/v1/push/vapid-public-key/")

    assert response.status_code == 200
    assert response.json() == {"public_key": vapid_keys[0]}
    assert len(webpush.b64url_decode(vapid_keys[0])) == 65


@pytest.mark.django_db
def test_without_keys_the_vapid_public_key_endpoint_says_push_is_not_configured(
    make_user, settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    settings.RUNBOARD_VAPID_PRIVATE_KEY = settings.RUNBOARD_VAPID_PUBLIC_KEY = ""
    response = logged_in(make_user()).get("/api/v1/push/vapid-public-key/")

    assert response.status_code == 503


# --- Keys and the command ----------------------------------------------------------------------


def test_keys_in_settings_win_over_the_file_and_a_mismatched_pair_is_refused(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.RUNBOARD_VAPID_PRIVATE_KEY = settings.RUNBOARD_VAPID_PUBLIC_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="generate_vapid_keys"):
        webpush.vapid_keys()

    pair, other = webpush.generate_vapid_keypair(), webpush.generate_vapid_keypair()
    settings.RUNBOARD_VAPID_PRIVATE_KEY = pair["private_key"]
    settings.RUNBOARD_VAPID_PUBLIC_KEY = pair["public_key"]
    assert webpush.vapid_keys() == (pair["public_key"], pair["private_key"])

    settings.RUNBOARD_VAPID_PUBLIC_KEY = other["public_key"]
    with pytest.raises(ImproperlyConfigured, match="does not belong"):
        webpush.vapid_keys()
    settings.RUNBOARD_VAPID_PRIVATE_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="set both"):
        webpush.vapid_keys()


def test_a_pem_private_key_in_the_environment_is_accepted(settings):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    settings.RUNBOARD_VAPID_PRIVATE_KEY = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    settings.RUNBOARD_VAPID_PUBLIC_KEY = ""
    public, private = webpush.vapid_keys()

    assert len(webpush.b64url_decode(public)) == 65 and len(webpush.b64url_decode(private)) == 32


def test_generate_vapid_keys_writes_a_private_file_once(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path / "var"
    settings.RUNBOARD_VAPID_PRIVATE_KEY = settings.RUNBOARD_VAPID_PUBLIC_KEY = ""

    call_command("generate_vapid_keys")
    path = tmp_path / "var" / "vapid.json"
    first = json.loads(path.read_text())
    out = capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"RUNBOARD_VAPID_PUBLIC_KEY={first['public_key']}" in out
    assert f"RUNBOARD_VAPID_PRIVATE_KEY={first['private_key']}" in out
    assert webpush.vapid_keys() == (first["public_key"], first["private_key"])

    call_command("generate_vapid_keys", "--quiet")
    assert json.loads(path.read_text()) == first
    out = capsys.readouterr().out
    assert first["public_key"] in out and first["private_key"] not in out
    assert [p.name for p in path.parent.iterdir()] == ["vapid.json"]  # no temporary files left

    call_command("generate_vapid_keys", "--force")
    assert json.loads(path.read_text())["public_key"] != first["public_key"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- The browser's side ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_service_worker_is_served_from_the_root_for_the_whole_site():
    response = Client().get("/sw.js")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert response["Service-Worker-Allowed"] == "/"
    body = response.content.decode()
    assert "showNotification" in body and "notificationclick" in body


@pytest.mark.django_db
def test_the_settings_page_saves_notification_preferences_and_offers_browser_push(make_user):
    user = make_user()
    client = logged_in(user)

    page = client.get(reverse("frontend:settings")).content.decode()
    # Seven switches; each failed attempt of a retried job is off by default (only the outcome).
    assert page.count('type="checkbox"') == 7 and page.count(" checked") == 6
    assert 'id="browser-push"' in page and "frontend/push.js" in page

    response = client.post(
        reverse("frontend:settings"), {"form": "preferences", "job_failed": "on", "toast": "on"}
    )
    assert response.status_code == 302
    preference = inbox.preference_get(user_id=user.pk)
    assert (preference.job_failed, preference.toast) == (True, True)
    assert not any(
        (
            preference.job_succeeded,
            preference.job_cancelled,
            preference.announcements,
            preference.browser_push,
        )
    )
    page = client.get(reverse("frontend:settings")).content.decode()
    assert page.count(" checked") == 2 and "Notification preferences saved." in page
