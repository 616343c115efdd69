"""Static files from the app server itself (sync/ops/static_files.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from django.test import AsyncClient, Client, RequestFactory

from sync.ops.static_files import StaticFilesMiddleware

STATIC_DIR = Path(__file__).resolve().parents[3] / "sync" / "static" / "sync"
CSS_URL = "/static/sync/dashboard.css"


def body_of(response) -> bytes:
    return b"".join(response.streaming_content)


def test_a_static_file_is_served_with_its_type_and_bytes(db):
    response = Client().get(CSS_URL)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    # Public files: a page on another origin may import the client module.
    assert response["Access-Control-Allow-Origin"] == "*"
    assert body_of(response) == (STATIC_DIR / "dashboard.css").read_bytes()


def test_an_unknown_static_file_is_404(db):
    assert Client().get("/static/sync/nope.js").status_code == 404


async def test_under_asgi_the_file_streams_asynchronously_without_warnings(db):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = await AsyncClient().get(CSS_URL)
        parts = [part async for part in response.streaming_content]
    assert response.status_code == 200
    assert response.is_async
    assert b"".join(parts) == (STATIC_DIR / "dashboard.css").read_bytes()
    assert int(response["Content-Length"]) == len(b"".join(parts))
    assert [str(warning.message) for warning in caught] == []


async def test_under_asgi_a_revalidation_is_answered_304(db):
    first = await AsyncClient().get(CSS_URL)
    [part async for part in first.streaming_content]
    again = await AsyncClient().get(CSS_URL, headers={"If-None-Match": first["ETag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("debug", [True, False])
def test_without_collectstatic_files_come_from_the_apps(settings, tmp_path, debug):
    """Production (no autorefresh) and development alike; no warning either way."""
    settings.DEBUG = debug
    settings.STATIC_ROOT = tmp_path / "never-collected"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        middleware = StaticFilesMiddleware(lambda request: None)
    response = middleware(RequestFactory().get(CSS_URL))
    assert response.status_code == 200
    assert body_of(response) == (STATIC_DIR / "dashboard.css").read_bytes()
