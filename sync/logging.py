"""Structured log lines: the message, then every `extra` field as key=value."""

from __future__ import annotations

import logging

# Attributes every LogRecord has; anything else came from `extra=`.
STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
) | {"message", "asctime"}


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
