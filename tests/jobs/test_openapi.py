"""The generated OpenAPI document (/api/v1/openapi.json, dashboard/api.py): every route under
/api/v1/ is in it with the methods it answers and a response schema for each answer, the launch
body lists every registered kind's parameters, and the payload shapes are the ones the realtime
protocol declares. Schemathesis drives it against a real server in tests/system/test_fuzz.py."""

import re
import typing

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from pydantic import BaseModel, ConfigDict

from jobs.api import ErrorBody, schema_of
from jobs.kinds.registry import JobKind, all_kinds, register, unregister
from jobs.tokens import token_create
from notifications import events

pytestmark = pytest.mark.django_db

PREFIX = "api/v1/"
SAMPLE_JOB = "00000000-0000-0000-0000-000000000000"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def api_routes() -> list[str]:
    """Every URL pattern under /api/v1/ as an OpenAPI path, found by walking the resolver."""
    found: list[str] = []

    def walk(patterns: list, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith(PREFIX):
                found.append("/" + re.sub(r"<(?:[^>:]+:)?([^>]+)>", r"{\1}", route))

    walk(get_resolver().url_patterns, "")
    return found


def document(client: Client | None = None) -> dict:
    response = (client or Client()).get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_every_route_under_the_api_prefix_is_in_the_document_and_nothing_else():
    # The document does not describe itself, nor the catch-all that answers "no such route".
    routes = {route for route in api_routes() if "(?P" not in route} - {"/api/v1/openapi.json"}
    paths = set(document()["paths"])

    assert routes == paths
    assert {"/api/v1/notifications/read-all/", "/api/v1/push/subscriptions/delete/"} <= paths


def test_each_route_documents_exactly_the_methods_it_answers(make_user):
    """A method no route takes is the API's JSON 405, whose Allow lists what the route takes."""
    for path, operations in document()["paths"].items():
        url = path.replace("{job_id}", SAMPLE_JOB)
        response = Client().options(url)
        assert response.status_code == 405, path
        assert response.json() == {"detail": "Method OPTIONS not allowed."}
        documented = sorted(method.upper() for method in operations if method in METHODS)
        assert response["Allow"].split(", ") == documented, path


def test_every_operation_has_a_response_schema_for_each_answer():
    doc = document()
    schemas = doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert any(status.startswith("2") for status in responses), (method, path)
            assert "401" in responses and "400" in responses, (method, path)
            for status, response in responses.items():
                content = response.get("content")
                assert content, (method, path, status)
                for media in content.values():
                    schema = media["schema"]
                    if "$ref" in schema:
                        assert schema["$ref"].removeprefix("#/components/schemas/") in schemas
                if not status.startswith("2"):
                    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
            if method == "post" and not path.endswith(
                ("/cancel/", "/read-all/", "/run/", "/pause/", "/resume/")
            ):
                assert "requestBody" in operation, (method, path)
    assert doc["paths"]["/api/v1/jobs/{job_id}/download/"]["get"]["responses"]["200"]["content"] == {
        "*/*": {"schema": {"type": "string", "format": "binary"}}
    }


def test_every_reference_in_the_document_resolves():
    doc = document(Client())
    text = str(doc)
    for name in set(re.findall(r"#/components/schemas/([^'\"]+)", text)):
        assert name in doc["components"]["schemas"], name


def test_the_payload_schemas_are_the_protocols_typed_dicts():
    schemas = document()["components"]["schemas"]

    for name, typed_dict in [
        ("Job", events.JobPayload),
        ("Progress", events.ProgressPayload),
        ("Notification", events.NotificationPayload),
        ("LogLine", events.LogLinePayload),
        ("ErrorBody", ErrorBody),
    ]:
        assert set(schemas[name]["properties"]) == set(typing.get_type_hints(typed_dict)), name
        assert set(schemas[name].get("required", [])) == set(typed_dict.__required_keys__), name
    assert schemas["Job"]["properties"]["progress"] == {"$ref": "#/components/schemas/Progress"}
    assert schema_of(events.JobPayload) is schema_of(events.JobPayload)


def test_the_launch_body_lists_each_kind_the_visitor_may_launch_with_its_parameters(make_user):
    operator = Client()
    operator.force_login(make_user(operator=True, is_superuser=True))
    doc = document(operator)
    schemas = doc["components"]["schemas"]
    variants = {v["properties"]["kind"]["const"]: v for v in schemas["JobCreate"]["oneOf"]}

    assert set(variants) == {kind.name for kind in all_kinds()}
    for kind in all_kinds():
        params = variants[kind.name]["properties"]["params"]
        assert params == {"$ref": f"#/components/schemas/Params_{kind.name}"}
        assert set(schemas[f"Params_{kind.name}"].get("properties", {})) == set(
            kind.params_model.model_fields
        )
    assert schemas["Params_simulate"]["properties"]["steps"]["minimum"] == 0
    body = doc["paths"]["/api/v1/jobs/"]["post"]["requestBody"]["content"]
    assert body["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    assert "file" in body["multipart/form-data"]["schema"]["properties"]

    anonymous = {
        v["properties"]["kind"]["const"] for v in document()["components"]["schemas"]["JobCreate"]["oneOf"]
    }
    assert anonymous == {kind.name for kind in all_kinds(user=None) if not kind.admin_only and not kind.power}


class LateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    colour: str = "red"


def test_a_kind_registered_after_the_api_was_built_appears_in_the_document():
    document()  # built (and cached) before the kind exists
    register(JobKind(name="test_late", title="Test: late", description="", params_model=LateParams,
                     run=lambda ctx, params: None))  # fmt: skip
    try:
        schemas = document()["components"]["schemas"]
        assert schemas["Params_test_late"]["properties"]["colour"]["default"] == "red"
        assert "test_late" in {v["properties"]["kind"]["const"] for v in schemas["JobCreate"]["oneOf"]}
    finally:
        unregister("test_late")
    assert "Params_test_late" not in document()["components"]["schemas"]


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("get", "/api/v1/jobs/", 401, {"detail": "Authentication required."}),
        ("post", "/api/v1/notifications/read/", 401, {"detail": "Authentication required."}),
        ("get", "/api/v1/push/subscriptions/", 401, {"detail": "Authentication required."}),
        ("delete", "/api/v1/jobs/", 405, {"detail": "Method DELETE not allowed."}),
        ("put", "/api/v1/push/subscriptions/delete/", 405, {"detail": "Method PUT not allowed."}),
    ],
)
def test_refusals_before_any_view_runs_keep_the_error_format(method, path, status, body):
    response = getattr(Client(), method)(path)
    assert (response.status_code, response.json()) == (status, body)
    assert response["Content-Type"] == "application/json"
    if status == 401:
        assert response["WWW-Authenticate"] == "Bearer"


