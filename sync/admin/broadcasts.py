"""Admin pages: the broadcast history and form, and the live monitor.

Any active staff member may use them, as any may broadcast through the API
(SPEC §4, §7). The history is read-only; its add page is the broadcast form,
which publishes through RealtimeSync once the sender confirms.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from sync.admin.access import StaffOnlyAdmin, is_staff
from sync.admin.forms import BroadcastForm
from sync.admin.monitor import MonitorAdmin
from sync.core.exceptions import StoreUnavailable
from sync.models import Broadcast, Monitor
from sync.services import get_realtime_sync

# The submit button of the confirmation page; without it, nothing is sent.
CONFIRM = "confirm"
# "Change" on the confirmation page: back to the form, values kept.
EDIT = "edit"

admin.site.register(Monitor, MonitorAdmin)


@admin.register(Broadcast)
class BroadcastAdmin(StaffOnlyAdmin):
    """Read-only history of every broadcast; adding one sends it."""

    list_display = (
        "type",
        "topics",
        "sent_by_username",
        "source",
        "published",
        "created_at",
    )
    list_filter = ("source", "published", "type", "created_at")
    search_fields = ("type", "message_id", "sent_by_username")
    date_hierarchy = "created_at"
    readonly_fields = (
        "message_id",
        "type",
        "payload",
        "topics",
        "sent_by",
        "sent_by_username",
        "source",
        "published",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_staff(request)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        """Form, then confirmation, then publish: nothing is sent unconfirmed."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BroadcastForm(request.POST if request.method == "POST" else None)
        if not form.is_bound or EDIT in request.POST or not form.is_valid():
            return self._render(request, "send", form)
        try:
            if CONFIRM not in request.POST:
                return self._confirm(request, form)
            return self._send(request, form)
        except StoreUnavailable as error:
            form.add_error(None, error.message)
            return self._render(request, "send", form)

    def _confirm(self, request: HttpRequest, form: BroadcastForm) -> HttpResponse:
        stats = get_realtime_sync().get_stats()
        connections = stats["websocket"]["activeConnections"]
        return self._render(request, "confirm", form, connections=connections)

    def _send(self, request: HttpRequest, form: BroadcastForm) -> HttpResponse:
        data = form.cleaned_data
        sent = get_realtime_sync().broadcast(
            data["type"],
            data["payload"],
            data["topics"],
            sent_by=request.user,
            source=Broadcast.Source.ADMIN,
        )
        record = Broadcast.objects.get(message_id=sent["id"])
        self.log_addition(request, record, [{"added": {}}])
        self.message_user(
            request, f"Broadcast {sent['type']} sent ({sent['id']}).", messages.SUCCESS
        )
        return redirect("admin:sync_broadcast_changelist")

    def _render(
        self, request: HttpRequest, step: str, form: BroadcastForm, **extra: Any
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": "Send a broadcast",
            "opts": self.opts,
            "form": form,
            "confirm_name": CONFIRM,
            "edit_name": EDIT,
            **extra,
        }
        template = f"admin/sync/broadcast/{step}.html"
        return TemplateResponse(request, template, context)
