import json

import pytest
from django.test import Client

from jobs.models import Job
from tests.jobs.factories import make_job

pytestmark = pytest.mark.django_db


def post_job(client, body, **extra):
    return client.post("/api/v1/jobs/", data=body if isinstance(body, str) else json.dumps(body),
                       content_type="application/json", **extra)  # fmt: skip


@pytest.fixture
def client_for(make_user):
    def make(user=None):
        client = Client()
        client.force_login(user or make_user())
        return client

    return make


def test_launching_a_valid_simulate_job_creates_it_queued(client_for):
    response = post_job(client_for(), {"kind": "simulate", "params": {"steps": 3, "step_ms": 10}})

    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.state, job.params) == (
        "queued",
        {"steps": 3, "step_ms": 10, "fail_at_step": None, "fail_attempts": 0},
    )
    assert job.celery_task_id


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"steps": -1}, "params.steps"),
        ({"steps": "many"}, "params.steps"),
        ({"step_ms": 10**9}, "params.step_ms"),
        ({"steps": 3, "fail_at_step": 4}, "params.fail_at_step"),
        ({"steps": 3, "colour": "red"}, "params.colour"),
        ([1, 2], "params"),
    ],
)
def test_bad_parameters_get_field_errors_and_create_nothing(client_for, params, field):
    response = post_job(client_for(), {"kind": "simulate", "params": params})

    assert response.status_code == 400
    assert field in response.json()["fields"], response.json()
    assert not Job.objects.exists()


def test_an_unknown_kind_is_a_field_error(client_for):
    response = post_job(client_for(), {"kind": "mine-bitcoin", "params": {}})

    assert response.status_code == 400
    assert "Unknown job kind" in response.json()["fields"]["kind"][0]


def test_malformed_json_is_a_clear_400(client_for):
    response = post_job(client_for(), "{not json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed JSON")


def test_anonymous_requests_get_401_not_a_redirect():
    assert Client().get("/api/v1/jobs/").status_code == 401
    assert post_job(Client(), {"kind": "simulate"}).status_code == 401


def test_a_launch_without_the_csrf_token_is_refused(make_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user())

    assert post_job(client, {"kind": "simulate", "params": {}}).status_code == 403
    assert not Job.objects.exists()


def test_another_users_job_is_a_404_and_never_listed(client_for, make_user):
    alice, bob = make_user(), make_user()
    alices_job = make_job(owner=alice)

    bob_client = client_for(bob)
    assert bob_client.get(f"/api/v1/jobs/{alices_job.id}/").status_code == 404
    assert bob_client.get("/api/v1/jobs/").json()["results"] == []
    assert client_for(alice).get(f"/api/v1/jobs/{alices_job.id}/").status_code == 200


def test_kinds_are_listed_with_their_parameter_schema(client_for):
    kinds = {kind["name"]: kind for kind in client_for().get("/api/v1/kinds/").json()["results"]}

    assert kinds["simulate"]["params_schema"]["properties"]["steps"]["minimum"] == 0
