"""Database records of Realtime Sync: the broadcast history for the admin."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Broadcast(models.Model):
    """One broadcast a person sent: who, when, what, and to which topics."""

    class Source(models.TextChoices):
        API = "api", "HTTP API"
        ADMIN = "admin", "Admin form"
        COMMAND = "command", "Management command"

    message_id = models.CharField(max_length=64, unique=True)
    type = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    topics = models.JSONField(default=list, blank=True)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sync_broadcasts",
    )
    # Kept when the user is deleted, so the history still says who sent it.
    sent_by_username = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    # False when the store refused it: its sender got an error, and it may
    # have reached nobody (or, if the store failed after writing, everyone).
    published = models.BooleanField(
        default=True,
        help_text="Unchecked when the message store refused it (its sender "
        "got an error); it may not have reached anyone.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.type} by {self.sent_by_username or 'system'}"


class Monitor(models.Model):
    """No table: the admin entry of the live monitoring page.

    Registering it gives the page its place in the admin index and its URL,
    /admin/sync/monitor/, the way every admin page gets them (see
    sync.admin.monitor.MonitorAdmin); nothing is ever stored.
    """

    class Meta:
        managed = False
        verbose_name = "monitor"
        verbose_name_plural = "Realtime sync monitor"
        default_permissions = ()

    def __str__(self) -> str:
        return "Realtime sync monitor"
