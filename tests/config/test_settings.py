"""Start-up configuration from the environment (SPEC §1), one process per case.

Each case runs ``django.setup()`` with ``config.settings`` in a fresh
interpreter whose environment holds only the variables the case sets, so the
developer's shell (or tests.settings) cannot leak in.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SETUP = (
    "import django, os; "
    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); "
    "django.setup()"
)
REPORT = """
import json
from django.conf import settings
from sync.core.conf import sync_settings
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "ENGINE": settings.DATABASES["default"]["ENGINE"],
    "DATABASE": {
        key: settings.DATABASES["default"][key]
        for key in ("NAME", "USER", "HOST", "PORT")
    },
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
    "CHANNEL_LAYER": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "CACHE": settings.CACHES["default"]["BACKEND"],
    "SYNC": settings.SYNC,
    "sync_settings": {key: getattr(sync_settings, key) for key in settings.SYNC},
}))
"""
CONFIG_PREFIXES = ("SYNC_", "DJANGO_", "DATABASE_")
CONFIG_NAMES = frozenset(
    {
        "ACCESS_LOG",
        "ALLOWED_HOSTS",
        "DEBUG",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "NUM_PROXIES",
        "REDIS_URL",
        "SECRET_KEY",
    }
)
DEVELOPMENT_SECRET_KEY = "django-insecure-realtime-sync-development-key"
# SPEC §1: the documented defaults of the SYNC dict.
SPEC_DEFAULTS = {
    "MESSAGE_TTL": 300,
    "QUEUE_MAX_MESSAGES": 1000,
    "CLEANUP_INTERVAL": 60,
    "HEARTBEAT_INTERVAL": 30,
    "RATE_LIMIT": "1000/15m",
    "MAX_PAYLOAD_BYTES": 65536,
    "MAX_PAYLOAD_NODES": 10000,
    "POLL_MAX_WAIT": 30,
    "POLL_MAX_BYTES": 1048576,
    "WS_RATE_LIMIT": "100/10s",
    "WS_USER_RATE_LIMIT": "300/10s",
    "WS_CONNECT_RATE": "120/1m",
    "WS_ANONYMOUS_CONNECT_RATE": "60/1m",
    "LOGIN_RATE_LIMIT": "10/15m",
    "RATE_LIMIT_MAX_COUNTERS": 100000,
    "WEBSOCKET_ENABLED": True,
    "WS_MAX_CONNECTIONS_PER_USER": 50,
    "WS_MAX_PENDING_BYTES": 1048576,
    "POLL_MAX_WAITING_PER_USER": 20,
    "CORS_ALLOWED_ORIGINS": [],
    "STORE_MAX_BYTES": 268435456,
    "METRICS_ALLOW": [],
    "TOPIC_AUTHORIZER": None,
    "REDIS_URL": None,
    "MAX_REQUEST_HEAD_BYTES": 65536,
    "REQUEST_HEAD_TIMEOUT": 10,
    "LIMIT_CONCURRENCY": 20000,
}


def random_key(length: int) -> str:
    return "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(length)
    )


def run_setup(
    code: str = "", before: str = "", **env: str
) -> subprocess.CompletedProcess:
    """`before`, ``django.setup()`` then `code`, with only `env` as configuration."""
    child_env = {
        name: value
        for name, value in os.environ.items()
        if name not in CONFIG_NAMES and not name.startswith(CONFIG_PREFIXES)
    }
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", before + "\n" + SETUP + "\n" + code],
        cwd=PROJECT_ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def started(**env: str) -> dict:
    """Settings of a process that started with `env` (fails if it did not)."""
    completed = run_setup(REPORT, **env)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


def refusal(**env: str) -> str:
    """The ImproperlyConfigured message of a process that refused `env`."""
    completed = run_setup(**env)
    assert completed.returncode != 0, "the process started"
    prefix = "django.core.exceptions.ImproperlyConfigured: "
    lines = [line for line in completed.stderr.splitlines() if line.startswith(prefix)]
    assert lines, completed.stderr
    return lines[-1].removeprefix(prefix)


def test_development_by_default_with_debug_on_and_spec_defaults():
    config = started()

    assert config["DEBUG"] is True
    assert "sqlite3" in config["ENGINE"]
    assert config["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1"]
    assert config["CHANNEL_LAYER"] == "channels.layers.InMemoryChannelLayer"
    assert config["SYNC"] == SPEC_DEFAULTS
    assert config["sync_settings"] == SPEC_DEFAULTS


def test_production_without_secret_key_refuses_to_start():
    assert "SECRET_KEY" in refusal(DJANGO_ENV="production")


@pytest.mark.parametrize(
    "secret_key",
    [DEVELOPMENT_SECRET_KEY, "django-insecure-" + random_key(50), random_key(16)],
    ids=["development-default", "django-insecure", "short"],
)
def test_production_refuses_a_weak_secret_key(secret_key):
    message = refusal(DJANGO_ENV="production", SECRET_KEY=secret_key)

    assert "SECRET_KEY" in message


def test_production_with_a_random_secret_key_starts_with_debug_off():
    config = started(DJANGO_ENV="production", SECRET_KEY=random_key(50))

    assert config["DEBUG"] is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SYNC_MESSAGE_TTL", "abc"),
        ("SYNC_RATE_LIMIT", "lots"),
        ("SYNC_WS_RATE_LIMIT", "fast"),
        ("SYNC_WS_USER_RATE_LIMIT", "300"),
        ("SYNC_WS_CONNECT_RATE", "0/1m"),
        ("SYNC_WS_ANONYMOUS_CONNECT_RATE", "60/1w"),
        ("SYNC_LOGIN_RATE_LIMIT", "ten/15m"),
        ("SYNC_RATE_LIMIT_MAX_COUNTERS", "10"),
        ("SYNC_POLL_MAX_WAIT", "-1"),
        ("SYNC_HEARTBEAT_INTERVAL", "0"),
        ("SYNC_WEBSOCKET_ENABLED", "maybe"),
        ("SYNC_MAX_REQUEST_HEAD_BYTES", "1024"),
        ("SYNC_REQUEST_HEAD_TIMEOUT", "0"),
        ("SYNC_LIMIT_CONCURRENCY", "many"),
    ],
)
def test_a_bad_value_refuses_to_start_naming_the_variable(name, value):
    message = refusal(**{name: value})

    assert name in message
    assert value in message


def test_database_url_selects_postgres_without_connecting():
    config = started(DATABASE_URL="postgres://sync:pw@db.invalid:5433/realtime")

    assert "postgresql" in config["ENGINE"]
    assert config["DATABASE"] == {
        "NAME": "realtime",
        "USER": "sync",
        "HOST": "db.invalid",
        "PORT": 5433,
    }


def test_redis_url_moves_the_channel_layer_and_rate_limit_cache_to_redis():
    redis_url = "redis://redis.invalid:6379/3"
    config = started(REDIS_URL=redis_url)

    assert config["CHANNEL_LAYER"] == "sync.ws.channel_layer.PubSubChannelLayer"
    assert "redis" in config["CACHE"].lower()
    assert config["SYNC"]["REDIS_URL"] == redis_url


def test_sync_settings_follow_the_environment():
    config = started(
        SYNC_MESSAGE_TTL="42",
        SYNC_QUEUE_MAX_MESSAGES="10",
        SYNC_CLEANUP_INTERVAL="5",
        SYNC_HEARTBEAT_INTERVAL="3",
        SYNC_RATE_LIMIT="50/1m",
        SYNC_MAX_PAYLOAD_BYTES="2048",
        SYNC_POLL_MAX_WAIT="7",
        SYNC_MAX_PAYLOAD_NODES="500",
        SYNC_POLL_MAX_BYTES="100000",
        SYNC_WS_RATE_LIMIT="20/5s",
        SYNC_WS_USER_RATE_LIMIT="40/5s",
        SYNC_WS_CONNECT_RATE="30/1m",
        SYNC_WS_ANONYMOUS_CONNECT_RATE="6/1m",
        SYNC_LOGIN_RATE_LIMIT="5/1h",
        SYNC_RATE_LIMIT_MAX_COUNTERS="5000",
        SYNC_WEBSOCKET_ENABLED="false",
        SYNC_WS_MAX_CONNECTIONS_PER_USER="5",
        SYNC_WS_MAX_PENDING_BYTES="131072",
        SYNC_POLL_MAX_WAITING_PER_USER="3",
        SYNC_CORS_ALLOWED_ORIGINS="https://app.example.com, https://b.example.com",
        SYNC_STORE_MAX_BYTES="2097152",
        SYNC_METRICS_ALLOW="10.0.0.1",
        SYNC_TOPIC_AUTHORIZER="myapp.auth.can_follow",
        SYNC_MAX_REQUEST_HEAD_BYTES="32768",
        SYNC_REQUEST_HEAD_TIMEOUT="4",
        SYNC_LIMIT_CONCURRENCY="5000",
    )

    expected = {
        "MESSAGE_TTL": 42,
        "QUEUE_MAX_MESSAGES": 10,
        "CLEANUP_INTERVAL": 5,
        "HEARTBEAT_INTERVAL": 3,
        "RATE_LIMIT": "50/1m",
        "MAX_PAYLOAD_BYTES": 2048,
        "MAX_PAYLOAD_NODES": 500,
        "POLL_MAX_WAIT": 7,
        "POLL_MAX_BYTES": 100000,
        "WS_RATE_LIMIT": "20/5s",
        "WS_USER_RATE_LIMIT": "40/5s",
        "WS_CONNECT_RATE": "30/1m",
        "WS_ANONYMOUS_CONNECT_RATE": "6/1m",
        "LOGIN_RATE_LIMIT": "5/1h",
        "RATE_LIMIT_MAX_COUNTERS": 5000,
        "WEBSOCKET_ENABLED": False,
        "WS_MAX_CONNECTIONS_PER_USER": 5,
        "WS_MAX_PENDING_BYTES": 131072,
        "POLL_MAX_WAITING_PER_USER": 3,
        "CORS_ALLOWED_ORIGINS": ["https://app.example.com", "https://b.example.com"],
        "STORE_MAX_BYTES": 2097152,
        "METRICS_ALLOW": ["10.0.0.1"],
        "TOPIC_AUTHORIZER": "myapp.auth.can_follow",
        "REDIS_URL": None,
        "MAX_REQUEST_HEAD_BYTES": 32768,
        "REQUEST_HEAD_TIMEOUT": 4,
        "LIMIT_CONCURRENCY": 5000,
    }
    assert config["SYNC"] == expected
    assert config["sync_settings"] == expected


# Database connections ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "max_age", "health_checks"),
    [("sqlite:////tmp/x.sqlite3", 0, False), ("postgres://u:p@db.invalid/x", 60, True)],
)
def test_database_connections_are_kept_only_for_a_server_database(
    url, max_age, health_checks
):
    code = (
        "import django, os; django.setup(); from django.conf import settings; "
        "db = settings.DATABASES['default']; "
        "print(db['CONN_MAX_AGE'], db['CONN_HEALTH_CHECKS'])"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": url,
    }
    output = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert output == [str(max_age), str(health_checks)]
