"""Who may use the admin pages of Realtime Sync: every active staff member.

The same rule as the broadcast API (SPEC §4), so a staff member who may
broadcast there may broadcast and watch the figures here, with no per-model
permission to grant first.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


def is_staff(request: HttpRequest) -> bool:
    """The admin's rule (and the broadcast API's): active staff members."""
    user = request.user
    return bool(user.is_active and user.is_staff)


class StaffOnlyAdmin(admin.ModelAdmin):
    """Every staff member may see these pages, as every one may broadcast."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_staff(request)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return is_staff(request)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
