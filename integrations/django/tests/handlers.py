"""Handlers written as for rohrpost on daphne, and the hooks the tests
configure."""

from rohrpost.handlers import rohrpost_handler
from rohrpost.message import send_error, send_message, send_success, send_to_group

from rohrpost_bridge import connection_data


@rohrpost_handler("echo")
def echo(consumer, request):
    send_success(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        data={"echo": request.get("data")},
    )


@rohrpost_handler(["several", "many"])
def several(consumer, request):
    for n in (1, 2):
        send_message(consumer=consumer, handler="tick", message_id=n, data={"n": n})
    send_success(consumer=consumer, handler=request["type"], message_id=request["id"])


@rohrpost_handler("fail")
def fail(consumer, request):
    send_error(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        error="Something went wrong.",
    )


@rohrpost_handler("boom")
def boom(consumer, request):
    send_message(consumer=consumer, handler="before", message_id=request["id"])
    raise RuntimeError("the handler broke")


@rohrpost_handler("increment")
def increment(consumer, request):
    data = connection_data(consumer)
    data["count"] = data.get("count", 0) + request["data"]["by"]
    data.pop("forget", None)
    send_success(
        consumer=consumer, handler="increment", message_id=request["id"], data={"value": data["count"]}
    )


@rohrpost_handler("join")
def join(consumer, request):
    consumer.add_to_group(request["data"]["group"])
    send_success(consumer=consumer, handler="join", message_id=request["id"])


@rohrpost_handler("leave")
def leave(consumer, request):
    consumer.remove_from_group(request["data"]["group"])
    send_success(consumer=consumer, handler="leave", message_id=request["id"])


@rohrpost_handler("shout")
def shout(consumer, request):
    send_to_group(request["data"]["group"], {"type": "shout", "data": {"text": request["data"]["text"]}})
    send_success(consumer=consumer, handler="shout", message_id=request["id"])


@rohrpost_handler("bye")
def bye(consumer, request):
    send_success(consumer=consumer, handler="bye", message_id=request["id"])
    consumer.close(code=4001)
    send_success(consumer=consumer, handler="after", message_id=request["id"])


@rohrpost_handler("whoami")
def whoami(consumer, request):
    scope = consumer.scope
    send_success(
        consumer=consumer,
        handler="whoami",
        message_id=request["id"],
        data={
            "user": scope["user"].username,
            "path": scope["path"],
            "query_string": scope["query_string"].decode(),
            "client": scope["client"],
            "headers": sorted([k.decode(), v.decode()] for k, v in scope["headers"]),
            "theme": scope["cookies"].get("theme"),
            "session": scope["session"].get("colour"),
        },
    )


@rohrpost_handler("raw")
def raw(consumer, request):
    consumer.send(text_data='{"type": "raw", "extra": 1}')


@rohrpost_handler("layer")
def layer(consumer, request):
    from asgiref.sync import async_to_sync

    async_to_sync(consumer.channel_layer.group_add)("via-layer", consumer.channel_name)
    async_to_sync(consumer.channel_layer.group_discard)("gone", consumer.channel_name)


def connect_with_welcome(consumer):
    user = consumer.scope["user"]
    if user.is_anonymous:
        consumer.close(code=4001, reason="who are you?")
        return
    consumer.accept()
    consumer.add_to_group("user-{}".format(user.username))
    connection_data(consumer)["user"] = user.username
    send_message(consumer=consumer, handler="welcome", data={"user": user.username})


def connect_that_fails(consumer):
    raise ValueError("no")


DISCONNECTED = []


def disconnected(consumer, close_code):
    DISCONNECTED.append((consumer.scope["user"].username, close_code, dict(connection_data(consumer))))


def only_own_group(user, group, request):
    return group == "user-{}".format(user.username)


@rohrpost_handler("flood")
def flood(consumer, request):
    for n in range(2000):
        send_message(consumer=consumer, handler="drop", message_id=n + 1)
