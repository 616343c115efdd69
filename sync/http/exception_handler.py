"""The one exception handler: every API failure gets the error envelope.

{"success": false, "error": {"code", "message", "details"}}

The core's errors (``SyncError``) know nothing of DRF: they are mapped
here, with their status and ``Retry-After``; DRF's own exceptions keep its
handling, with their codes renamed into our vocabulary.
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
from sync.core.protocol import ErrorCode, error_body

__all__ = ["api_exception_handler", "error_body"]

logger = logging.getLogger(__name__)

# DRF's own codes, renamed where our vocabulary differs.
CODE_ALIASES = {"parse_error": ErrorCode.INVALID_JSON}


def api_exception_handler(exc: Exception, context: dict) -> Response:
    """Turn any exception raised by an API view into the error envelope."""
    if isinstance(exc, SyncError):
        return sync_error_response(exc)
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


def sync_error_response(exc: SyncError) -> Response:
    """A core error's answer: its status, its envelope, ``Retry-After``."""
    headers = {"Retry-After": str(exc.wait)} if exc.wait is not None else None
    body = error_body(exc.code, exc.message, exc.details)
    return Response(body, status=int(exc.status_code), headers=headers)


def describe(exc: Exception) -> tuple[str, str, dict]:
    """Code, message and details of an exception DRF knows how to answer."""
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
