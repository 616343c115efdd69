"""The lean HTTP path for /api/: Django's ASGI handler without its thread hops.

For every request, even one that touches no database, Django's ASGIHandler
hops into threads several times:
- it runs the request in a ``ThreadSensitiveContext``, so its first
  thread-sensitive call (the sync receivers of ``request_started``) starts a
  thread held until the response is sent: each waiting long poll holds one;
- it sends ``request_started``, and ``request_finished`` when it closes the
  response, through ``sync_to_async``;
- each ``MiddlewareMixin`` middleware runs ``process_request`` and
  ``process_response`` through ``sync_to_async``;
- it renders DRF responses (template responses) through ``sync_to_async``,
  and logs every 4xx answer from a worker thread.

``ApiHandler`` serves /api/ with the same request and response objects,
minus those hops: no ``ThreadSensitiveContext``; no ``request_started`` or
``request_finished`` (their stock receivers tidy the database connections
of the thread serving the request, and here no query runs on the event
loop's thread: every one goes through ``worker_threads.in_worker_thread``,
which tidies around itself); only the middleware the API needs, each
native async (``API_MIDDLEWARE``); DRF's JSON rendered inline; sync views
in a worker thread. ``ATOMIC_REQUESTS`` still applies as in Django.

Routing /api/ to its own handler is simpler than making every entry of
``settings.MIDDLEWARE`` async: pages, the admin and the login keep Django's
handler and stock middleware untouched, and no middleware change can put a
hop back on the API path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response
from rest_framework.response import Response

from sync.core.worker_threads import in_worker_thread
from sync.http.cors import CorsMiddleware

API_PREFIX = "/api/"
request_logger = logging.getLogger("django.request")


def is_api(scope) -> bool:
    """True for /api and everything under /api/ (after the root path)."""
    path = scope["path"].removeprefix(scope.get("root_path", ""))
    return path == API_PREFIX.rstrip("/") or path.startswith(API_PREFIX)


class ApiRouter:
    """ASGI app: /api/ to ApiHandler, everything else to `django_app`."""

    def __init__(self, django_app) -> None:
        self.django_app = django_app
        self.api_app = ApiHandler()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and is_api(scope):
            return await self.api_app(scope, receive, send)
        return await self.django_app(scope, receive, send)


class InlineMiddleware:
    """A stock middleware whose hooks do no I/O, called on the event loop.

    ``MiddlewareMixin`` would run each hook through ``sync_to_async``; the
    hooks of the classes wrapped here only read settings and headers.
    """

    stock_class: type

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.stock = self.stock_class(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request):
        response = None
        if hasattr(self.stock, "process_request"):
            response = self.stock.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self.stock, "process_response"):
            response = self.stock.process_response(request, response)
        return response


class InlineSecurityMiddleware(InlineMiddleware):
    """SecurityMiddleware: HTTPS redirect, HSTS, nosniff, referrer policy."""

    stock_class = SecurityMiddleware


class InlineCommonMiddleware(InlineMiddleware):
    """CommonMiddleware: disallowed user agents, slash redirect, Content-Length."""

    stock_class = CommonMiddleware


class InlineXFrameOptionsMiddleware(InlineMiddleware):
    """XFrameOptionsMiddleware: ``X-Frame-Options`` on every answer."""

    stock_class = XFrameOptionsMiddleware


class ApiSessionMiddleware:
    """The session, for requests that carry a session cookie; nothing otherwise.

    The session is loaded lazily by whoever reads it (session authentication,
    in a worker thread); it is saved in a worker thread only when modified.
    No AuthenticationMiddleware: ``CsrfSessionAuthentication`` loads the user.
    No CsrfViewMiddleware: API views are CSRF-exempt for Django, and DRF's
    session authentication enforces CSRF itself on unsafe methods.
    """

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.sessions = SessionMiddleware(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request):
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return await self.get_response(request)
        self.sessions.process_request(request)  # a lazy store: no query yet
        response = await self.get_response(request)
        if request.session.modified or settings.SESSION_SAVE_EVERY_REQUEST:
            finish = in_worker_thread(self.sessions.process_response)
            return await finish(request, response)
        return self.sessions.process_response(request, response)  # headers only


# Outermost first, in the order of settings.MIDDLEWARE.
API_MIDDLEWARE = [
    InlineSecurityMiddleware,
    CorsMiddleware,
    ApiSessionMiddleware,
    InlineCommonMiddleware,
    InlineXFrameOptionsMiddleware,
]


class ApiHandler(ASGIHandler):
    """Django's ASGI handler for /api/, with no thread hop of its own."""

    def load_middleware(self, is_async: bool = True) -> None:
        """API_MIDDLEWARE around the view call, as BaseHandler chains them."""
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        handler = convert_exception_to_response(self.respond)
        for middleware in reversed(API_MIDDLEWARE):
            handler = convert_exception_to_response(middleware(handler))
        self._middleware_chain = handler

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"ApiHandler serves HTTP only, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        """ASGIHandler.handle without the signals and the closing hop."""
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            await self.send_response(error_response, send)
            close_quietly(error_response)
        else:
            response = await self.serve(request, receive, send)
            if response is not None:
                close_quietly(response)
        body_file.close()

    async def serve(self, request, receive, send):
        """Respond and send, unless the client leaves first (None then).

        As in Django: a disconnect cancels the view (a long poll stops
        waiting at once), and the listener is cancelled once the answer is
        sent. Unlike Django, neither task outlives this one if it is itself
        cancelled.
        """
        responding = asyncio.ensure_future(self.respond_and_send(request, send))
        listening = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait(
                {responding, listening}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            listening.cancel()
            responding.cancel()  # no effect once the answer is sent
        for task in (listening, responding):
            with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                await task
        return None if responding.cancelled() else responding.result()

    async def respond_and_send(self, request, send):
        response = await self.get_response_async(request)
        with contextlib.suppress(asyncio.CancelledError):  # client gone mid-send
            await self.send_response(response, send)
        return response

    async def get_response_async(self, request):
        """BaseHandler.get_response_async, logging only what would be emitted."""
        set_urlconf(settings.ROOT_URLCONF)
        response = await self._middleware_chain(request)
        response._resource_closers.append(request.close)
        level = logging.ERROR if response.status_code >= 500 else logging.WARNING
        if response.status_code >= 400 and request_logger.isEnabledFor(level):
            await in_worker_thread(log_response)(
                "%s: %s",
                response.reason_phrase,
                request.path,
                response=response,
                request=request,
            )
        return response

    async def respond(self, request):
        """Resolve and call the view; render a DRF answer inline (JSON, no I/O)."""
        callback, args, kwargs = self.resolve_request(request)
        view = self.make_view_atomic(callback)
        if not iscoroutinefunction(view):
            view = in_worker_thread(view)
        response = await view(request, *args, **kwargs)
        self.check_response(response, callback)
        if isinstance(response, Response):
            response.render()
        elif callable(getattr(response, "render", None)):
            response = await in_worker_thread(response.render)()
        return response


def close_quietly(response) -> None:
    """``response.close()`` without sending ``request_finished`` (see above)."""
    for closer in response._resource_closers:
        with contextlib.suppress(Exception):
            closer()
    response._resource_closers.clear()
    response.closed = True
