"""The rohrpost bridge's disconnect hook: tells the group `disconnects`
who left and how, so that the tests see it was told once."""
from rohrpost.message import send_to_group


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
