"""Structured log lines: the message, then every `extra` field as key=value."""

from __future__ import annotations

import logging
import re

# Attributes every LogRecord has; anything else came from `extra=`.
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
) | {"message", "asctime"}


TOKEN_IN_QUERY = re.compile(r"(?<=[?&]token=)[^&#\s\"]*", re.IGNORECASE)


def redact_tokens(path: str) -> str:
    """`path` with the value of any ``token=`` query parameter hidden."""
    return TOKEN_IN_QUERY.sub("[redacted]", path)


class RedactTokens(logging.Filter):
    """Hide ``?token=`` values in a record's arguments (access logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_tokens(arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


class StructuredFormatter(logging.Formatter):
    """``time level logger message key=value…``, one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            key: value
            for key, value in vars(record).items()
            if key not in STANDARD_ATTRIBUTES and not key.startswith("_")
        }
        line = (
            f"{self.formatTime(record)} {record.levelname} {record.name} "
            f"{record.getMessage()}"
        )
        if fields:
            line += " " + " ".join(f"{key}={value!r}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
