"""``manage.py sync_publish``: send a message through the shared store."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from sync.core import validation
from sync.core.exceptions import SyncError
from sync.core.jsontext import loads_strict
from sync.management.shared_store import (
    queue_of_user,
    shared_realtime_sync,
    store_errors,
)
from sync.models import Broadcast


def _payload(text: str) -> dict[str, Any]:
    try:
        value = loads_strict(text)
    except SyncError as error:
        message = error.message.replace("The body is", "--payload is")
        raise CommandError(f"{message} ({error.code})") from None
    with store_errors():
        validation.validate_payload(value, parsed=True)
    return value


class Command(BaseCommand):
    help = (
        "Publish a message to one user's connections, or broadcast it, through "
        "the shared (Redis) store: running servers deliver it at once. Types "
        "and payloads follow the API's rules (reserved types allowed); "
        "broadcasts are recorded in the admin's history with source command. "
        "Needs REDIS_URL: the in-memory store lives inside the server process."
    )

    def add_arguments(self, parser) -> None:
        to = parser.add_mutually_exclusive_group(required=True)
        to.add_argument("--user", metavar="ID", help="The recipient's user id.")
        to.add_argument(
            "--broadcast", action="store_true", help="Send to every connection."
        )
        parser.add_argument(
            "--type", required=True, help="Message type, e.g. data.updated."
        )
        parser.add_argument(
            "--payload", required=True, metavar="JSON", help="A JSON object."
        )
        parser.add_argument(
            "--topics",
            metavar="A,B",
            help="With --broadcast: only connections subscribed to one of these.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["user"] is not None and options["topics"] is not None:
            raise CommandError("--topics goes with --broadcast, not with --user.")
        sync = shared_realtime_sync()
        payload = _payload(options["payload"])
        with store_errors():
            if options["broadcast"]:
                topics = validation.parse_topic_list(options["topics"])
                sent = sync.broadcast(
                    options["type"], payload, topics, source=Broadcast.Source.COMMAND
                )
                audience = ", ".join(sent["topics"]) or "everyone"
                self.stdout.write(f"Broadcast {sent['id']} to {audience}.")
                return
            user_id = queue_of_user(options["user"])
            if user_id is None:
                raise CommandError(f"--user: no user has id {options['user']!r}.")
            sent = sync.publish(options["type"], payload, user_id)
            self.stdout.write(f"Published {sent['id']} to user {user_id}.")
