"""ASGI entry point: ``uvicorn config.asgi:application`` or ``daphne …``.

HTTP goes to Django, /api/ through its lean path (``sync.http.fast_path``) with
bodies bounded; WebSocket goes through the on/off switch, the Origin check,
the per-address handshake gate, token (else session) authentication, the
per-user (or failed-attempt) handshake limit, to the consumer at /ws.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Load Django (apps, models) before importing anything that uses them.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from sync.http.body_limits import RequestBodyLimit  # noqa: E402
from sync.http.fast_path import ApiRouter  # noqa: E402
from sync.ops.daphne_compat import patch_daphne  # noqa: E402
from sync.ops.gc_tuning import tune_garbage_collector  # noqa: E402
from sync.ops.uvicorn_compat import patch_uvicorn  # noqa: E402
from sync.ws.handshake_limits import AddressGate, HandshakeLimit  # noqa: E402
from sync.ws.middleware import OriginCheck, TokenAuthMiddleware, WebsocketSwitch  # noqa: E402
from sync.ws.routing import websocket_urlpatterns  # noqa: E402

patch_daphne()
patch_uvicorn()

websocket_app = HandshakeLimit(URLRouter(websocket_urlpatterns))

application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(ApiRouter(django_asgi_app)),
        "websocket": WebsocketSwitch(
            OriginCheck(
                AddressGate(
                    TokenAuthMiddleware(
                        websocket_app, session_app=AuthMiddlewareStack(websocket_app)
                    )
                )
            )
        ),
    }
)

# Everything start-up builds exists now: see sync.ops.gc_tuning.
tune_garbage_collector()