def test_a_bad_token_and_a_nul_in_the_query_keep_the_error_format(make_user):
    bad = Client().get("/api/v1/notifications/", HTTP_AUTHORIZATION="Bearer rb_nope")
    assert (bad.status_code, bad.json()) == (401, {"detail": "Invalid, expired or revoked token."})
    client = Client()
    client.force_login(make_user())
    nul = client.get("/api/v1/push/subscriptions/?x=%00")
    assert nul.status_code == 400 and nul.json()["detail"].startswith("Invalid request: a query parameter")
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(make_user())
    refused = csrf.post("/api/v1/notifications/read-all/")
    assert refused.status_code == 403 and refused.json()["detail"].startswith("CSRF check failed")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/jobs"),  # no trailing slash: was CommonMiddleware's APPEND_SLASH error (500)
        ("get", "/api/v1/docs"),
        ("get", "/api/v1/"),
        ("get", "/api/v1/nonexistent/"),
        ("delete", "/api/v1/jobs/x/y/z"),
    ],
)
def test_a_path_under_the_api_that_is_no_route_is_the_apis_json_404(method, path):
    response = getattr(Client(enforce_csrf_checks=True), method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"].startswith("No such API route")


def test_the_document_answers_other_methods_with_the_apis_405():
    response = Client(enforce_csrf_checks=True).post("/api/v1/openapi.json")
    assert (response.status_code, response.json()) == (405, {"detail": "Method POST not allowed."})
    assert response["Allow"] == "GET, HEAD"


def test_a_bearer_token_sees_the_kinds_its_user_may_launch_as_a_session_does(make_user):
    operator = make_user(operator=True, is_superuser=True)
    _, raw = token_create(user=operator, name="docs")
    by_token = Client().get("/api/v1/openapi.json", HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    session = Client()
    session.force_login(operator)
    kinds = [
        {v["properties"]["kind"]["const"] for v in doc["components"]["schemas"]["JobCreate"]["oneOf"]}
        for doc in (by_token, document(session))
    ]
    assert kinds[0] == kinds[1] == {kind.name for kind in all_kinds()}
    bad = Client().get("/api/v1/openapi.json", HTTP_AUTHORIZATION="Bearer rb_nope")
    assert bad.status_code == 200  # public: a bad token gets the anonymous document


@pytest.mark.parametrize(
    ("query", "blamed"),
    [("before=abc", "before"), ("limit=x", "limit"), ("limit=x&before=y", "before,limit")],
)
def test_a_bad_notification_page_query_blames_the_parameter_at_fault(make_user, query, blamed):
    client = Client()
    client.force_login(make_user())
    response = client.get(f"/api/v1/notifications/?{query}")
    assert response.status_code == 400
    assert ",".join(sorted(response.json()["fields"])) == blamed
