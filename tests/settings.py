"""Test settings: the embedded defaults, whatever the environment says.

Tests that need Redis read its address from ``TEST_REDIS_URL`` (from
REDIS_URL, default db 15) and set it up themselves; nothing else touches it.
"""

import os

from config.settings import *  # noqa: F403

TEST_REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
SYNC = {**SYNC, "REDIS_URL": None}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
