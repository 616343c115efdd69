"""WebSocket URL routes: ``/ws`` and ``/ws/``."""

from django.urls import re_path

from sync.ws.consumer import RealtimeConsumer

websocket_urlpatterns = [
    re_path(r"^ws/?$", RealtimeConsumer.as_asgi()),
]
