"""OpenAPI description of our session authentication (drf-spectacular)."""

from drf_spectacular.authentication import SessionScheme


class CsrfSessionScheme(SessionScheme):
    """Document CsrfSessionAuthentication as the cookie session it is."""

    target_class = "sync.authentication.CsrfSessionAuthentication"
