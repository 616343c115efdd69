"""What the servers' patches share (sync/ops/request_heads.py): the head limits
and the raw refusal.
"""

from __future__ import annotations

import json

from sync.ops.request_heads import (
    HeadLimits,
    head_limits,
    head_timed_out,
    head_too_large,
)


def parse(answer: bytes) -> tuple[bytes, dict[bytes, bytes], dict]:
    """Status line, lower-cased headers and JSON body of a raw answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines)
    return status_line, headers, json.loads(body)


def test_a_refusal_is_a_whole_answer_in_the_apis_error_shape_that_closes():
    answer = head_too_large(HeadLimits(max_bytes=4096, timeout=3))
    status_line, headers, body = parse(answer)

    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(answer.partition(b"\r\n\r\n")[2])
    assert body == {
        "success": False,
        "error": {
            "code": "headers_too_large",
            "message": "The request line and headers are over 4096 bytes.",
            "details": {"limit": 4096},
        },
    }


def test_a_slow_head_is_refused_with_408():
    status_line, _, body = parse(head_timed_out(HeadLimits(4096, timeout=2.5)))

    assert status_line == b"HTTP/1.1 408 Request Timeout"
    assert body["error"]["code"] == "request_timeout"
    assert body["error"]["details"] == {"limit": 2.5}


def test_the_limits_follow_the_settings(settings):
    settings.SYNC = {
        **settings.SYNC,
        "MAX_REQUEST_HEAD_BYTES": 8192,
        "REQUEST_HEAD_TIMEOUT": 7,
    }

    assert head_limits() == HeadLimits(max_bytes=8192, timeout=7)


def test_the_documented_defaults():
    assert head_limits() == HeadLimits(max_bytes=65536, timeout=10)
