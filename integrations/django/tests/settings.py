"""Settings of the package's own tests (`python -m django test
--settings=tests.settings`): an in-memory database and channel layer."""

SECRET_KEY = "not-a-secret: the bridge's tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "rohrpost_bridge",
]
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
ROHRPOST_BRIDGE = {
    "SECRET": "s3cret",
    "HANDLER_MODULES": ["tests.handlers"],
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "loggers": {"rohrpost_bridge": {"handlers": ["null"], "propagate": False}},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
