"""HTTP API of SPEC §4: parse, call a service, shape the answer."""

from __future__ import annotations

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from sync.core import jsontext
from sync.core.topic_access import aauthorize_topics
from sync.core.validation import validate_broadcast, validate_client_message
from sync.http import serializers
from sync.http.apiview import SyncAPIView
from sync.http.permissions import IsStaff
from sync.http.query_params import parse_poll_query
from sync.http.schema import (
    MESSAGE_CODES,
    POLL_PARAMETERS,
    RETRY_AFTER,
    TOKEN_CHALLENGE,
    EmptyMeansAbsentSchema,
    responses,
)
from sync.services import get_realtime_sync
from sync.services.handlers import arun_handlers
from sync.services.monitoring import status_figures
from sync.services.polling import poll
from sync.store.envelopes import join_frames
from sync.store.paging import ReadResult

CSRF_FAILED = "csrf_failed: a session request without its CSRF token."


class PollView(SyncAPIView):
    """The caller's messages and visible broadcasts after a position."""

    schema = EmptyMeansAbsentSchema()

    @extend_schema(
        parameters=[*POLL_PARAMETERS, RETRY_AFTER, TOKEN_CHALLENGE],
        responses=responses(
            200,
            serializers.PollResponse,
            *(400, 401, 403, 429, 503),
            notes={
                400: "invalid_since, invalid_cursor, invalid_limit, invalid_wait, "
                "invalid_topics.",
                403: "forbidden_topic: the topic authorizer refused a topic.",
                429: "throttled: too many requests, or too many long polls "
                "waiting; retry after Retry-After seconds.",
            },
        ),
    )
    async def get(self, request):
        query = parse_poll_query(request.query_params)
        await aauthorize_topics(request.user, query.topics)
        sync = get_realtime_sync()
        result = await poll(sync.store, sync.waiting_polls, str(request.user.pk), query)
        return poll_response(result)


def poll_response(result: ReadResult) -> HttpResponse:
    """The poll answer, its messages spliced from the store's text as they are.

    Nothing is parsed or encoded again: a page of any size costs one join.
    """
    fields = jsontext.dumps(
        {
            "timestamp": result.timestamp,
            "count": result.count,
            "cursor": result.position.encode(),
            "hasMore": result.has_more,
            "gap": result.gap,
        }
    )
    body = b'{"success":true,"messages":%s,%s' % (
        join_frames(result.frames()),
        fields[1:],
    )
    return HttpResponse(body, content_type="application/json")


class SendView(SyncAPIView):
    """A client message, delivered to every connection of the sender."""

    @extend_schema(
        request=serializers.SendRequest,
        parameters=[RETRY_AFTER, TOKEN_CHALLENGE],
        responses=responses(
            201,
            serializers.SendResponse,
            *(400, 401, 403, 413, 415, 429, 503),
            notes={
                400: f"{MESSAGE_CODES}, reserved_type, invalid_correlation_id.",
                403: CSRF_FAILED,
            },
        ),
    )
    async def post(self, request):
        message = validate_client_message(request.data)
        sync = get_realtime_sync()
        sync.handler_runs.check_room(message.type, request.user.pk)
        sent = await sync.asend_from_client(request.user, message)
        if isinstance(request._request, ASGIRequest):
            sync.handler_runs.submit(sent, request.user)  # run after this answer
        else:
            # WSGI (Django's test client): this request's event loop ends with
            # it, and tasks left on it would be cancelled, so run them now.
            await arun_handlers(sent, request.user)
        return Response(
            {"success": True, "messageId": sent["id"], "timestamp": sent["timestamp"]},
            status=status.HTTP_201_CREATED,
        )


class StatusView(SyncAPIView):
    """Connection and queue figures, in the shape of the original design."""

    @extend_schema(
        parameters=[RETRY_AFTER, TOKEN_CHALLENGE],
        responses=responses(200, serializers.StatusResponse, 401, 429, 503),
    )
    async def get(self, request):
        stats = await get_realtime_sync().aget_stats()
        return Response({"success": True, "status": status_figures(stats)})


class BroadcastView(SyncAPIView):
    """A staff message to everyone, or to subscribers of some topics."""

    permission_classes = [IsStaff]

    @extend_schema(
        request=serializers.BroadcastRequest,
        parameters=[RETRY_AFTER, TOKEN_CHALLENGE],
        responses=responses(
            201,
            serializers.BroadcastResponse,
            *(400, 401, 403, 413, 415, 429, 503),
            notes={
                400: f"{MESSAGE_CODES}, invalid_topics.",
                403: f"permission_denied: staff only. {CSRF_FAILED}",
            },
        ),
        description="Staff only. Every broadcast is recorded for the admin.",
    )
    async def post(self, request):
        message = validate_broadcast(request.data)
        sent = await get_realtime_sync().abroadcast(
            message.type,
            message.payload,
            message.topics,
            sent_by=request.user,
            source="api",
        )
        return Response(
            {
                "success": True,
                "messageId": sent["id"],
                "timestamp": sent["timestamp"],
                "topics": sent["topics"],
            },
            status=status.HTTP_201_CREATED,
        )


@extend_schema(exclude=True)
class ApiNotFoundView(SyncAPIView):
    """Unknown /api/* paths: 404 in the error envelope, even with DEBUG on."""

    async def dispatch_not_found(self, request, *args, **kwargs):
        raise NotFound()

    get = post = put = patch = delete = options = dispatch_not_found
