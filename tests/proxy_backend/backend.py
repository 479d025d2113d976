"""A backend for the proxy plugin's end-to-end tests, answering the
proxy contract (version 1) the way an application's backend would.

Run as ``python3 backend.py``: it listens on a free port of 127.0.0.1
(threaded, HTTP/1.1 keep-alive) and prints ``port <n>`` once it does.

- ``POST /rohrpost/``: one request; what it answers depends on the
  request's ``type`` (see ``HANDLERS``), including the misbehaving ones.
- ``POST /connect/``: admits a connection with a ``session`` cookie
  (joins ``user-<name>``, attaches ``user``, sends ``welcome``), refuses
  one without (close 4003).
- ``POST /disconnect/``: remembers what it was told.
- ``POST /subscribe/``: the subscriptions plugin's question (``auth =
  "backend"``): decides by the group (see ``decide``), including the
  misbehaving answers.
- ``GET /told``: what ``/disconnect/`` was told so far, as JSON.
- ``GET /seen``: the last request body ``/rohrpost/`` got, as JSON.
- ``GET /asked``: every question ``/subscribe/`` got, as JSON.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = "s3cret"
TOLD = []
SEEN = {}
ASKED = []
LOCK = threading.Lock()


def reply(req, data=None, error=None):
    message = {"id": req.get("id"), "type": req["type"]}
    if data is not None:
        message["data"] = data
    if error is not None:
        message["error"] = error
    return {"send": message}


def echo(req, conn):
    return [reply(req, {"echo": req.get("data")})]


def increment(req, conn):
    value = conn["data"].get("count", 0) + req.get("data", {}).get("by", 1)
    return [{"set": {"key": "count", "value": value}}, reply(req, {"value": value})]


def several(req, conn):
    ticks = [{"send": {"id": n, "type": "tick", "data": {"n": n}}} for n in (1, 2)]
    return ticks + [reply(req, {"sent": 2})]


def failing(req, conn):
    return [reply(req, error="Something went wrong.")]


def bye(req, conn):
    return [reply(req), {"close": {"code": 4001, "reason": "bye"}}]


def join(req, conn):
    group = req["data"]["group"]
    return [{"join": group}, reply(req, {"group": group})]


def leave(req, conn):
    group = req["data"]["group"]
    return [{"leave": group}, reply(req, {"group": group})]


def shout(req, conn):
    data = req["data"]
    message = {"type": "shout", "data": {"text": data["text"]}}
    return [
        {"group_send": {"group": data["group"], "message": message}},
        reply(req),
    ]


def whoami(req, conn):
    return [reply(req, {key: conn[key] for key in ("path", "query_string", "headers", "data")}
                  | {"has_id": isinstance(conn.get("id"), int),
                     "has_remote_addr": bool(conn.get("remote_addr"))})]


def ping(req, conn):
    return [reply(req, {"via": "backend"})]


HANDLERS = {
    "echo": echo,
    "increment": increment,
    "several": several,
    "error": failing,
    "bye": bye,
    "join": join,
    "leave": leave,
    "shout": shout,
    "whoami": whoami,
    "ping": ping,
}


class Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def answer(self, status, body, content_type="application/json"):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with LOCK:
            body = {"/told": list(TOLD), "/seen": SEEN.get("last"),
                    "/asked": list(ASKED)}.get(self.path)
        self.answer(200, body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        doc = json.loads(self.rfile.read(length))
        if self.headers.get("X-Secret") != SECRET:
            return self.answer(403, {"error": "forbidden"})
        if doc.get("v") != 1:
            return self.answer(400, {"error": "unknown contract version"})
        if self.path == "/connect/":
            return self.answer(200, {"v": 1, "effects": connect(doc["connection"])})
        if self.path == "/subscribe/":
            with LOCK:
                ASKED.append(doc)
            return self.decide(doc)
        if self.path == "/disconnect/":
            with LOCK:
                TOLD.append({"close_code": doc.get("close_code"),
                             "id": doc["connection"]["id"],
                             "data": doc["connection"]["data"]})
            return self.answer(200, {"v": 1, "effects": []})
        req, conn = doc["request"], doc["connection"]
        with LOCK:
            SEEN["last"] = doc
        kind = req["type"]
        if kind == "hangup":
            # Down in the middle: the connection closes without an answer.
            self.close_connection = True
            self.connection.shutdown(2)
            return None
        if kind == "slow":
            time.sleep(3)
            return self.answer(200, {"v": 1, "effects": [reply(req)]})
        if kind == "garbage":
            return self.answer(200, b"<html>surely not JSON</html>", "text/html")
        if kind == "fail500":
            return self.answer(500, b"Traceback (most recent call last): ...", "text/plain")
        if kind == "huge":
            return self.answer(200, {"v": 1, "effects": [reply(req, {"blob": "x" * 100_000})]})
        if kind == "misfit":
            return self.answer(200, {"v": 1, "effects": [{"explode": True}]})
        if kind == "future":
            return self.answer(200, {"v": 2, "effects": []})
        handler = HANDLERS.get(kind)
        if handler is None:
            return self.answer(200, {"v": 1, "effects": [reply(req, error="Unknown type.")]})
        self.answer(200, {"v": 1, "effects": handler(req, conn)})


    def decide(self, doc):
        """Who may join which group: ``staff-*`` needs the ``session=ada``
        cookie, ``closed-*`` is refused, ``vip-*`` needs the auth_jwt
        ``vip``; ``garbage-*``, ``fail-*``, ``slow-*`` and ``future-*``
        misbehave; every other group is open."""
        group = doc["group"]
        kind = group.split("-", 1)[0]
        if kind == "garbage":
            return self.answer(200, b"<html>no</html>", "text/html")
        if kind == "fail":
            return self.answer(500, b"Traceback (most recent call last): ...", "text/plain")
        if kind == "slow":
            time.sleep(3)
            return self.answer(200, {"v": 1, "allow": True})
        if kind == "future":
            return self.answer(200, {"v": 2, "allow": True})
        if kind == "staff":
            cookie = doc["connection"]["headers"].get("cookie", "")
            if "session=ada" in cookie:
                return self.answer(200, {"v": 1, "allow": True})
            return self.answer(200, {"v": 1, "allow": False, "reason": "staff only"})
        if kind == "closed":
            return self.answer(200, {"v": 1, "allow": False, "reason": "closed group"})
        if kind == "vip":
            return self.answer(200, {"v": 1, "allow": doc["auth_jwt"] == "vip"})
        return self.answer(200, {"v": 1, "allow": True})


def connect(conn):
    cookie = conn["headers"].get("cookie", "")
    sessions = dict(part.strip().split("=", 1) for part in cookie.split(";") if "=" in part)
    user = sessions.get("session")
    if not user:
        return [{"close": {"code": 4003, "reason": "no session"}}]
    return [
        {"set": {"key": "user", "value": user}},
        {"join": f"user-{user}"},
        {"send": {"type": "welcome", "data": {"user": user}}},
    ]


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    server.daemon_threads = True
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
