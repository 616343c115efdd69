"""Which browser origins may talk to this server (SPEC §5, SPEC §1).

One module for the rule, so the WebSocket Origin check and CORS agree. An
origin is trusted when it is this very site (same scheme and port as the
request, host in ALLOWED_HOSTS), or when it is listed in
``CSRF_TRUSTED_ORIGINS`` (Django's syntax, ``https://*.example.com`` included)
or in ``SYNC_CORS_ALLOWED_ORIGINS`` (exact). The scheme and port matter: a page
on another port of the same host is another origin, which HTTP CSRF refuses too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from sync.core.conf import sync_settings

DEFAULT_PORTS = {"http": "80", "https": "443"}
# Django's own fallback when DEBUG is on and ALLOWED_HOSTS is empty.
DEBUG_ALLOWED_HOSTS = [".localhost", "127.0.0.1", "[::1]"]


@dataclass(frozen=True)
class Origin:
    """A parsed ``scheme://host[:port]``; `port` is explicit or the default."""

    scheme: str
    domain: str
    port: str
    netloc: str


def parse_origin(text: str) -> Origin | None:
    """The origin `text` names, or None when it is not a plain web origin.

    "null" (sandboxed frames, file: pages) and anything with a path, query,
    credentials or a bad port is no origin to trust.
    """
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or text != f"{parts.scheme}://{parts.netloc}":
        return None
    domain, port = split_domain_port(parts.netloc)
    if not domain:
        return None
    return Origin(
        parts.scheme, domain, port or DEFAULT_PORTS[parts.scheme], parts.netloc
    )


def header(scope: dict[str, Any], name: str) -> str | None:
    """The first value of header `name` (lower case) in an ASGI scope."""
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None


def meta_header(scope: dict[str, Any], meta_name: str) -> str | None:
    """A header by its ``request.META`` name, matched the way Django's ASGI
    handler builds META (so ``x_forwarded_proto`` counts, as it does there)."""
    wanted = meta_name.removeprefix("HTTP_")
    for key, value in scope.get("headers", ()):
        if key.decode("latin-1").upper().replace("-", "_") == wanted:
            return value.decode("latin-1")
    return None


def request_scheme(scope: dict[str, Any]) -> str:
    """ "https" or "http", as ``HttpRequest.scheme`` would say for this request.

    Behind a TLS-terminating proxy the socket itself is plain ``ws``; Django
    trusts the proxy's header only when SECURE_PROXY_SSL_HEADER says so.
    """
    proxy_header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        meta_name, secure_value = proxy_header
        value = meta_header(scope, meta_name)
        if value is not None:
            first = value.split(",", 1)[0].strip()
            return "https" if first == secure_value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def request_port(scope: dict[str, Any], scheme: str) -> str | None:
    """The port the client connected to (Host header first), or None if unknown."""
    host = header(scope, "host")
    if settings.USE_X_FORWARDED_HOST:
        host = header(scope, "x-forwarded-host") or host
    if host is not None:
        domain, port = split_domain_port(host.split(",", 1)[0].strip())
        return (port or DEFAULT_PORTS[scheme]) if domain else None
    server = scope.get("server")
    if server and server[1] is not None:
        return str(server[1])
    return None


def allowed_hosts() -> list[str]:
    """ALLOWED_HOSTS, with Django's DEBUG fallback for local development."""
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return DEBUG_ALLOWED_HOSTS
    return settings.ALLOWED_HOSTS


def is_same_site(origin: Origin, scope: dict[str, Any]) -> bool:
    """True if `origin` is this site: the request's scheme and port, an allowed host."""
    scheme = request_scheme(scope)
    return (
        origin.scheme == scheme
        and origin.port == request_port(scope, scheme)
        and validate_host(origin.domain, allowed_hosts())
    )


def is_csrf_trusted(origin: Origin, text: str) -> bool:
    """True if CSRF_TRUSTED_ORIGINS lists the origin (exact or ``*.`` subdomain)."""
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in trusted:
            if text == trusted:
                return True
            continue
        pattern = urlsplit(trusted)
        if pattern.scheme == origin.scheme and is_same_domain(
            origin.netloc, pattern.netloc.lstrip("*")
        ):
            return True
    return False


def is_cors_allowed(text: str) -> bool:
    """True if SYNC_CORS_ALLOWED_ORIGINS lists `text` exactly."""
    # A trailing slash is a common slip when copying an origin from the address bar.
    return any(text == allowed.rstrip("/") for allowed in cors_allowed_origins())


def cors_allowed_origins() -> list[str]:
    """The configured cross-origin list (empty: same origin only)."""
    return list(sync_settings.CORS_ALLOWED_ORIGINS or [])


def websocket_origin_allowed(text: str, scope: dict[str, Any]) -> bool:
    """The SPEC §5 rule for a present Origin header on a WebSocket handshake."""
    origin = parse_origin(text)
    if origin is None:
        return False
    return (
        is_same_site(origin, scope)
        or is_csrf_trusted(origin, text)
        or is_cors_allowed(text)
    )
