"""What the tests do on the Django side: change notes (the mixins notify),
send to a group, listen to a group through the channel layer, or log a
user in (the session key of a new session)."""
import json
import sys

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.test import Client
from django.db import transaction
from rohrpost.message import send_to_group

from notes.models import Note


class RolledBack(Exception):
    pass


class Command(BaseCommand):
    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("title")
        create.add_argument("--rollback", action="store_true")
        update = sub.add_parser("update")
        update.add_argument("pk", type=int)
        update.add_argument("title")
        delete = sub.add_parser("delete")
        delete.add_argument("pk", type=int)
        send = sub.add_parser("send")
        send.add_argument("group")
        send.add_argument("message")
        send.add_argument("--dict", action="store_true")
        event = sub.add_parser("event")
        event.add_argument("group")
        event.add_argument("type")
        join = sub.add_parser("join")
        join.add_argument("group")
        listen = sub.add_parser("listen")
        listen.add_argument("group")
        listen.add_argument("count", type=int)
        login = sub.add_parser("login")
        login.add_argument("username")

    def handle(self, *args, **options):
        action = options["action"]
        if action == "create":
            if options["rollback"]:
                try:
                    with transaction.atomic():
                        Note.objects.create(title=options["title"])
                        raise RolledBack()
                except RolledBack:
                    self.stdout.write("rolled back")
                return
            note = Note.objects.create(title=options["title"])
            self.stdout.write(str(note.pk))
        elif action == "update":
            note = Note.objects.get(pk=options["pk"])
            note.title = options["title"]
            note.save(update_fields=["title"])
        elif action == "delete":
            Note.objects.get(pk=options["pk"]).delete()
        elif action == "send":
            message = options["message"]
            send_to_group(options["group"], json.loads(message) if options["dict"] else message)
        elif action == "event":
            layer = get_channel_layer()
            async_to_sync(layer.group_send)(options["group"], {"type": options["type"], "text": "hi"})
        elif action == "join":
            # A channel that joins and never receives (a consumer that hangs).
            self.stdout.write(async_to_sync(self.join)(options["group"]))
        elif action == "listen":
            async_to_sync(self.listen)(options["group"], options["count"])
        elif action == "login":
            user, _ = User.objects.get_or_create(username=options["username"])
            client = Client()
            client.force_login(user)
            self.stdout.write(client.cookies["sessionid"].value)

    async def join(self, group):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    async def listen(self, group, count):
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        print("listening", flush=True)
        for _ in range(count):
            event = await layer.receive(channel)
            print(json.dumps(event), flush=True)
        await layer.group_discard(group, channel)
        sys.stdout.flush()
