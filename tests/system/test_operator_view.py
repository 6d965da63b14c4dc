"""The operator's live view over the socket: staff only, with workers, queues and layer health."""

import json

import pytest
from playwright.sync_api import expect

from jobs import launch
from tests.conftest import receive_json, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_staff_get_live_operator_updates_with_workers_and_layer_health(celery_worker, ws_connect, make_user):
    user, operator = make_user(), make_user(operator=True)
    launch.job_create(owner=user, kind="simulate", params={"steps": 40, "step_ms": 100})
    ws = ws_connect(user=operator)
    receive_json(ws), receive_json(ws)

    ws.send(json.dumps({"type": "ops.subscribe"}))
    first = receive_until(ws, lambda e: e["type"] == "ops.update", timeout=15)[-1]["ops"]
    second = receive_until(ws, lambda e: e["type"] == "ops.update", timeout=15)[-1]["ops"]

    assert second["at"] > first["at"]  # updated live, not once
    assert any(w["name"].startswith("test-") for w in second["workers"])
    assert isinstance(second["channel_layer_rtt_ms"], float)
    assert "default" in second["queue_depths"]
    running = [c for w in second["workers"] for c in w["current"] if c["kind"] == "simulate"]
    assert running and running[0]["owner"] == user.username


@pytest.mark.parametrize("fields", [{}, {"is_staff": True}])
def test_the_operator_view_is_refused_without_its_permission_even_to_staff(ws_connect, make_user, fields):
    ws = ws_connect(user=make_user(**fields))
    receive_json(ws), receive_json(ws)
    ws.send(json.dumps({"type": "ops.subscribe"}))
    assert receive_json(ws) == {
        "type": "error", "code": "forbidden",
        "detail": "The operator's view takes the 'use the operator view' permission."}  # fmt: skip


@pytest.mark.browser
def test_the_operations_page_shows_the_live_figures(page, make_user, celery_worker):
    from tests.frontend.test_dashboard_browser import log_in

    log_in(page, make_user(operator=True))
    page.goto("/operations/")
    expect(page.locator("#ops-layer")).to_contain_text(" ms", timeout=15_000)
    expect(page.locator("#ops-workers")).to_contain_text("test-")
