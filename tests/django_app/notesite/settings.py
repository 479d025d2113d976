"""Settings from the environment: which channels_redis layer, which Redis
database and prefix, which sqlite file (each test has its own), and the
secret the host's proxy sends to the rohrpost bridge."""
import os

SECRET_KEY = "not-a-secret: test app"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
    "rohrpost_bridge",
    "notes.apps.NotesConfig",
]
ROOT_URLCONF = "notesite.urls"
ASGI_APPLICATION = "notesite.asgi.application"
WSGI_APPLICATION = "notesite.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("NOTES_DB", "notes.sqlite3"),
    }
}

_LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _LAYERS[os.environ.get("NOTES_LAYER", "pubsub")],
        "CONFIG": {
            # One URL, or several (comma-separated): channels_redis shards
            # groups and channels over them.
            "hosts": os.environ.get("NOTES_REDIS", "redis://127.0.0.1:6379/0").split(","),
            "prefix": os.environ.get("NOTES_PREFIX", "asgi"),
        },
    }
}

# The same handlers, served to the host's proxy plugin (gunicorn) and by
# rohrpost's consumer (daphne).
ROHRPOST_BRIDGE = {
    "SECRET": os.environ.get("NOTES_BRIDGE_SECRET", "bridge-secret"),
    "HANDLER_MODULES": ["notes.handlers"],
    "DISCONNECT": "notes.bridge.disconnected",
    # The bridge's default (anonymous users refused) unless a test names one.
    "CONNECT": os.environ.get("NOTES_BRIDGE_CONNECT") or None,
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
