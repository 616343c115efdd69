"""python-socketio's AsyncServer as an ASGI app (served by uvicorn), stock options.

``POST /trigger`` with a JSON body emits it as event ``msg`` to every client.
"""

from __future__ import annotations

import json

import socketio

sio = socketio.AsyncServer(async_mode="asgi")


async def read_body(receive) -> bytes:
    """The whole request body."""
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            return body


async def http_app(scope, receive, send) -> None:
    """POST /trigger emits its body to everyone; anything else is a 404."""
    body = await read_body(receive)
    status, answer = 404, b"{}"
    if scope["path"] == "/trigger" and scope["method"] == "POST":
        await sio.emit("msg", json.loads(body))
        status, answer = 200, b'{"ok":true}'
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


application = socketio.ASGIApp(sio, other_asgi_app=http_app)
