"""Server-side handlers of messages sent over HTTP, run after the answer.

``POST /api/sync/send`` answers as soon as the message is stored and
delivered; the handlers registered for its type (``@message_handler``) then
run in a task of their own, in order per user, so a slow handler never
delays the answer and two sends of one user reach the handlers in the order
they were accepted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sync.services.handlers import HandlersBusy, arun_handlers, handlers_for


class HttpHandlerRuns:
    """Handler runs still to finish, one chain of tasks per user.

    Bound: ``MAX_PENDING`` sends whose handlers have not finished, in this
    process. One more send of a type that has handlers is refused with 429
    ``throttled`` before it is stored, so nothing accepted is dropped.
    """

    MAX_PENDING = 1000

    def __init__(self) -> None:
        self._last_by_user: dict[Any, asyncio.Task[None]] = {}
        self._pending = 0

    def check_room(self, message_type: str) -> None:
        """Raise HandlersBusy if a message of this type could not be queued."""
        if handlers_for(message_type) and self._pending >= self.MAX_PENDING:
            raise HandlersBusy(details={"limit": self.MAX_PENDING})

    def submit(self, message: dict[str, Any], user: Any) -> None:
        """Run the handlers of an accepted message after the user's earlier ones."""
        if not handlers_for(message["type"]):
            return
        earlier = self._last_by_user.get(user.pk)
        task = asyncio.ensure_future(_run_after(earlier, message, user))
        self._last_by_user[user.pk] = task
        self._pending += 1
        task.add_done_callback(lambda done: self._finished(user.pk, done))

    def _finished(self, user_id: Any, task: asyncio.Task[None]) -> None:
        self._pending -= 1
        if self._last_by_user.get(user_id) is task:
            del self._last_by_user[user_id]


async def _run_after(
    earlier: asyncio.Task[None] | None, message: dict[str, Any], user: Any
) -> None:
    # A task of a closed loop (sync test client: one loop per request) is done.
    if earlier is not None and not earlier.done():
        await asyncio.wait({earlier})
    await arun_handlers(message, user)  # logs a failing handler, never raises


http_handler_runs = HttpHandlerRuns()
