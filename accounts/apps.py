from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Login pages and the API token endpoint."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"
