"""The rohrpost bridge's hooks: a connect that welcomes (the tests name it
in `NOTES_BRIDGE_CONNECT`), and a disconnect that tells the group
`disconnects` who left and how, so that the tests see it was told once."""
from rohrpost.message import send_message, send_to_group

from rohrpost_bridge import connection_data


def connect_with_welcome(consumer):
    """As a consumer's `connect()`: anonymous users refused with 4001,
    others joined to their own group, remembered and welcomed."""
    user = consumer.scope["user"]
    if not user.is_authenticated:
        consumer.close(code=4001, reason="Log in first.")
        return
    consumer.accept()
    consumer.add_to_group("user-{}".format(user.username))
    connection_data(consumer)["user"] = user.username
    send_message(consumer=consumer, handler="welcome", data={"user": user.username})


def disconnected(consumer, close_code):
    send_to_group(
        "disconnects",
        {
            "type": "gone",
            "data": {
                "user": consumer.scope["user"].username,
                "code": close_code,
                "connection": consumer.scope["rohrpost_connection"]["id"],
            },
        },
    )
