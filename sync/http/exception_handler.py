"""The one exception handler: every API failure gets the error envelope.

{"success": false, "error": {"code", "message", "details"}}
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from sync.core.exceptions import SyncError

logger = logging.getLogger(__name__)

# DRF's own codes, renamed where our vocabulary differs.
CODE_ALIASES = {"parse_error": "invalid_json"}


def error_body(code: str, message: str, details: dict | None = None) -> dict[str, Any]:
    """The error envelope of SPEC §4."""
    return {
        "success": False,
        "error": {"code": code, "message": message, "details": details or {}},
    }


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """Turn any exception raised by an API view into the error envelope."""
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in API view", exc_info=exc)
        return Response(
            error_body("server_error", "Internal server error."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    code, message, details = describe(exc)
    response.data = error_body(code, message, details)
    return response


def describe(exc: Exception) -> tuple[str, str, dict]:
    """Code, message and details of an exception DRF knows how to answer."""
    if isinstance(exc, SyncError):
        return exc.code, exc.message, exc.details
    if isinstance(exc, Http404):
        return "not_found", "Not found.", {}
    if isinstance(exc, DjangoPermissionDenied):
        return "permission_denied", "You do not have permission to do this.", {}
    if isinstance(exc, exceptions.Throttled):
        return "throttled", "Too many requests.", {"retryAfter": exc.wait}
    if isinstance(exc, exceptions.ValidationError):
        return "invalid_request", "The request is invalid.", {"fields": exc.detail}
    assert isinstance(exc, exceptions.APIException)
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    return CODE_ALIASES.get(code, code), _first_message(exc.detail), {}


def _first_message(detail: Any) -> str:
    if isinstance(detail, dict):
        detail = next(iter(detail.values()), "")
    if isinstance(detail, list):
        detail = detail[0] if detail else ""
    return str(detail)
