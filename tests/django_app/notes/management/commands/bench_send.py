"""The channels benchmark's sender: Django's group_send of COUNT rohrpost
messages to GROUP (what rohrpost's send_to_group sends), one after another
as fast as the channel layer takes them. Each carries its sequence number
and when it was sent, in microseconds after START_UNIX_US, so that every
subscriber can tell its latency."""
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("group")
        parser.add_argument("count", type=int)
        parser.add_argument("start_unix_us", type=int)

    def handle(self, *args, **options):
        async_to_sync(self.send_all)(options["group"], options["count"], options["start_unix_us"])
        self.stdout.write("sent")

    async def send_all(self, group, count, start_unix_us):
        layer = get_channel_layer()
        for seq in range(count):
            sent_us = time.time_ns() // 1000 - start_unix_us
            message = {
                "type": "subscription-update",
                "id": seq + 1,
                "data": {"object": {"seq": seq, "sent_us": sent_us}},
            }
            await layer.group_send(group, {"type": "rohrpost.message", "message": message})
