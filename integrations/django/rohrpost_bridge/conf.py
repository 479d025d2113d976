"""The ``ROHRPOST_BRIDGE`` settings dict, read in one place, with its
defaults, so that a missing secret or a mistyped callable is found when
Django starts rather than on the first request."""

import functools

from django.conf import settings
from django.core.signals import setting_changed
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

DEFAULTS = {
    # The shared secret the proxy sends (its `headers`); required.
    "SECRET": None,
    # The header that carries it.
    "SECRET_HEADER": "X-Rohrpost-Secret",
    # Modules whose `@rohrpost_handler`s are served, imported at start.
    "HANDLER_MODULES": [],
    # `connect(consumer)`: called for each new connection; refuses it with
    # `consumer.close(code)`. Default: anonymous users are refused.
    "CONNECT": None,
    # `disconnect(consumer, close_code)`: called once a connection ended.
    "DISCONNECT": None,
    # `subscribe(user, group, request) -> bool`. Default: logged-in users.
    "SUBSCRIBE": None,
    # Whether the default connect admits anonymous users.
    "ALLOW_ANONYMOUS": False,
    # The close code the default connect refuses anonymous users with.
    "REFUSE_CODE": 4003,
    # The largest request body read.
    "MAX_BODY_BYTES": 1024 * 1024,
}

_CALLABLES = ("CONNECT", "DISCONNECT", "SUBSCRIBE")


@functools.lru_cache(maxsize=1)
def get():
    """The settings, defaults filled in, callables imported."""
    given = getattr(settings, "ROHRPOST_BRIDGE", None)
    if not isinstance(given, dict):
        raise ImproperlyConfigured("ROHRPOST_BRIDGE must be a dict (with at least 'SECRET').")
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ImproperlyConfigured(
            "ROHRPOST_BRIDGE: unknown keys {}".format(", ".join(sorted(unknown)))
        )
    conf = dict(DEFAULTS, **given)
    secret = conf["SECRET"]
    if not isinstance(secret, str) or not secret:
        raise ImproperlyConfigured("ROHRPOST_BRIDGE['SECRET'] must be a non-empty string.")
    code = conf["REFUSE_CODE"]
    if not isinstance(code, int) or not (code == 1008 or 4000 <= code <= 4999):
        raise ImproperlyConfigured("ROHRPOST_BRIDGE['REFUSE_CODE'] must be 1008 or 4000-4999.")
    if isinstance(conf["HANDLER_MODULES"], str):
        raise ImproperlyConfigured("ROHRPOST_BRIDGE['HANDLER_MODULES'] must be a list.")
    for key in _CALLABLES:
        value = conf[key]
        if isinstance(value, str):
            try:
                conf[key] = import_string(value)
            except ImportError as exc:
                raise ImproperlyConfigured(
                    "ROHRPOST_BRIDGE['{}']: cannot import {}: {}".format(key, value, exc)
                ) from exc
        elif value is not None and not callable(value):
            raise ImproperlyConfigured(
                "ROHRPOST_BRIDGE['{}'] must be a dotted path or a callable.".format(key)
            )
    return conf


def _changed(setting, **kwargs):
    if setting == "ROHRPOST_BRIDGE":
        get.cache_clear()


setting_changed.connect(_changed)
