"""The channels benchmark's sender: Django's group_send of COUNT rohrpost
messages to GROUP (what rohrpost's send_to_group sends), one after another
as fast as the channel layer takes them. Each carries its sequence number
and when it was sent, in microseconds after START_UNIX_US, so that every
subscriber can tell its latency. With --wait-for-go it prints "ready" once
Django and the layer's connection to Redis are up and sends when a line
comes on stdin, so that the benchmark measures the servers from the first
send, not while Python starts."""
import asyncio
import sys
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand

# A group nobody joins: sending to it opens the layer's Redis connection
# and delivers nothing.
WARM_UP_GROUP = "bench-warm-up"


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("group")
        parser.add_argument("count", type=int)
        parser.add_argument("start_unix_us", type=int)
        parser.add_argument("--wait-for-go", action="store_true")

    def handle(self, *args, **options):
        async_to_sync(self.send_all)(
            options["group"], options["count"], options["start_unix_us"], options["wait_for_go"]
        )
        self.stdout.write("sent")

    async def send_all(self, group, count, start_unix_us, wait_for_go):
        layer = get_channel_layer()
        if wait_for_go:
            await layer.group_send(WARM_UP_GROUP, {"type": "rohrpost.message", "message": ""})
            self.stdout.write("ready")
            self.stdout.flush()
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            if not line:
                raise SystemExit("stdin closed before the go")
        for seq in range(count):
            sent_us = time.time_ns() // 1000 - start_unix_us
            message = {
                "type": "subscription-update",
                "id": seq + 1,
                "data": {"object": {"seq": seq, "sent_us": sent_us}},
            }
            await layer.group_send(group, {"type": "rohrpost.message", "message": message})
