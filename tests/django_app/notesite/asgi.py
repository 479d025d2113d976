"""daphne serves rohrpost's own consumer here, as a Django rohrpost app does
(the user from the session cookie, as Channels' AuthMiddlewareStack does)."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notesite.settings")

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from notes.consumers import NotesConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": AuthMiddlewareStack(
            URLRouter([path("ws/rohrpost/", NotesConsumer.as_asgi())])
        ),
    }
)
