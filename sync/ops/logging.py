"""Log lines: readable ``key=value`` text in development, JSON in production.

Both formatters add every ``extra`` field (user_id, connection_id, code, …)
and hide credentials as a last line of defence: the value of any query
parameter whose name, percent-decoded, contains ``token`` in any case
(``?token=``, ``?to%6Ben=``, ``?TOKEN=``…) and the key after ``Token`` are
redacted from the whole line, whichever library logged it. Payloads are
kept out at the source: nothing here logs one, and settings cap the
libraries that would at DEBUG (see config/settings.py).
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from enum import Enum
from typing import Any
from urllib.parse import unquote

# Attributes every LogRecord has; anything else came from `extra=`.
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
) | {"message", "asctime", "color_message"}  # uvicorn's coloured duplicate


# A query parameter as a log line shows it: the separator before it, its
# name as sent, and its value. Neither may hold a separator ("?" included):
# each match then starts at one separator and ends before the next, so a
# line is scanned in linear time, whatever it holds (a name allowed to run
# over "?"s made a line of "?a?a?a…" cost quadratic time: seconds).
QUERY_PARAMETER = re.compile(r"([?&;])([^=?&;#\s\"'\\]+)=([^?&;#\s\"'\\]*)")
# A name that decodes to "token" holds "oken" in some case, or escapes one of
# its letters (%74 t, %6F o, %6B k, %65 e, %6E n, either case) or a "%"
# (%25, encoded twice). A line with neither, lowered, has no token to hide.
ESCAPED_TOKEN_LETTER = re.compile(r"%(?:[46][5bef]|[57]4|25)")
# Names are decoded again while they change ("%2574oken" -> "%74oken" ->
# "token"), a few times at most.
MAX_NAME_DECODINGS = 4
# "Authorization: Token <key>" (DRF keys are 40 hex digits; any long word here).
TOKEN_IN_HEADER = re.compile(r"(?<=\bToken )[A-Za-z0-9_\-]{16,}")
REDACTED = "[redacted]"
# Longest text a log line keeps from one source (a request line may be 64
# kB): a client cannot make every line it causes a long one, and redaction
# has a short text to scan.
MAX_LOGGED_CHARS = 4096
# Enough of a refused Host header to recognise it; a header may be long.
LOGGED_HOST_CHARS = 100


def redact_tokens(text: str) -> str:
    """`text` with token query values and ``Token <key>`` keys hidden.

    The server decodes parameter names (``?to%6Ben=<key>`` authenticates like
    ``?token=<key>``), so names are compared decoded and case-insensitively;
    any name containing "token" is hidden, spellings that do not log in too,
    and so is a value that decodes to a URL with one. Text past
    ``MAX_LOGGED_CHARS`` is cut off first.
    """
    if len(text) > MAX_LOGGED_CHARS:
        cut = len(text) - MAX_LOGGED_CHARS
        text = f"{text[:MAX_LOGGED_CHARS]}…[{cut} more characters]"
    lowered = text.lower()  # the common case: two substring searches
    if "oken" not in lowered and (
        "%" not in lowered or ESCAPED_TOKEN_LETTER.search(lowered) is None
    ):
        return text
    return TOKEN_IN_HEADER.sub(REDACTED, QUERY_PARAMETER.sub(_redacted_token, text))


def redact_traceback(text: str) -> str:
    """A traceback cut to its last ``MAX_LOGGED_CHARS`` (where the error is
    named), tokens hidden."""
    if len(text) > MAX_LOGGED_CHARS:
        cut = len(text) - MAX_LOGGED_CHARS
        text = f"[{cut} characters cut]…{text[-MAX_LOGGED_CHARS:]}"
    return redact_tokens(text)


def _redacted_token(parameter: re.Match) -> str:
    separator, name, value = parameter[1], parameter[2], parameter[3]
    if "token" in decoded_name(name).lower():
        return f"{separator}{name}={REDACTED}"
    # A URL carried in a value (a login's ?next=/%3Ftoken%3D<key>).
    if "token" in decoded_name(value).lower():
        return f"{separator}{name}={REDACTED}"
    return parameter[0]


def decoded_name(name: str) -> str:
    """A query parameter's name, percent-decoded until it no longer changes."""
    for _ in range(MAX_NAME_DECODINGS):
        if "%" not in name:
            break
        decoded = unquote(name)
        if decoded == name:
            break
        name = decoded
    return name


class LogStream:
    """A file-like target that turns each line written into a log record.

    daphne writes its access log straight to stdout; through this it takes
    the configured format (JSON in production) like every other line.
    """

    def __init__(self, logger_name: str) -> None:
        self.logger = logging.getLogger(logger_name)

    def write(self, text: str) -> None:
        for line in text.splitlines():
            if line.strip():
                self.logger.info("%s", redact_tokens(line))

    def flush(self) -> None:
        """Nothing is buffered here."""


