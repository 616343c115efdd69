"""Shapes of the API's bodies, for the OpenAPI schema at /api/schema/.

Validation itself lives in ``sync.validation`` (shared with WebSocket); these
serializers only describe the wire format.
"""

from __future__ import annotations

from rest_framework import serializers


class MessageSerializer(serializers.Serializer):
    """The envelope every received message has (SPEC §2)."""

    id = serializers.CharField()
    type = serializers.CharField()
    payload = serializers.DictField()
    timestamp = serializers.IntegerField()
    userId = serializers.CharField(allow_null=True)
    topics = serializers.ListField(child=serializers.CharField())
    cursor = serializers.CharField()
    correlationId = serializers.CharField(allow_null=True)


class PollResponse(serializers.Serializer):
    success = serializers.BooleanField()
    messages = MessageSerializer(many=True)
    timestamp = serializers.IntegerField(help_text="Pass back as `since`.")
    count = serializers.IntegerField()
    cursor = serializers.CharField(help_text="Pass back as `cursor`.")
    hasMore = serializers.BooleanField()
    gap = serializers.BooleanField(help_text="Messages were dropped: reload state.")


class SendRequest(serializers.Serializer):
    type = serializers.RegexField(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
    payload = serializers.DictField(required=False)
    correlationId = serializers.CharField(required=False, allow_null=True)


class SendResponse(serializers.Serializer):
    success = serializers.BooleanField()
    messageId = serializers.CharField()
    timestamp = serializers.IntegerField()


class BroadcastRequest(serializers.Serializer):
    type = serializers.RegexField(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
    payload = serializers.DictField(required=False)
    topics = serializers.ListField(child=serializers.CharField(), required=False)


class BroadcastResponse(SendResponse):
    topics = serializers.ListField(child=serializers.CharField())


class WebsocketStatus(serializers.Serializer):
    enabled = serializers.BooleanField()
    connections = serializers.IntegerField()
    totalConnections = serializers.IntegerField()
    subscriptions = serializers.IntegerField()


class PollingStatus(serializers.Serializer):
    enabled = serializers.BooleanField()
    endpoint = serializers.CharField()
    queues = serializers.IntegerField()
    messages = serializers.IntegerField()


class Status(serializers.Serializer):
    websocket = WebsocketStatus()
    polling = PollingStatus()
    lastCheck = serializers.IntegerField()


class StatusResponse(serializers.Serializer):
    success = serializers.BooleanField()
    status = Status()


class TokenRequest(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField()


class TokenResponse(serializers.Serializer):
    token = serializers.CharField()
