"""``manage.py sync_stats [--json]``: the figures of the shared store."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from sync.management.shared_store import shared_realtime_sync, store_errors
from sync.services.monitoring import snapshot


def _queue_name(row: dict[str, Any]) -> str:
    if row["queue"] == "broadcast":
        return "broadcasts"
    known = f" ({row['username']})" if row["username"] else ""
    return f"user {row['queue']}{known}"


class Command(BaseCommand):
    help = (
        "Print the cluster's figures: open WebSocket connections, queues and "
        "messages stored, the largest queues and the live server instances. "
        "Needs REDIS_URL: the in-memory store lives inside the server process."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--json",
            action="store_true",
            help="Print the figures as one JSON object (the admin monitor's).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sync = shared_realtime_sync()
        with store_errors():
            figures = snapshot(sync)
        # This process serves no socket: its own figures would only confuse.
        del figures["thisProcess"]
        if options["json"]:
            self.stdout.write(json.dumps(figures, indent=2))
        else:
            self.stdout.write("\n".join(self._lines(figures)))

    @staticmethod
    def _lines(figures: dict[str, Any]) -> list[str]:
        websocket = figures["status"]["websocket"]
        polling = figures["status"]["polling"]
        lines = [
            f"Store: {figures['store']['backend']}",
            f"WebSocket connections: {websocket['connections']} open, "
            f"{websocket['totalConnections']} opened since start, "
            f"{websocket['subscriptions']} topic subscriptions",
            f"Queues: {polling['queues']} holding {polling['messages']} messages",
            "Largest queues:",
        ]
        lines += [
            f"  {_queue_name(row):<24} {row['messages']}"
            for row in figures["queues"]["largest"]
        ] or ["  (none)"]
        lines.append("Live instances:")
        lines += [
            f"  {row['instanceId']}  {row['connections']} connections, "
            f"{row['subscriptions']} subscriptions"
            for row in figures["instances"]
        ] or ["  (none reported in the last 15 s)"]
        return lines
