"""The ``SYNC`` settings dict with its documented defaults, read lazily.

Values are looked up on every access (never cached at import), so
``override_settings(SYNC=...)`` in tests and late configuration both work.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from sync.core.rates import Rate, parse_rate

DEFAULTS: dict[str, Any] = {
    # Seconds a message stays replayable for polling and WebSocket resume.
    "MESSAGE_TTL": 300,
    # Messages kept per queue (one per user, one for broadcasts); oldest go first.
    "QUEUE_MAX_MESSAGES": 1000,
    # Seconds between sweeps that drop expired messages from idle queues.
    "CLEANUP_INTERVAL": 60,
    # Seconds between server pings; two silent intervals close a socket (4408).
    # Each heartbeat re-checks sockets' users and tokens, and an API token is
    # trusted from a process's cache this long at most: a revocation nothing
    # announces (QuerySet.update, another host without Redis) takes effect
    # within one interval, over HTTP and WebSocket alike.
    "HEARTBEAT_INTERVAL": 30,
    # Requests per window on every /api/* route, per user (per IP if anonymous).
    "RATE_LIMIT": "1000/15m",
    # Serialized size limit of a message payload, in bytes.
    "MAX_PAYLOAD_BYTES": 65536,
    # JSON values a payload may hold in all (objects, arrays and scalars at
    # any depth); one more is refused with 400 payload_too_complex, so a
    # payload of any shape costs at most a few milliseconds to accept.
    "MAX_PAYLOAD_NODES": 10_000,
    # Longest a long poll (`wait=`) is held open, in seconds.
    "POLL_MAX_WAIT": 30,
    # Bytes of messages one poll answer holds at most (always at least one
    # message); past it the answer says hasMore. WebSocket replays are read
    # in pages of at most this size too.
    "POLL_MAX_BYTES": 1_048_576,
    # Frames each WebSocket connection may send per window.
    "WS_RATE_LIMIT": "100/10s",
    # Frames one user may send per window across all of its sockets in this
    # process; beyond it frames get `throttled` errors, at twice it the
    # socket that sends is closed with 4429.
    "WS_USER_RATE_LIMIT": "300/10s",
    # WebSocket handshakes per user per window; past it the handshake is
    # refused (HTTP 429, or 4429 right after accept where the server cannot
    # answer a handshake with a status).
    "WS_CONNECT_RATE": "120/1m",
    # Handshakes that fail to authenticate (no credentials, a bad token or
    # session), per client address; past it that address's handshakes are
    # refused as above before any token is looked up in the database.
    "WS_ANONYMOUS_CONNECT_RATE": "60/1m",
    # Failed logins per client address and per username (browser, admin and
    # token endpoint together); past it a login is refused with 429 before
    # the password is checked, until the window ends.
    "LOGIN_RATE_LIMIT": "10/15m",
    # Live rate-limit counters each in-process table may hold (one table per
    # kind of limit, five in all; all but the per-user frame counters go to
    # Redis instead when it is configured). Full of live windows, a new caller
    # is counted on one counter shared by all new callers (so may be refused
    # early); no caller already counted is ever reset. ~100 bytes each.
    "RATE_LIMIT_MAX_COUNTERS": 100_000,
    # False serves no WebSocket at all (to exercise the polling fallback).
    "WEBSOCKET_ENABLED": True,
    # Open sockets one user may hold; one more is closed with 4429.
    "WS_MAX_CONNECTIONS_PER_USER": 50,
    # Unsent output one socket may hold; past it the socket is closed with
    # 4413 (slow consumer) and resumes by cursor once it reconnects.
    "WS_MAX_PENDING_BYTES": 1_048_576,
    # Long polls one user may keep waiting at once; one more gets 429.
    "POLL_MAX_WAITING_PER_USER": 20,
    # Origins allowed cross-origin (CORS on /api/, WebSocket Origin check).
    "CORS_ALLOWED_ORIGINS": [],
    # Bytes all queues of the in-memory store may hold together; past it the
    # oldest messages go first and readers behind them get gap/recovered=false.
    "STORE_MAX_BYTES": 268_435_456,
    # Who may read /metrics besides staff: a list of client IPs (unset: staff).
    "METRICS_ALLOW": [],
    # Dotted path to f(user, topic) -> bool, asked on every subscription.
    "TOPIC_AUTHORIZER": None,
    # Set: store, channel layer and cache live in Redis, shared by all instances.
    "REDIS_URL": None,
    # Bytes a request line and its headers may take (WebSocket handshakes
    # too); past it the server answers 431 and closes the connection.
    "MAX_REQUEST_HEAD_BYTES": 65536,
    # Seconds a connection may take to send a whole request head, from when
    # it opens or its last answer was sent; past it the server answers 408
    # (or just closes an idle connection).
    "REQUEST_HEAD_TIMEOUT": 10,
    # uvicorn's --limit-concurrency: once a process holds this many connections
    # (sockets included) or tasks, new HTTP requests get 503. Generous: 10,000
    # sockets per process must stay possible (raise the open-file limit too).
    "LIMIT_CONCURRENCY": 20000,
}

# Most topics a connection or poll may name, and the nesting depth of payloads.
MAX_TOPICS = 64
MAX_PAYLOAD_DEPTH = 32


class SyncSettings:
    """Attribute access to ``settings.SYNC`` with defaults filled in."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown SYNC setting {name!r}.")
        return getattr(settings, "SYNC", {}).get(name, DEFAULTS[name])

    @property
    def rate_limit(self) -> Rate:
        """The HTTP rate limit, parsed."""
        return parse_rate(self.RATE_LIMIT)

    @property
    def ws_rate_limit(self) -> Rate:
        """The per-connection WebSocket frame rate limit, parsed."""
        return parse_rate(self.WS_RATE_LIMIT)

    @property
    def ws_user_rate_limit(self) -> Rate:
        """The per-user WebSocket frame rate limit, parsed."""
        return parse_rate(self.WS_USER_RATE_LIMIT)

    @property
    def ws_connect_rate(self) -> Rate:
        """WebSocket handshakes per user, parsed."""
        return parse_rate(self.WS_CONNECT_RATE)

    @property
    def ws_anonymous_connect_rate(self) -> Rate:
        """Failed WebSocket handshakes per client address, parsed."""
        return parse_rate(self.WS_ANONYMOUS_CONNECT_RATE)

    @property
    def login_rate_limit(self) -> Rate:
        """Failed logins per address and per username, parsed."""
        return parse_rate(self.LOGIN_RATE_LIMIT)


sync_settings = SyncSettings()
