"""Admin pages: the broadcast history."""

from django.contrib import admin

from sync.models import Broadcast


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin):
    """Read-only history of every broadcast a person sent."""

    list_display = ("type", "topics", "sent_by_username", "source", "created_at")
    list_filter = ("source", "type")
    search_fields = ("type", "message_id", "sent_by_username")
    readonly_fields = (
        "message_id",
        "type",
        "payload",
        "topics",
        "sent_by",
        "sent_by_username",
        "source",
        "created_at",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
