"""The API against its own OpenAPI schema (sync/http/schema.py, /api/schema/),
with schemathesis.

Every operation is exercised in-process with generated requests, valid and
invalid, as a staff user (so broadcast answers too). Every built-in check
must pass: no server error, only documented statuses and content types,
bodies and headers as the schema says, invalid input refused.
"""

from __future__ import annotations

import copy

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.config import SchemathesisConfig

from sync.core.clock import now_ms
from sync.models import Broadcast
from tests.sync.http.api_calls import BROADCAST, POLL, SEND, STATUS, TOKEN

SCHEMA = "/api/schema/"
OPERATIONS = {
    ("GET", "/api/sync/poll"),
    ("POST", "/api/sync/send"),
    ("GET", "/api/sync/status"),
    ("POST", "/api/sync/broadcast"),
    ("POST", "/api/auth/token"),
}


def served_schema() -> dict:
    """The document /api/schema/ serves (checked below), built without a request.

    Tests are generated when pytest collects them, before any database or
    token exists to fetch it over HTTP.
    """
    return SchemaGenerator().get_schema(request=None, public=True)


# Credentials are the one thing a schema cannot describe: a well-formed token
# request with unknown credentials is refused with 400 (SPEC §4).
CONFIG = SchemathesisConfig.from_dict(
    {
        "operations": [
            {
                "include-path": "/api/auth/token",
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": ["2xx", "400"]}
                },
            }
        ]
    }
)
DOCUMENT = served_schema()
schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT), config=CONFIG)
schema.app = get_wsgi_application()


@schema.hook("map_query")
def since_behind_the_clock(context, query):
    """Keep `since` at most 60 s ahead of the server's clock (else 400).

    That bound moves with the clock, so the schema can only state it in words.
    """
    since = (query or {}).get("since")
    if type(since) is int and since > now_ms():
        query["since"] = now_ms()
    return query


@pytest.fixture
def staff_token(staff) -> str:
    return Token.objects.get_or_create(user=staff)[0].key


@pytest.fixture
def generous_limits(sync_config):
    """Thousands of requests: lift the rate limit; `wait` must not hold polls."""
    sync_config(RATE_LIMIT="1000000/15m", POLL_MAX_WAIT=0)


@schema.parametrize()
@settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
def test_api_conforms_to_its_schema(case, staff_token, generous_limits):
    case.call_and_validate(headers={"Authorization": f"Token {staff_token}"})


def test_the_tested_schema_is_the_one_served(api_client):
    response = api_client.get(SCHEMA)
    assert response.status_code == 200
    assert response.json() == served_schema()


def test_schema_covers_every_operation():
    operations = {
        (result.ok().method.upper(), result.ok().path)
        for result in schema.get_all_operations()
    }
    assert operations == OPERATIONS


# What the schema states, read the way a client generator reads it -------------


def operation(method: str, path: str) -> dict:
    return DOCUMENT["paths"][path][method]


def body_schema(method: str, path: str) -> dict:
    ref = operation(method, path)["requestBody"]["content"]["application/json"]
    name = ref["schema"]["$ref"].rsplit("/", 1)[-1]
    return DOCUMENT["components"]["schemas"][name]


@pytest.mark.parametrize("path", ["/api/sync/send", "/api/sync/broadcast"])
def test_publishing_answers_201_as_documented(path):
    answers = operation("post", path)["responses"]
    assert "201" in answers
    assert "200" not in answers


@pytest.mark.parametrize(("method", "path"), sorted(OPERATIONS))
def test_every_error_status_is_documented_with_the_envelope(method, path):
    answers = operation(method.lower(), path)["responses"]
    errors = {status for status in answers if status >= "400"}
    assert "429" in errors
    for status in errors:
        content = answers[status]["content"]["application/json"]["schema"]
        assert content == {"$ref": "#/components/schemas/ErrorResponse"}, status
    assert answers["429"]["headers"]["Retry-After"]["required"] is True


def test_request_limits_are_documented():
    send = body_schema("post", "/api/sync/send")["properties"]
    broadcast = body_schema("post", "/api/sync/broadcast")["properties"]
    assert send["type"]["maxLength"] == 64
    assert send["type"]["pattern"] == "^[A-Za-z][A-Za-z0-9_.:-]{0,63}$"
    assert send["correlationId"]["maxLength"] == 128
    assert broadcast["topics"]["maxItems"] == 64
    assert broadcast["topics"]["items"]["pattern"].startswith("^[A-Za-z0-9]")
    assert not broadcast["topics"].get("nullable")


def test_poll_parameter_ranges_are_documented():
    parameters = {
        parameter["name"]: parameter["schema"]
        for parameter in operation("get", "/api/sync/poll")["parameters"]
    }
    assert parameters["limit"]["minimum"] == 1
    assert parameters["limit"]["maximum"] == 1000
    assert parameters["since"]["minimum"] == 0
    assert parameters["wait"]["minimum"] == 0
    assert "pattern" in parameters["cursor"]
    assert "pattern" in parameters["topics"]


def test_broadcast_with_null_topics_is_refused_as_the_schema_says(staff_client):
    response = staff_client.post(
        "/api/sync/broadcast", {"type": "news", "topics": None}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_topics"
    assert not Broadcast.objects.exists()


# OpenAPI schema ---------------------------------------------------------------


def test_schema_describes_the_api(api_client):
    response = api_client.get(SCHEMA)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for path in (POLL, SEND, STATUS, BROADCAST, TOKEN):
        assert path in document["paths"], path
    assert "get" in document["paths"][POLL]
