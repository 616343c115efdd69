"""ASGI entry point: ``daphne config.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Load Django (apps, models) before importing anything that uses them.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from sync.asgi_limits import RequestBodyLimit  # noqa: E402

application = ProtocolTypeRouter({"http": RequestBodyLimit(django_asgi_app)})
