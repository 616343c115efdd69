"""Signal receivers that revoke access, in every process.

Deactivating or deleting a user, or deleting a token, makes every process
(with Redis) refuse the token over HTTP and close the sockets it opened with
4401 (``sync.services.revocation``). Changes that send no signal
(``QuerySet.update``, raw SQL) are caught by the consumer's heartbeat
re-check and the token cache's lifetime of one heartbeat interval instead.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from sync.services.revocation import revoke_token, revoke_user


def user_saved(sender, instance, created, using, **kwargs) -> None:
    """Revoke an inactive user's sockets.

    Revoking on every save of an inactive user is harmless (it has no sockets
    left) and spares tracking the previous value of ``is_active``.
    """
    if not created and not getattr(instance, "is_active", True):
        revoke_user(instance.pk, using=using)


def user_deleted(sender, instance, using, **kwargs) -> None:
    """Revoke every socket of a deleted user."""
    revoke_user(instance.pk, using=using)


def token_deleted(sender, instance, using, **kwargs) -> None:
    """Revoke the sockets opened with a deleted DRF token."""
    revoke_token(instance.user_id, instance.key, using=using)


def connect_revocation_signals() -> None:
    """Connect the receivers; called from SyncConfig.ready()."""
    from rest_framework.authtoken.models import Token

    user_model = get_user_model()
    post_save.connect(user_saved, sender=user_model, dispatch_uid="sync.user_saved")
    post_delete.connect(
        user_deleted, sender=user_model, dispatch_uid="sync.user_deleted"
    )
    post_delete.connect(token_deleted, sender=Token, dispatch_uid="sync.token_deleted")
