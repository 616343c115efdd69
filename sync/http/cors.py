"""CORS for ``/api/``: cross-origin HTTP for ``SYNC_CORS_ALLOWED_ORIGINS`` (SPEC §1).

With the default empty list the API is same-origin only and no CORS header
is ever sent. For a listed origin, preflights are answered here (they carry
no credentials by design, so they cannot be authenticated or rate limited
per user) and real responses get the headers that let the page read them.

CORS only lets a page read responses; it grants nothing else. CSRF still
applies to session-authenticated unsafe requests: a cross-origin POST with
the session cookie must come from an origin that is ALSO in
``CSRF_TRUSTED_ORIGINS`` and carry ``X-CSRFToken``, or Django refuses it
(403 ``csrf_failed``). Requests with ``Authorization: Token`` need no CSRF.
"""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from sync.core.origins import cors_allowed_origins, is_cors_allowed

API_PREFIX = "/api/"
ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, X-CSRFToken"
# Lets cross-origin clients read how long to back off after a 429 or 503,
# and the server's clock (the client corrects its first poll position).
EXPOSE_HEADERS = "Retry-After, Date"
# Seconds a browser may reuse a preflight answer before asking again.
PREFLIGHT_MAX_AGE = "600"


def is_api(request: HttpRequest) -> bool:
    """CORS covers the API only: pages and the admin stay same-origin."""
    return request.path_info.startswith(API_PREFIX)


def allowed_origin(request: HttpRequest) -> str | None:
    """The request's Origin if CORS is granted to it on this path, else None."""
    origin = request.headers.get("Origin")
    if origin and is_api(request) and is_cors_allowed(origin):
        return origin
    return None


def is_preflight(request: HttpRequest) -> bool:
    """A browser asking permission first (a plain OPTIONS is no preflight)."""
    return (
        request.method == "OPTIONS"
        and "Access-Control-Request-Method" in request.headers
    )


def preflight_response(origin: str) -> HttpResponse:
    """204 answering a listed origin's preflight."""
    response = HttpResponse(status=204)
    response["Access-Control-Allow-Methods"] = ALLOW_METHODS
    response["Access-Control-Allow-Headers"] = ALLOW_HEADERS
    response["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    return add_cors_headers(response, origin)


def add_cors_headers(response: HttpResponse, origin: str) -> HttpResponse:
    """Let a page on `origin` read `response`, cookies included."""
    response["Access-Control-Allow-Origin"] = origin
    response["Access-Control-Allow-Credentials"] = "true"
    response["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    patch_vary_headers(response, ("Origin",))
    return response


def finish(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """CORS headers for a listed origin; Vary: Origin whenever CORS is on.

    Vary keeps a shared cache from serving one origin's answer to another.
    """
    origin = allowed_origin(request)
    if origin:
        return add_cors_headers(response, origin)
    if is_api(request) and cors_allowed_origins():
        patch_vary_headers(response, ("Origin",))
    return response


class CorsMiddleware:
    """Django middleware; sync and async, so it never forces a thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        origin = allowed_origin(request)
        if origin and is_preflight(request):
            return preflight_response(origin)
        return finish(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        origin = allowed_origin(request)
        if origin and is_preflight(request):
            return preflight_response(origin)
        return finish(request, await self.get_response(request))
