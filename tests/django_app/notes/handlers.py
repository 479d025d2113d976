"""rohrpost handlers, written as for rohrpost on daphne: daphne serves them
with rohrpost's consumer, gunicorn to the host's proxy plugin through the
rohrpost bridge, and the tests compare the two."""
from rohrpost.handlers import rohrpost_handler
from rohrpost.message import send_error, send_message, send_success, send_to_group

from rohrpost_bridge import connection_data


@rohrpost_handler("subscribe")
def subscribe(consumer, request):
    group = "{}-{}".format(request["data"]["type"], request["data"]["id"])
    consumer.add_to_group(group)
    send_success(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        data={"group": group},
    )


@rohrpost_handler("echo")
def echo(consumer, request):
    send_success(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        data={"echo": request.get("data")},
    )


@rohrpost_handler("several")
def several(consumer, request):
    for n in (1, 2):
        send_message(consumer=consumer, handler="tick", message_id=n, data={"n": n})
    send_success(
        consumer=consumer, handler=request["type"], message_id=request["id"], data={"sent": 2}
    )


@rohrpost_handler("fail")
def fail(consumer, request):
    send_error(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        error="Something went wrong.",
    )


@rohrpost_handler("increment")
def increment(consumer, request):
    data = connection_data(consumer)
    data["count"] = data.get("count", 0) + request["data"]["by"]
    send_success(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        data={"value": data["count"]},
    )


@rohrpost_handler("whoami")
def whoami(consumer, request):
    user = consumer.scope["user"]
    send_success(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        data={
            "user": user.username,
            "authenticated": user.is_authenticated,
            "path": consumer.scope["path"],
            "data": connection_data(consumer),
        },
    )


@rohrpost_handler("join")
def join(consumer, request):
    consumer.add_to_group(request["data"]["group"])
    send_success(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        data={"group": request["data"]["group"]},
    )


@rohrpost_handler("leave")
def leave(consumer, request):
    consumer.remove_from_group(request["data"]["group"])
    send_success(
        consumer=consumer,
        handler=request["type"],
        message_id=request["id"],
        data={"group": request["data"]["group"]},
    )


@rohrpost_handler("shout")
def shout(consumer, request):
    send_to_group(
        request["data"]["group"],
        {"type": "shout", "data": {"text": request["data"]["text"]}},
    )
    send_success(consumer=consumer, handler=request["type"], message_id=request["id"])


@rohrpost_handler("bye")
def bye(consumer, request):
    send_success(consumer=consumer, handler=request["type"], message_id=request["id"])
    consumer.close(code=4001)


@rohrpost_handler("boom")
def boom(consumer, request):
    raise RuntimeError("boom")
