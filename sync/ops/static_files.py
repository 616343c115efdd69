"""Static files (the dashboard's script and styles, the admin's) from the app server.

``make run`` serves with uvicorn, not ``runserver``, so nothing else would
serve ``/static/``. WhiteNoise does, in development and production alike; this
subclass fits it to an ASGI server:

- it is async-capable, so a static request costs no thread hop in Django's
  async handler, and it sends the file as an async iterator read in a worker
  thread (stock WhiteNoise hands Django a sync iterator, which Django's ASGI
  handler reads whole in a thread and warns about on every request);
- it serves the apps' ``static/`` folders through the finders
  (``WHITENOISE_USE_FINDERS``), so no ``collectstatic`` is needed; a missing
  ``STATIC_ROOT`` (``collectstatic`` never run) is skipped instead of warned.

/api/ never reaches it: the lean handler (``sync.http.fast_path``) has its own
middleware list.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import BinaryIO

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from whitenoise.middleware import WhiteNoiseMiddleware

# Bytes read per worker-thread hop; Django's FileResponse uses the same.
BLOCK_BYTES = 4096


async def read_in_thread(file: BinaryIO, block_bytes: int) -> AsyncIterator[bytes]:
    """The file's bytes, block by block, each read off the event loop."""
    read = sync_to_async(file.read, thread_sensitive=False)
    while block := await read(block_bytes):
        yield block


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, sync and async, streaming files asynchronously under ASGI."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response=None, settings=settings) -> None:
        super().__init__(get_response, settings)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def add_files(self, root, prefix=None) -> None:
        """Skip a STATIC_ROOT that ``collectstatic`` has not created (yet)."""
        if self.autorefresh or os.path.isdir(root):
            super().add_files(root, prefix)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        static_file = self.static_file_for(request)
        if static_file is None:
            return await self.get_response(request)
        response = self.serve(static_file, request)
        file = getattr(response, "file_to_stream", None)
        if file is not None:
            # Closing stays with the response (FileResponse registered it).
            response.streaming_content = read_in_thread(file, BLOCK_BYTES)
        return response

    def static_file_for(self, request: HttpRequest):
        """The file `request` asks for, or None (then Django handles it)."""
        if self.autorefresh:
            return self.find_file(request.path_info)
        return self.files.get(request.path_info)
