from django.apps import AppConfig


class SyncConfig(AppConfig):
    """Realtime Sync: message store, HTTP API, WebSocket transport."""

    name = "sync"
    verbose_name = "Realtime Sync"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI extension for our session authentication, and
        # counts failed logins (user_login_failed) for SYNC_LOGIN_RATE_LIMIT.
        from sync.http import schema  # noqa: F401
        from sync.signals import connect_revocation_signals

        # Deactivating or deleting a user, or deleting a token, closes sockets.
        connect_revocation_signals()
