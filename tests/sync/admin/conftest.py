"""Fixtures for the tests of sync/admin."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.sync.admin.admin_pages import logged_in


@pytest.fixture
def staff_browser(staff) -> Client:
    return logged_in(staff)
