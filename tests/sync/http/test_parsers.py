"""Request bodies (sync/http/parsers.py): strict JSON only, size-capped, and
valid Unicode (lone surrogates refused on every route).
"""

from __future__ import annotations

import logging

import pytest

from sync.models import Broadcast
from tests.sync.http.api_calls import BROADCAST, SEND, TOKEN, assert_error, poll, send
from tests.sync.texts import LONE

# Bodies that are not JSON, or too big -----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        '{"type": "chat",',
        "{'type': 'chat'}",
        '{"type": "chat", "payload": {"x": NaN}}',
        '{"type": "chat", "payload": {"x": Infinity}}',
    ],
)
def test_send_with_malformed_json_is_invalid_json(api_client, raw):
    response = api_client.post(SEND, raw, content_type="application/json")
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        ("type=chat", "application/x-www-form-urlencoded"),
        ('{"type": "chat"}', "text/plain"),
        ("<type>chat</type>", "application/xml"),
    ],
)
def test_send_with_non_json_content_type_is_415(api_client, raw, content_type):
    response = api_client.post(SEND, raw, content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    assert poll(api_client)["messages"] == []


def test_send_with_too_large_body_is_413(api_client, sync_config):
    sync_config(MAX_PAYLOAD_BYTES=100)
    response = send(api_client, {"type": "chat", "payload": {"k": "x" * 10_000}})
    assert_error(response, 413, "payload_too_large")


# Lone surrogates --------------------------------------------------------------


def post_raw(client, path: str, text: str):
    return client.post(path, text, content_type="application/json")


SEND_BODIES = [
    pytest.param(f'{{"type": "chat", "payload": {{"t": "{LONE}"}}}}', id="payload"),
    pytest.param(f'{{"type": "chat", "payload": {{"{LONE}": 1}}}}', id="payload-key"),
    pytest.param(f'{{"type": "chat", "correlationId": "{LONE}"}}', id="correlationId"),
    pytest.param(f'{{"type": "chat", "{LONE}": 1}}', id="unknown-field-name"),
]


@pytest.mark.parametrize("text", SEND_BODIES)
def test_send_with_a_lone_surrogate_is_400_and_stores_nothing(api_client, text):
    assert_error(post_raw(api_client, SEND, text), 400, "invalid_unicode")
    assert poll(api_client)["messages"] == []


def test_broadcast_with_a_lone_surrogate_is_400_and_reaches_no_one(
    staff_client, api_client
):
    text = f'{{"type": "announcement", "payload": {{"t": "{LONE}"}}}}'
    assert_error(post_raw(staff_client, BROADCAST, text), 400, "invalid_unicode")
    assert not Broadcast.objects.exists()
    assert poll(api_client)["messages"] == []
    assert poll(staff_client)["messages"] == []


def test_send_with_surrogate_pair_is_stored_and_read_back(api_client):
    text = '{"type": "chat", "payload": {"t": "\\ud83d\\ude00"}}'
    assert post_raw(api_client, SEND, text).status_code == 201
    assert [m["payload"] for m in poll(api_client)["messages"]] == [{"t": "😀"}]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f'{{"username": "{LONE}", "password": "x"}}', id="value"),
        pytest.param(f'{{"username": "a", "password": "x", "{LONE}": 1}}', id="key"),
    ],
)
def test_token_body_with_a_lone_surrogate_is_400_without_a_traceback(
    anon_client, text, caplog
):
    with caplog.at_level(logging.ERROR):
        response = post_raw(anon_client, TOKEN, text)
    assert_error(response, 400, "invalid_unicode")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