class RedactTokens(logging.Filter):
    """Hide ``?token=`` values in a record's arguments (access logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_tokens(arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


class ShortDisallowedHost(logging.Filter):
    """One short line for a request whose ``Host`` is not in ALLOWED_HOSTS.

    Django logs each at ERROR with a 2 KB traceback and the host twice,
    however long it is, and anyone can send such requests. The line keeps
    the host (truncated) and the client's address, at WARNING: the mistake
    is the client's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(getattr(record, "request", None), "META", {})
        record.__dict__.pop("request", None)  # its repr shows the whole path
        record.msg, record.args = "disallowed host", ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.host = str(meta.get("HTTP_HOST", ""))[:LOGGED_HOST_CHARS]
        record.client = meta.get("REMOTE_ADDR")
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed as ``extra=`` (a protocol enum as its value)."""
    return {
        key: value.value if isinstance(value, Enum) else value
        for key, value in vars(record).items()
        if key not in STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class StructuredFormatter(logging.Formatter):
    """``time level logger message key=value…``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        fields = extra_fields(record)
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name} "
            f"{record.getMessage()}"
        )
        if fields:
            line += " " + " ".join(f"{key}={value!r}" for key, value in fields.items())
        line = redact_tokens(line)
        if record.exc_info:
            line += "\n" + redact_traceback(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the extras.

    For log collectors: a traceback stays inside its record (``exc_info``)
    instead of spilling over several lines.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        # Redacted before encoding, so the line stays valid JSON.
        entry = {key: _redacted(value) for key, value in entry.items()}
        if record.exc_info:
            entry["exc_info"] = redact_traceback(self.formatException(record.exc_info))
        return json.dumps(
            entry,
            default=str,
            ensure_ascii=False,
        )


def _redacted(value: Any) -> Any:
    """A value for a JSON line: text redacted, other types as they are."""
    if isinstance(value, str):
        return redact_tokens(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_tokens(str(value))


def _iso_time(created: float) -> str:
    """UTC, to the millisecond: 2026-11-29T16:20:40.123Z."""
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Other names Python's logging accepts for two of them.
LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}
# A logger entry that writes nothing.
SILENT = {"handlers": [], "level": "WARNING", "propagate": False}
# The LOGGING filter names of WithoutHandshakeLines and ShortDisallowedHost.
WITHOUT_HANDSHAKES = "without_handshake_lines"
SHORT_DISALLOWED_HOST = "short_disallowed_host"


def log_level(name: str) -> str:
    """The canonical level for LOG_LEVEL `name`; ValueError if unknown."""
    level = LEVEL_ALIASES.get(name.upper(), name.upper())
    if level not in LEVELS:
        raise ValueError(f"LOG_LEVEL must be one of {', '.join(LEVELS)}, got {name!r}.")
    return level


# What the websockets library logs through ``uvicorn.error`` for every
# handshake under uvicorn's websockets-sansio protocol.
WEBSOCKETS_HANDSHAKE_MESSAGES = frozenset(
    {"connection open", "connection rejected (%d %s)", "HTTP response sent (%d %s)"}
)


class WithoutHandshakeLines(logging.Filter):
    """Drop uvicorn's lines per WebSocket handshake (``"WebSocket /ws" …``).

    uvicorn writes them through ``uvicorn.error``, not its access logger (and
    so does the websockets library it drives: "connection open"), so turning
    the access log off would otherwise leave a line or two per socket.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.startswith('%s - "WebSocket %s"')
            or message in WEBSOCKETS_HANDSHAKE_MESSAGES
        )


def server_loggers(level: str, access_log: bool, never_debug=()) -> dict[str, dict]:
    """LOGGING entries for the ASGI servers' loggers, in our format.

    Django applies LOGGING after uvicorn applied its command line, so plain
    entries would undo ``--no-access-log`` and ``--log-level``. Here an access
    log that uvicorn silenced stays silent, and a level that uvicorn set stays
    when it is stricter than ours. ``access_log=False`` (``ACCESS_LOG=false``)
    silences both servers' access logs and uvicorn's handshake lines: on a
    busy server, a line per request made long polls a third slower. The
    `never_debug` loggers log at INFO at most verbose.
    """
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_silenced = not uvicorn_access.handlers and not uvicorn_access.propagate
    quiet = not access_log or uvicorn_silenced
    entries = {
        "uvicorn": {"handlers": ["console"], "level": level, "propagate": False},
        **{name: {"level": _stricter(name, level, "INFO")} for name in never_debug},
    }
    if quiet:
        entries.setdefault("uvicorn.error", {})["filters"] = [WITHOUT_HANDSHAKES]
        entries["uvicorn.access"] = SILENT
    else:
        entries["uvicorn.access"] = {
            "handlers": ["console"],
            "level": _stricter("uvicorn.access", level),
            "propagate": False,
        }
    if not access_log:  # daphne's goes through LogStream, see daphne_compat
        entries["daphne.access"] = SILENT
    return entries


def _stricter(name: str, *levels: str) -> str:
    """The highest of `levels` and the level logger `name` already has."""
    current = logging.getLogger(name).level
    return logging.getLevelName(max(current, *map(logging.getLevelName, levels)))
