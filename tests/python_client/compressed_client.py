"""The Python websockets client against a rohrpost host, with the
permessage-deflate it negotiates by default: a large request and its
reply, a group message, and a message larger than one read. Prints one
JSON object of what it saw; the Rust test checks it.

Usage: compressed_client.py WS_URL
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def next_of(ws, kind):
    """The next message of type `kind`, skipping others."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if message.get("type") == kind:
            return message


async def main(url):
    seen = {}
    async with connect(url, max_size=4 * 1024 * 1024) as ws:
        seen["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        seen["negotiated"] = [type(e).__name__ for e in ws.protocol.extensions]
        notification = {
            "model": "Note",
            "items": [{"id": n, "title": "note %d" % n, "done": n % 2 == 0} for n in range(60)],
        }
        await ws.send(json.dumps({"id": 1, "type": "ping", "data": notification}))
        pong = await next_of(ws, "pong")
        seen["pong_data_equal"] = pong.get("data") == notification

        await ws.send(json.dumps({"id": 2, "type": "join", "data": {"group": "py"}}))
        await next_of(ws, "join")
        await ws.send(
            json.dumps({"id": 3, "type": "group-send", "data": {"group": "py", "message": notification}})
        )
        group_message = await next_of(ws, "group-message")
        seen["group_payload_equal"] = group_message["data"]["payload"] == notification

        large = {"text": "rohrpost " * 40000}
        await ws.send(json.dumps({"id": 4, "type": "ping", "data": large}))
        pong = await next_of(ws, "pong")
        seen["large_pong_equal"] = pong.get("data") == large
    print(json.dumps(seen))


asyncio.run(main(sys.argv[1]))
