"""Who may call what."""

from __future__ import annotations

from rest_framework.permissions import BasePermission


class IsStaff(BasePermission):
    """Authenticated staff members only (broadcasts)."""

    message = "Only staff members may broadcast."

    def has_permission(self, request, view) -> bool:
        return bool(
            request.user and request.user.is_authenticated and request.user.is_staff
        )
