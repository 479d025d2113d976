"""Checks the settings and imports the handler modules when Django starts,
so that every `@rohrpost_handler` is registered before the first request."""

import importlib

from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured

from . import conf


class RohrpostBridgeConfig(AppConfig):
    name = "rohrpost_bridge"
    verbose_name = "rohrpost bridge"

    def ready(self):
        for needed in ("django.contrib.auth", "django.contrib.sessions"):
            if not apps.is_installed(needed):
                raise ImproperlyConfigured(
                    "rohrpost_bridge resolves users from the session cookie: "
                    "add {} to INSTALLED_APPS.".format(needed)
                )
        settings = conf.get()
        # rohrpost's own handlers (ping) are registered with its main module.
        importlib.import_module("rohrpost.main")
        for module in settings["HANDLER_MODULES"]:
            importlib.import_module(module)
