"""One async view answering a poll-shaped JSON body, at the project's poll path."""

from __future__ import annotations

import time

from django.http import JsonResponse
from django.urls import path


async def poll(request) -> JsonResponse:
    """An empty poll answer: what the project's poll returns with nothing new."""
    now = int(time.time() * 1000)
    return JsonResponse(
        {
            "success": True,
            "messages": [],
            "timestamp": now,
            "count": 0,
            "cursor": f"0.{now}",
            "hasMore": False,
            "gap": False,
        }
    )


urlpatterns = [path("api/sync/poll", poll)]
