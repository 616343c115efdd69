"""Django settings, read from the environment (SPEC §1).

Every knob of Realtime Sync lives in the one ``SYNC`` dict at the bottom; the
environment only feeds it. Defaults serve a fresh machine with no other service.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_str
from sync.core.conf import DEFAULTS as SYNC_DEFAULTS
from sync.core.rates import parse_rate
from sync.ops.logging import (
    SHORT_DISALLOWED_HOST,
    WITHOUT_HANDSHAKES,
    log_level,
    server_loggers,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DJANGO_ENV = env_str("DJANGO_ENV", "development")
if DJANGO_ENV not in {"development", "production", "test"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV must be development, production or test, got {DJANGO_ENV!r}."
    )
PRODUCTION = DJANGO_ENV == "production"

# A fixed key for development only: production refuses to start with it.
DEVELOPMENT_SECRET_KEY = "django-insecure-realtime-sync-development-key"
SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if PRODUCTION and (
    SECRET_KEY == DEVELOPMENT_SECRET_KEY
    or SECRET_KEY.startswith("django-insecure")
    or len(SECRET_KEY) < 32
):
    raise ImproperlyConfigured(
        "DJANGO_ENV=production requires SECRET_KEY: a random string of at least "
        "32 characters, not the development default."
    )

DEBUG = env_bool("DEBUG", not PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "accounts",
    "sync",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise, fitted to ASGI: /static/ from the app server (sync.ops.static_files).
    "sync.ops.static_files.StaticFilesMiddleware",
    "sync.http.cors.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# Seconds a database connection is kept for reuse. The API runs its few
# queries (a token not cached yet, a session, a broadcast record) in the
# long-lived worker threads of the default pool (sync.http.fast_path), so a kept
# connection spares a connect per query: 60 s for a server database
# (PostgreSQL), health-checked before reuse. Pages and the admin keep
# Django's handler, which serves each request in a thread of its own: their
# connection is closed when that thread ends instead of being reused. SQLite
# stays at 0: opening its file costs microseconds, there is nothing to save.
IS_SQLITE = DATABASE_URL.startswith("sqlite:")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0 if IS_SQLITE else 60),
        conn_health_checks=not IS_SQLITE,
    )
}

REDIS_URL = env_str("REDIS_URL")
# Every key of the Redis message store starts with this, so instances of one
# deployment share a store and other deployments (or tests) stay apart.
SYNC_STORE_KEY_PREFIX = env_str(
    "SYNC_STORE_KEY_PREFIX", env_str("SYNC_KEY_PREFIX", "sync") + ":store:"
)

# With REDIS_URL the cache holds the rate-limit counters, shared by every
# server process (keys expire with their window; Redis runs noeviction).
# Without it they live in each process's own table (sync.services.counter_table),
# never in LocMemCache, which evicts live counters past 300 entries.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env_str("SYNC_KEY_PREFIX", "sync"),
            # A hung Redis must not hold request threads: after 2 s the
            # counter fails, and the request gets 503 store_unavailable.
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
    # The layer only carries revocations to the sockets of other processes,
    # beside the store's revocation channel (messages go through the store's
    # subscription). Pub/sub over RedisChannelLayer, as
    # measured in docs/performance.md ("Channel layer"): joins never fail in
    # a reconnect storm (one subscription connection, not a pool of 100 that
    # raises past it), sockets survive a Redis restart instead of crashing
    # on a failed BZPOPMIN, and a group_send crosses faster. A revocation
    # published while the subscription is down is lost: the heartbeat's
    # re-check closes those sockets. Pub/sub reads never block on a command,
    # so a 2 s timeout only bounds a publish to a hung Redis.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "sync.ws.channel_layer.PubSubChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 2,
                        "socket_connect_timeout": 2,
                    }
                ],
                "prefix": env_str("SYNC_KEY_PREFIX", "sync") + ":asgi",
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

PASSWORD_VALIDATION = "django.contrib.auth.password_validation"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"{PASSWORD_VALIDATION}.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `manage.py collectstatic` gathers files; optional: without it the
# static middleware serves each app's static/ folder through the finders.
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its "Token" challenge turns missing credentials into 401.
        # Cached per process for a short while (sync.services.token_cache).
        "sync.http.authentication.CachedTokenAuthentication",
        "sync.http.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["sync.http.throttling.SyncRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["sync.http.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "sync.http.exception_handler.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # 0: rate-limit anonymous callers by REMOTE_ADDR and ignore a client-supplied
    # X-Forwarded-For; set it to the number of trusted proxies in front.
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Realtime Sync API",
    "DESCRIPTION": "HTTP side of Realtime Sync: polling, sending, status, broadcast.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
}


def _networks(name: str, default: list[str]) -> list[str]:
    """Read a comma list of IP addresses or networks, each checked now."""
    values = env_list(name, default)
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: {value!r} is not an IP address or network "
                "(such as 10.0.0.5 or 10.0.0.0/8)."
            ) from None
    return values


def _rate(name: str, default: str) -> str:
    """Read a rate variable and check its format now rather than per request."""
    value = env_str(name, default)
    try:
        parse_rate(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error}") from None
    return value


SYNC = {
    "MESSAGE_TTL": env_int("SYNC_MESSAGE_TTL", SYNC_DEFAULTS["MESSAGE_TTL"], minimum=1),
    "QUEUE_MAX_MESSAGES": env_int(
        "SYNC_QUEUE_MAX_MESSAGES", SYNC_DEFAULTS["QUEUE_MAX_MESSAGES"], minimum=1
    ),
    "CLEANUP_INTERVAL": env_int(
        "SYNC_CLEANUP_INTERVAL", SYNC_DEFAULTS["CLEANUP_INTERVAL"], minimum=1
    ),
    "HEARTBEAT_INTERVAL": env_int(
        "SYNC_HEARTBEAT_INTERVAL", SYNC_DEFAULTS["HEARTBEAT_INTERVAL"], minimum=1
    ),
    "RATE_LIMIT": _rate("SYNC_RATE_LIMIT", SYNC_DEFAULTS["RATE_LIMIT"]),
    "MAX_PAYLOAD_BYTES": env_int(
        "SYNC_MAX_PAYLOAD_BYTES", SYNC_DEFAULTS["MAX_PAYLOAD_BYTES"], minimum=64
    ),
    "POLL_MAX_WAIT": env_int(
        "SYNC_POLL_MAX_WAIT", SYNC_DEFAULTS["POLL_MAX_WAIT"], minimum=0
    ),
    "MAX_PAYLOAD_NODES": env_int(
        "SYNC_MAX_PAYLOAD_NODES", SYNC_DEFAULTS["MAX_PAYLOAD_NODES"], minimum=1
    ),
    # At least one whole message fits in a poll answer, whatever its size.
    "POLL_MAX_BYTES": env_int(
        "SYNC_POLL_MAX_BYTES", SYNC_DEFAULTS["POLL_MAX_BYTES"], minimum=65536
    ),
    "WS_RATE_LIMIT": _rate("SYNC_WS_RATE_LIMIT", SYNC_DEFAULTS["WS_RATE_LIMIT"]),
    "WS_USER_RATE_LIMIT": _rate(
        "SYNC_WS_USER_RATE_LIMIT", SYNC_DEFAULTS["WS_USER_RATE_LIMIT"]
    ),
    "WS_CONNECT_RATE": _rate("SYNC_WS_CONNECT_RATE", SYNC_DEFAULTS["WS_CONNECT_RATE"]),
    "WS_ANONYMOUS_CONNECT_RATE": _rate(
        "SYNC_WS_ANONYMOUS_CONNECT_RATE", SYNC_DEFAULTS["WS_ANONYMOUS_CONNECT_RATE"]
    ),
    "LOGIN_RATE_LIMIT": _rate(
        "SYNC_LOGIN_RATE_LIMIT", SYNC_DEFAULTS["LOGIN_RATE_LIMIT"]
    ),
    "RATE_LIMIT_MAX_COUNTERS": env_int(
        "SYNC_RATE_LIMIT_MAX_COUNTERS",
        SYNC_DEFAULTS["RATE_LIMIT_MAX_COUNTERS"],
        minimum=1000,
    ),
    "WEBSOCKET_ENABLED": env_bool(
        "SYNC_WEBSOCKET_ENABLED", SYNC_DEFAULTS["WEBSOCKET_ENABLED"]
    ),
    "WS_MAX_CONNECTIONS_PER_USER": env_int(
        "SYNC_WS_MAX_CONNECTIONS_PER_USER",
        SYNC_DEFAULTS["WS_MAX_CONNECTIONS_PER_USER"],
        minimum=1,
    ),
    "WS_MAX_PENDING_BYTES": env_int(
        "SYNC_WS_MAX_PENDING_BYTES",
        SYNC_DEFAULTS["WS_MAX_PENDING_BYTES"],
        minimum=65536,
    ),
    "POLL_MAX_WAITING_PER_USER": env_int(
        "SYNC_POLL_MAX_WAITING_PER_USER",
        SYNC_DEFAULTS["POLL_MAX_WAITING_PER_USER"],
        minimum=1,
    ),
    "CORS_ALLOWED_ORIGINS": env_list(
        "SYNC_CORS_ALLOWED_ORIGINS", SYNC_DEFAULTS["CORS_ALLOWED_ORIGINS"]
    ),
    "STORE_MAX_BYTES": env_int(
        "SYNC_STORE_MAX_BYTES", SYNC_DEFAULTS["STORE_MAX_BYTES"], minimum=1_048_576
    ),
    "METRICS_ALLOW": _networks("SYNC_METRICS_ALLOW", SYNC_DEFAULTS["METRICS_ALLOW"]),
    "TOPIC_AUTHORIZER": env_str(
        "SYNC_TOPIC_AUTHORIZER", SYNC_DEFAULTS["TOPIC_AUTHORIZER"]
    ),
    "REDIS_URL": REDIS_URL,
    "MAX_REQUEST_HEAD_BYTES": env_int(
        "SYNC_MAX_REQUEST_HEAD_BYTES",
        SYNC_DEFAULTS["MAX_REQUEST_HEAD_BYTES"],
        minimum=4096,
    ),
    "REQUEST_HEAD_TIMEOUT": env_int(
        "SYNC_REQUEST_HEAD_TIMEOUT", SYNC_DEFAULTS["REQUEST_HEAD_TIMEOUT"], minimum=1
    ),
    # Read by config/servers.py for uvicorn's command line; checked here too.
    "LIMIT_CONCURRENCY": env_int(
        "SYNC_LIMIT_CONCURRENCY", SYNC_DEFAULTS["LIMIT_CONCURRENCY"], minimum=100
    ),
}

# Several worker processes on one host share their metrics through this
# directory (see sync.core.metrics); prometheus-client reads it from the
# environment, so only its existence is checked here.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not os.path.isdir(PROMETHEUS_MULTIPROC_DIR):
    raise ImproperlyConfigured(
        "PROMETHEUS_MULTIPROC_DIR must be an existing directory, got "
        f"{PROMETHEUS_MULTIPROC_DIR!r}."
    )

# JSON lines for log collectors in production, readable lines otherwise.
LOG_FORMAT = env_str("LOG_FORMAT", "json" if PRODUCTION else "text")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, got {LOG_FORMAT!r}.")
try:
    LOG_LEVEL = log_level(env_str("LOG_LEVEL", "INFO"))
except ValueError as error:
    raise ImproperlyConfigured(str(error)) from None
# One line per HTTP request and WebSocket handshake, from the ASGI server.
ACCESS_LOG = env_bool("ACCESS_LOG", True)
# Loggers that would write payloads, tokens or SQL parameters at DEBUG (the
# WebSocket library logs frames, through uvicorn.error under uvicorn;
# Django's backend logs queries with their values): never below INFO,
# whatever LOG_LEVEL says.
NEVER_DEBUG = (
    "websockets",
    "uvicorn.error",
    "django.db.backends",
    "daphne.ws_protocol",
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"()": "sync.ops.logging.StructuredFormatter"},
        "json": {"()": "sync.ops.logging.JsonFormatter"},
    },
    "filters": {
        WITHOUT_HANDSHAKES: {"()": "sync.ops.logging.WithoutHandshakeLines"},
        SHORT_DISALLOWED_HOST: {"()": "sync.ops.logging.ShortDisallowedHost"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        # One short line per request with a foreign Host, through our handler
        # only (Django's own would repeat it, or mail it to ADMINS).
        "django.security.DisallowedHost": {
            "handlers": ["console"],
            "filters": [SHORT_DISALLOWED_HOST],
            "propagate": False,
        },
        # uvicorn's own lines (access log included) in the same format,
        # keeping what uvicorn's command line chose (see server_loggers).
        **server_loggers(LOG_LEVEL, ACCESS_LOG, NEVER_DEBUG),
    },
}

if PRODUCTION:
    SESSION_COOKIE_HTTPONLY = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
