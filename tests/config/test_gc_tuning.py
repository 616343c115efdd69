"""The served application tunes the garbage collector (sync/gc_tuning.py)."""

from __future__ import annotations

from sync.ops.gc_tuning import YOUNGEST_GENERATION_THRESHOLD
from tests.config.test_settings import run_setup

REPORT = """
import gc
import config.asgi
print(gc.get_threshold()[0], gc.get_freeze_count())
"""


def test_loading_the_application_freezes_start_up_and_raises_the_threshold():
    completed = run_setup(REPORT)

    assert completed.returncode == 0, completed.stderr
    threshold, frozen = map(int, completed.stdout.split())
    assert threshold == YOUNGEST_GENERATION_THRESHOLD
    assert frozen > 10_000  # Django's modules, models and URL patterns
