"""A job kind from another installed app: tests/extra_kinds has a ``jobkinds`` module registering
``extra_echo``, and is installed by the test settings. Nothing in Runboard names it, yet it is
offered everywhere a kind is: the launch form, the API and its OpenAPI document, the admin and
the CLI."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client

from jobs.kinds.registry import all_kinds, get_kind
from jobs.management.commands.launch_job import Command as LaunchJobCommand
from jobs.models import Job, JobState
from tests.extra_kinds import jobkinds

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_kind_is_registered_by_the_apps_jobkinds_module():
    kind = get_kind("extra_echo")
    assert kind.run is jobkinds.echo
    assert "extra_echo" in {kind.name for kind in all_kinds()}


def test_the_launch_form_and_the_api_offer_it(make_user):
    client = logged_in(make_user())

    assert 'data-kind="extra_echo"' in client.get("/").content.decode()
    listed = {kind["name"]: kind for kind in client.get("/api/v1/kinds/").json()["results"]}
    assert listed["extra_echo"]["title"] == "Extra: echo"
    created = client.post(
        "/api/v1/jobs/",
        data='{"kind": "extra_echo", "params": {"text": "hi"}}',
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["kind"] == "extra_echo"


def test_the_openapi_document_describes_its_parameters(make_user):
    document = logged_in(make_user()).get("/api/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    params = next(schema for name, schema in schemas.items() if name == "Params_extra_echo")
    assert "text" in params["properties"]
    launch = document["paths"]["/api/v1/jobs/"]["post"]["requestBody"]["content"]
    assert "extra_echo" in str(launch) + str(schemas), "the launch request does not offer the kind"


def test_the_admin_offers_it(make_user):
    client = logged_in(make_user(operator=True, is_superuser=True))

    assert "Extra: echo" in client.get("/admin/jobs/job/").content.decode()  # the kind filter
    launch_form = client.get("/admin/auth/user/").content.decode()  # launch a kind for users
    assert '<option value="extra_echo">Extra: echo</option>' in launch_form
    schedule_form = client.get("/admin/jobs/jobschedule/add/").content.decode()
    assert '<option value="extra_echo">Extra: echo</option>' in schedule_form


def test_the_cli_lists_and_launches_it(make_user):
    help_text = LaunchJobCommand().create_parser("manage.py", "launch_job").format_help()
    assert "extra_echo" in help_text

    user = make_user()
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "launch_job", "extra_echo", "--user", user.username, "--param", "text=hi", stdout=out, stderr=err
    )
    job = Job.objects.get(pk=out.getvalue().strip())
    assert (job.kind, job.state, job.params) == ("extra_echo", JobState.QUEUED, {"text": "hi"})
