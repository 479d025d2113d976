"""daphne serves rohrpost's own consumer here, as a Django rohrpost app does."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notesite.settings")

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

django_app = get_asgi_application()

from notes.consumers import NotesConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_app,
        "websocket": URLRouter([path("ws/rohrpost/", NotesConsumer.as_asgi())]),
    }
)
