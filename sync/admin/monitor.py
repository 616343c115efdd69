"""The admin's live monitoring page, /admin/sync/monitor/.

The page shows the figures of ``sync.services.monitoring`` and refreshes
itself from ``figures/``, the same figures as JSON. With the in-memory store
the admin runs in the server process, so these are the server's own figures;
with Redis they cover every instance.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path

from sync.admin.access import StaffOnlyAdmin
from sync.core.exceptions import StoreUnavailable
from sync.services import get_realtime_sync
from sync.services.monitoring import snapshot

# How often the page asks for new figures.
REFRESH_MILLISECONDS = 3000


class MonitorAdmin(StaffOnlyAdmin):
    """Serves the monitor page in place of a change list (there is no table)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.monitor_view), name="sync_monitor_changelist"),
            path("figures/", wrap(self.figures_view), name="sync_monitor_figures"),
        ]

    def monitor_view(self, request: HttpRequest) -> HttpResponse:
        """The page, filled in now and refreshed by its script."""
        try:
            figures, unavailable = snapshot(get_realtime_sync()), None
        except StoreUnavailable as error:
            figures, unavailable = None, error.message
        context = {
            **self.admin_site.each_context(request),
            "title": "Realtime sync monitor",
            "opts": self.opts,
            "figures": figures,
            "unavailable": unavailable,
            "refresh_ms": REFRESH_MILLISECONDS,
        }
        return TemplateResponse(request, "admin/sync/monitor.html", context)

    def figures_view(self, request: HttpRequest) -> JsonResponse:
        """The figures as JSON; 503 in the error envelope without the store."""
        try:
            return JsonResponse(snapshot(get_realtime_sync()))
        except StoreUnavailable as error:
            body = {"code": error.code, "message": error.message, "details": {}}
            return JsonResponse({"success": False, "error": body}, status=503)
