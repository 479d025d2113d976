"""The proxy contract's four endpoints: a request (run the registered
rohrpost handler), connect, disconnect, and subscribe authorization.
Every call must carry the shared secret; every answer is JSON."""

import hmac
import json
import logging

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from rohrpost.main import handle_rohrpost_message
from rohrpost.message import TolerantJSONEncoder, send_error

from . import conf
from .consumer import BridgeConsumer, EffectError, build_scope

VERSION = 1

logger = logging.getLogger("rohrpost_bridge")


class BadCall(Exception):
    """A call that does not fit the contract (answered 400)."""


def _answer(document, status=200):
    return JsonResponse(document, status=status, encoder=TolerantJSONEncoder)


def _refused(status, text):
    return JsonResponse({"error": text}, status=status)


def _authorized(request, settings):
    given = request.headers.get(settings["SECRET_HEADER"])
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), settings["SECRET"].encode("utf-8"))


def _body(request, settings, event=None):
    """The call's JSON document, checked for the version, the event and
    the connection."""
    limit = settings["MAX_BODY_BYTES"]
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise BadCall("the body is larger than MAX_BODY_BYTES")
    # Read no more than the limit whatever the headers say: a chunked body
    # has no Content-Length, and request.body would read all of it.
    body = request.read(limit + 1)
    if len(body) > limit:
        raise BadCall("the body is larger than MAX_BODY_BYTES")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise BadCall("the body is not JSON: {}".format(exc)) from exc
    if not isinstance(document, dict) or document.get("v") != VERSION:
        raise BadCall("not a document of contract version {}".format(VERSION))
    if event is not None and document.get("event") != event:
        raise BadCall("not a {} event".format(event))
    if not isinstance(document.get("connection"), dict):
        raise BadCall("no connection")
    return document


def _endpoint(event=None):
    """The secret checked, the body read, then the view."""

    def wrap(view):
        @csrf_exempt
        @require_POST
        def endpoint(request):
            settings = conf.get()
            if not _authorized(request, settings):
                logger.warning(
                    "a call to %s without the shared secret (%s) was refused",
                    request.path,
                    settings["SECRET_HEADER"],
                )
                return _refused(403, "forbidden")
            try:
                document = _body(request, settings, event)
            except BadCall as exc:
                logger.warning("a call to %s was refused: %s", request.path, exc)
                return _refused(400, str(exc))
            return view(document, settings)

        endpoint.__name__ = view.__name__
        endpoint.__doc__ = view.__doc__
        return endpoint

    return wrap


def _failed(consumer, request, exc):
    """A handler raised: logged, and the caller gets an error reply."""
    kind = request.get("type")
    logger.error(
        "the rohrpost handler for %r failed (connection %s): %s",
        kind,
        consumer.connection_id,
        exc,
        exc_info=exc,
    )
    try:
        send_error(
            consumer=consumer,
            message_id=request.get("id"),
            handler=kind if isinstance(kind, str) and kind else "error",
            error="Internal error: the handler for '{}' failed.".format(kind),
        )
    except EffectError:
        # No room left for the reply (MAX_EFFECTS): the log has it.
        pass


@_endpoint()
def handle(document, settings):
    """One request: the handler rohrpost would call for it, with the
    stand-in consumer; what it did, as effects."""
    request = document.get("request")
    if not isinstance(request, dict):
        logger.warning("a request call was refused: the request is not a JSON object")
        return _refused(400, "the request is not a JSON object")
    consumer = BridgeConsumer(document["connection"])
    try:
        handle_rohrpost_message(consumer=consumer, text_data=json.dumps(request))
    except Exception as exc:  # noqa: BLE001 (a handler's failure is answered)
        _failed(consumer, request, exc)
    try:
        effects = consumer.effects()
    except EffectError as exc:
        failed = BridgeConsumer(document["connection"])
        _failed(failed, request, exc)
        effects = failed.effects()
    return _answer({"v": VERSION, "effects": effects})


def _default_connect(settings):
    def connect(consumer):
        if settings["ALLOW_ANONYMOUS"] or consumer.scope["user"].is_authenticated:
            return
        consumer.close(code=settings["REFUSE_CODE"], reason="Authentication required.")

    return connect


@_endpoint("connect")
def connect(document, settings):
    """A connection opened: `CONNECT(consumer)` (by default, anonymous
    users are refused) may refuse it with `consumer.close(code)`, join it
    to groups, give it data and send it messages."""
    consumer = BridgeConsumer(document["connection"])
    hook = settings["CONNECT"] or _default_connect(settings)
    try:
        hook(consumer)
        effects = consumer.effects()
    except Exception as exc:  # noqa: BLE001 (the host refuses the connection)
        logger.error(
            "the connect hook failed (connection %s): %s",
            consumer.connection_id,
            exc,
            exc_info=exc,
        )
        return _refused(500, "the connect hook failed")
    return _answer({"v": VERSION, "effects": effects})


@_endpoint("disconnect")
def disconnect(document, settings):
    """A connection ended: `DISCONNECT(consumer, close_code)`, if set."""
    hook = settings["DISCONNECT"]
    if hook is not None:
        consumer = BridgeConsumer(document["connection"])
        try:
            hook(consumer, document.get("close_code"))
        except Exception as exc:  # noqa: BLE001 (logged; the connection is gone)
            logger.error(
                "the disconnect hook failed (connection %s): %s",
                consumer.connection_id,
                exc,
                exc_info=exc,
            )
            return _refused(500, "the disconnect hook failed")
    return _answer({"v": VERSION, "effects": []})


def _default_subscribe(user, group, request):
    return user.is_authenticated


@_endpoint("subscribe")
def subscribe(document, settings):
    """May this connection join this group? `SUBSCRIBE(user, group,
    request)` (by default: logged-in users may)."""
    group = document.get("group")
    if not isinstance(group, str) or not group:
        logger.warning("a subscribe call was refused: no group")
        return _refused(400, "no group")
    scope = build_scope(document["connection"])
    decide = settings["SUBSCRIBE"] or _default_subscribe
    try:
        allowed = bool(decide(scope["user"], group, document.get("request")))
    except Exception as exc:  # noqa: BLE001 (the host denies on a failure)
        logger.error("the subscribe authorizer failed for %r: %s", group, exc, exc_info=exc)
        return _refused(500, "the subscribe authorizer failed")
    if allowed:
        return _answer({"v": VERSION, "allow": True})
    if settings["SUBSCRIBE"] is None:
        reason = "not logged in"
    else:
        reason = "refused by {}".format(getattr(decide, "__qualname__", "SUBSCRIBE"))
    return _answer({"v": VERSION, "allow": False, "reason": reason})
