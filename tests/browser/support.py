"""What the browser tests need from outside, and what they do without it."""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def skip_or_fail(flag: str, reason: str) -> None:
    """Skip for `reason`, or fail when the CI flag `flag` requires the thing."""
    if os.environ.get(flag) == "1":
        pytest.fail(f"{flag}=1 but {reason}")
    pytest.skip(reason, allow_module_level=True)


def playwright_api() -> ModuleType:
    """``playwright.sync_api``; skip (or fail, in CI) when it is not installed."""
    try:
        from playwright import sync_api
    except ImportError:
        skip_or_fail(
            "SYNC_REQUIRE_BROWSER",
            "the playwright package is missing (pip install -r requirements.txt)",
        )
    return sync_api
