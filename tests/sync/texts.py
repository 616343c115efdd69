"""JSON text that hostile clients send, for the tests of every entry point."""

from __future__ import annotations

# JSON text (not Python) escapes: what a hostile client puts on the wire.
LONE = "\\udc00"
