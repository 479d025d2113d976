"""The stand-in consumer: what rohrpost's functions and handlers use of a
Channels consumer (`send`, `add_to_group`, `remove_from_group`, `close`,
`scope`, `channel_layer`, `channel_name`), recording what a handler does
instead of doing it, so that the view can answer it as the proxy's
effects document. The socket itself is the host's."""

import json
from importlib import import_module

from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from django.http.cookie import parse_cookie
from django.utils.functional import SimpleLazyObject
from rohrpost.message import TolerantJSONEncoder

# The most effects one answer may carry (the proxy refuses more).
MAX_EFFECTS = 1000

# Where handlers find the connection's own data, in `consumer.scope`.
DATA_KEY = "rohrpost_data"

# Where the connection as the host described it is, in `consumer.scope`.
CONNECTION_KEY = "rohrpost_connection"

_MESSAGE_KEYS = frozenset(("id", "type", "data", "error"))


class EffectError(Exception):
    """Something a handler did that the proxy's contract cannot carry."""


def connection_data(consumer):
    """The connection's own data, a dict of JSON values: what a handler puts
    there comes back with the connection's later requests. The same call
    works on a Channels consumer (daphne), where it lives in the scope for
    the consumer's lifetime."""
    return consumer.scope.setdefault(DATA_KEY, {})


def _encode(value):
    return json.dumps(value, cls=TolerantJSONEncoder, sort_keys=True)


def _client(remote_addr):
    """`"203.0.113.9:51234"` or `"[2001:db8::1]:443"` as ASGI's
    `[host, port]`."""
    if not isinstance(remote_addr, str) or ":" not in remote_addr:
        return None
    host, _, port = remote_addr.rpartition(":")
    host = host.strip("[]")
    try:
        return [host, int(port)]
    except ValueError:
        return [host, 0]


def _user(session):
    request = HttpRequest()
    request.session = session
    return auth.get_user(request)


def build_scope(connection):
    """An ASGI WebSocket scope for the connection the host described, with
    the session and the user resolved (lazily) from the forwarded cookie."""
    headers = connection.get("headers") or {}
    if not isinstance(headers, dict):
        headers = {}
    cookie = headers.get("cookie")
    cookies = parse_cookie(cookie) if isinstance(cookie, str) else {}
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=cookies.get(settings.SESSION_COOKIE_NAME))
    data = connection.get("data")
    query = connection.get("query_string")
    return {
        "type": "websocket",
        "path": connection.get("path") or "",
        "query_string": query.encode("utf-8") if isinstance(query, str) else b"",
        "headers": [
            (str(name).encode("latin-1", "replace"), str(value).encode("utf-8"))
            for name, value in headers.items()
        ],
        "client": _client(connection.get("remote_addr")),
        "cookies": cookies,
        "session": session,
        "user": SimpleLazyObject(lambda: _user(session)),
        DATA_KEY: json.loads(json.dumps(data)) if isinstance(data, dict) else {},
        CONNECTION_KEY: connection,
    }


class _Layer:
    """The app's channel layer as the consumer's `channel_layer`: adding or
    discarding the consumer's own channel is a join or a leave of the
    host's connection; everything else (group_send, send, ...) is the
    app's layer itself."""

    def __init__(self, consumer):
        self._consumer = consumer

    def _layer(self):
        layer = get_channel_layer()
        if layer is None:
            raise EffectError("no channel layer is configured (CHANNEL_LAYERS)")
        return layer

    async def group_add(self, group, channel):
        if channel == self._consumer.channel_name:
            self._consumer.add_to_group(group)
        else:
            await self._layer().group_add(group, channel)

    async def group_discard(self, group, channel):
        if channel == self._consumer.channel_name:
            self._consumer.remove_from_group(group)
        else:
            await self._layer().group_discard(group, channel)

    def __getattr__(self, name):
        return getattr(self._layer(), name)


def _require_group(name):
    layer = get_channel_layer()
    if layer is not None and hasattr(layer, "require_valid_group_name"):
        layer.require_valid_group_name(name)
    elif not isinstance(name, str) or not name:
        raise TypeError("Group name must be a non-empty string.")


class BridgeConsumer:
    """One request's (or hook's) consumer. `scope` is
    :func:`build_scope`'s; `effects()` is what the handler did."""

    def __init__(self, connection):
        self.scope = build_scope(connection)
        self.connection_id = connection.get("id")
        self.channel_name = "rohrpost-bridge.connection!{}".format(self.connection_id)
        self.channel_layer = _Layer(self)
        self.closed = False
        self._data_before = {
            key: _encode(value) for key, value in self.scope[DATA_KEY].items()
        }
        self._effects = []

    def _record(self, effect):
        if len(self._effects) >= MAX_EFFECTS:
            raise EffectError("more than {} effects".format(MAX_EFFECTS))
        self._effects.append(effect)

    def accept(self, subprotocol=None, headers=None):
        """The host has accepted the socket already."""

    def send(self, text_data=None, bytes_data=None, close=False):
        """A rohrpost message (JSON text) to the caller."""
        if self.closed:
            return
        if bytes_data is not None:
            raise EffectError("binary frames cannot be sent through the proxy")
        try:
            message = json.loads(text_data)
        except (TypeError, ValueError) as exc:
            raise EffectError("a message that is not JSON: {}".format(exc)) from exc
        if not isinstance(message, dict):
            raise EffectError("a message that is not a JSON object")
        extra = set(message) - _MESSAGE_KEYS
        if extra:
            raise EffectError(
                "a message with fields other than id, type, data, error: {}".format(
                    ", ".join(sorted(extra))
                )
            )
        if not isinstance(message.get("type"), str) or not message["type"]:
            raise EffectError("a message without a type")
        if "error" in message and not isinstance(message["error"], str):
            raise EffectError("a message whose error is not a string")
        self._record({"send": message})
        if close:
            self.close(close)

    def add_to_group(self, group_name):
        _require_group(group_name)
        self._record({"join": group_name})

    def remove_from_group(self, group_name):
        _require_group(group_name)
        self._record({"leave": group_name})

    def close(self, code=None, reason=None):
        """Closes the connection after the messages before (1000, or a code
        of 4000-4999 or 1008)."""
        if self.closed:
            return
        if code is None or code is True or code == 1000:
            effect = {}
        elif isinstance(code, int) and (code == 1008 or 4000 <= code <= 4999):
            effect = {"code": code, "reason": reason or ""}
        else:
            raise EffectError("close code {!r}: the host closes with 1000, 1008 or 4000-4999".format(code))
        self.closed = True
        self._record({"close": effect})

    def data_effects(self):
        """`set` and `unset` for what changed in the connection's data."""
        data = self.scope.get(DATA_KEY)
        if not isinstance(data, dict):
            raise EffectError("scope[{!r}] is not a dict".format(DATA_KEY))
        effects = []
        for key, value in data.items():
            if not isinstance(key, str) or not key:
                raise EffectError("a connection data key that is not a non-empty string")
            try:
                encoded = _encode(value)
            except (TypeError, ValueError) as exc:
                raise EffectError("connection data {!r}: {}".format(key, exc)) from exc
            if self._data_before.get(key) != encoded:
                effects.append({"set": {"key": key, "value": json.loads(encoded)}})
        effects.extend({"unset": key} for key in self._data_before if key not in data)
        return effects

    def effects(self):
        """Everything recorded: the data's changes first, then the rest in
        the order the handler did it."""
        effects = self.data_effects() + self._effects
        if len(effects) > MAX_EFFECTS:
            raise EffectError("more than {} effects".format(MAX_EFFECTS))
        return effects
