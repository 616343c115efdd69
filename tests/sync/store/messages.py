"""Messages for the store tests, built as the service builds them."""

from __future__ import annotations

from sync.services.realtime import build_message


def user_message(user_id: str, number: int) -> dict:
    return build_message("item.added", {"n": number}, user_id=user_id)


def broadcast_message(number: int, topics=()) -> dict:
    return build_message("announcement", {"n": number}, topics=topics)


def numbers(messages: list[dict]) -> list[int]:
    return [message["payload"]["n"] for message in messages]


def sized_message(user_id: str | None, number: int, size: int, topics=()) -> dict:
    """A message whose payload holds `size` bytes of text."""
    payload = {"n": number, "blob": "x" * size}
    if user_id is None:
        return build_message("announcement", payload, topics=topics)
    return build_message("item.added", payload, user_id=user_id)
