"""``manage.py sync_purge``: drop queued messages from the shared store."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from sync.management.shared_store import (
    queue_of_user,
    shared_realtime_sync,
    store_errors,
)

NOTHING_CHOSEN = (
    "Say what to purge: --user ID (that user's queue), --all (every queue, "
    "broadcasts included) or --expired (expired messages of every queue); "
    "--expired with --user keeps that queue's live messages. Add --dry-run "
    "to count first."
)


class Command(BaseCommand):
    help = (
        "Drop queued messages from the shared (Redis) store. Clients reading "
        "behind purged messages get gap: true (recovered: false) and reload. "
        "Needs REDIS_URL: the in-memory store lives inside the server process."
    )

    def add_arguments(self, parser) -> None:
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--user", metavar="ID", help="Purge this user's queue.")
        which.add_argument(
            "--all", action="store_true", help="Purge every queue, broadcasts too."
        )
        parser.add_argument(
            "--expired",
            action="store_true",
            help="Drop only expired messages (alone: from every queue).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be dropped; drop nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user_id = options["user"]
        if user_id is None and not (options["all"] or options["expired"]):
            raise CommandError(NOTHING_CHOSEN)
        if user_id is not None and not user_id.strip():
            raise CommandError("--user needs a user id.")
        if user_id is not None:  # a deleted user's queue can still be purged
            user_id = queue_of_user(user_id) or user_id.strip()
        sync = shared_realtime_sync()
        with store_errors():
            count = sync.store.purge_messages(
                user_id,
                expired_only=options["expired"],
                dry_run=options["dry_run"],
            )
        self.stdout.write(self._report(count, user_id, options))

    @staticmethod
    def _report(count: int, user_id: str | None, options: dict[str, Any]) -> str:
        kind = "expired message" if options["expired"] else "message"
        plural = "" if count == 1 else "s"
        where = f"user {user_id}'s queue" if user_id else "every queue"
        if options["dry_run"]:
            return f"Would drop {count} {kind}{plural} from {where} (dry run)."
        return f"Dropped {count} {kind}{plural} from {where}."
