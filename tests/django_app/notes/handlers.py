"""rohrpost handlers of the daphne side: joining a note's group."""
from rohrpost.handlers import rohrpost_handler
from rohrpost.message import send_success


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
