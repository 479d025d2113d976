"""Settings from the environment: which channels_redis layer, which Redis
database and prefix, which sqlite file (each test has its own)."""
import os

SECRET_KEY = "not-a-secret: test app"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["daphne", "channels", "notes.apps.NotesConfig"]
ROOT_URLCONF = "notesite.urls"
ASGI_APPLICATION = "notesite.asgi.application"
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
            "hosts": [os.environ.get("NOTES_REDIS", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("NOTES_PREFIX", "asgi"),
        },
    }
}
