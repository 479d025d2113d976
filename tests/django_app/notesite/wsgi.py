"""gunicorn serves the app here: the rohrpost bridge's views for the host's
proxy plugin."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notesite.settings")

application = get_wsgi_application()
