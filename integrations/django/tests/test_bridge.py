"""The bridge's views through Django's test client: the proxy contract's
documents in, effects (or a subscribe decision) out."""

import json
from io import BytesIO

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.core.handlers.asgi import ASGIRequest
from django.test import TestCase, override_settings
from django.urls import resolve

from tests import handlers

SECRET = {"X-Rohrpost-Secret": "s3cret"}
BRIDGE = {"SECRET": "s3cret", "HANDLER_MODULES": ["tests.handlers"]}


def connection(cookie=None, data=None, **more):
    headers = {"cookie": cookie} if cookie is not None else {}
    info = {
        "id": 42,
        "remote_addr": "203.0.113.9:51234",
        "path": "/ws/rohrpost/",
        "query_string": "a=1",
        "headers": headers,
        "data": data or {},
    }
    info.update(more)
    return info


class BridgeTestCase(TestCase):
    def setUp(self):
        self.ada = User.objects.create_user("ada", password="pw")
        self.client.force_login(self.ada)
        self.cookie = "theme=dark; sessionid={}".format(self.client.cookies["sessionid"].value)
        session = self.client.session
        session["colour"] = "green"
        session.save()

    def post(self, path, document, headers=SECRET):
        return self.client.post(
            "/rohrpost/" + path,
            data=json.dumps(document),
            content_type="application/json",
            headers=headers,
        )

    def effects(self, request, conn=None):
        response = self.post("", {"v": 1, "request": request, "connection": conn or connection(self.cookie)})
        self.assertEqual(response.status_code, 200, response.content)
        document = response.json()
        self.assertEqual(document["v"], 1)
        return document["effects"]


class RequestTests(BridgeTestCase):
    def test_a_reply_as_rohrpost_sends_it(self):
        self.assertEqual(
            self.effects({"id": 7, "type": "echo", "data": {"n": 1.5}}),
            [{"send": {"id": 7, "type": "echo", "data": {"echo": {"n": 1.5}}}}],
        )
        # Big and string ids as sent.
        self.assertEqual(
            self.effects({"id": 12345678901234567890, "type": "echo"})[0]["send"]["id"],
            12345678901234567890,
        )
        self.assertEqual(self.effects({"id": "7", "type": "echo"})[0]["send"]["id"], "7")

    def test_rohrpost_s_own_ping_and_errors(self):
        self.assertEqual(
            self.effects({"id": 1, "type": "ping", "data": {"a": 1}}),
            [{"send": {"id": 1, "type": "pong", "data": {"a": 1}}}],
        )
        self.assertEqual(
            self.effects({"id": 2, "type": "nope"}),
            [{"send": {"id": 2, "type": "nope", "error": "Unknown message type 'nope'."}}],
        )
        self.assertEqual(
            self.effects({"id": 3, "type": "fail"}),
            [{"send": {"id": 3, "type": "fail", "error": "Something went wrong."}}],
        )

    def test_several_messages_in_order(self):
        self.assertEqual(
            self.effects({"id": 3, "type": "many"}),
            [
                {"send": {"id": 1, "type": "tick", "data": {"n": 1}}},
                {"send": {"id": 2, "type": "tick", "data": {"n": 2}}},
                {"send": {"id": 3, "type": "many"}}],
        )

    def test_a_handler_that_raises_gets_an_error_reply_and_is_logged(self):
        with self.assertLogs("rohrpost_bridge", "ERROR") as logs:
            effects = self.effects({"id": 4, "type": "boom"})
        self.assertEqual(
            effects,
            [
                {"send": {"id": 4, "type": "before"}},
                {"send": {"id": 4, "type": "boom", "error": "Internal error: the handler for 'boom' failed."}},
            ],
        )
        self.assertIn("the handler broke", logs.output[0])

    def test_a_message_the_contract_cannot_carry_is_a_failure(self):
        with self.assertLogs("rohrpost_bridge", "ERROR") as logs:
            effects = self.effects({"id": 5, "type": "raw"})
        self.assertEqual(
            effects,
            [{"send": {"id": 5, "type": "raw", "error": "Internal error: the handler for 'raw' failed."}}],
        )
        self.assertIn("extra", logs.output[0])

    def test_no_more_effects_than_the_proxy_takes(self):
        with self.assertLogs("rohrpost_bridge", "ERROR") as logs:
            effects = self.effects({"id": 1, "type": "flood"})
        self.assertEqual(len(effects), 1000)
        self.assertEqual(effects[-1], {"send": {"id": 1000, "type": "drop"}})
        self.assertIn("more than 1000 effects", logs.output[0])

    def test_connection_data_comes_in_and_goes_out_as_set_and_unset(self):
        conn = connection(self.cookie, data={"count": 3, "forget": True, "user": "ada"})
        self.assertEqual(
            self.effects({"id": 6, "type": "increment", "data": {"by": 2}}, conn),
            [
                {"set": {"key": "count", "value": 5}},
                {"unset": "forget"},
                {"send": {"id": 6, "type": "increment", "data": {"value": 5}}},
            ],
        )

    def test_groups_close_and_sends_after_close(self):
        self.assertEqual(
            self.effects({"id": 7, "type": "join", "data": {"group": "room"}}),
            [{"join": "room"}, {"send": {"id": 7, "type": "join"}}],
        )
        self.assertEqual(
            self.effects({"id": 8, "type": "leave", "data": {"group": "room"}}),
            [{"leave": "room"}, {"send": {"id": 8, "type": "leave"}}],
        )
        self.assertEqual(
            self.effects({"id": 9, "type": "layer"}),
            [{"join": "via-layer"}, {"leave": "gone"}],
        )
        self.assertEqual(
            self.effects({"id": 10, "type": "bye"}),
            [{"send": {"id": 10, "type": "bye"}}, {"close": {"code": 4001, "reason": ""}}],
        )

    def test_an_invalid_group_name_is_a_failure_as_on_channels(self):
        with self.assertLogs("rohrpost_bridge", "ERROR"):
            effects = self.effects({"id": 11, "type": "join", "data": {"group": "no spaces"}})
        self.assertEqual(effects[0]["send"]["error"], "Internal error: the handler for 'join' failed.")

    def test_send_to_group_goes_through_the_channel_layer(self):
        layer = get_channel_layer()
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("room", channel)
        effects = self.effects({"id": 12, "type": "shout", "data": {"group": "room", "text": "hi"}})
        self.assertEqual(effects, [{"send": {"id": 12, "type": "shout"}}])
        event = async_to_sync(layer.receive)(channel)
        self.assertEqual(
            event, {"type": "rohrpost.message", "message": {"type": "shout", "data": {"text": "hi"}}}
        )

    def test_the_scope_from_the_connection_and_the_session_cookie(self):
        effects = self.effects({"id": 13, "type": "whoami"})
        self.assertEqual(
            effects[0]["send"]["data"],
            {
                "user": "ada",
                "path": "/ws/rohrpost/",
                "query_string": "a=1",
                "client": ["203.0.113.9", 51234],
                "headers": [["cookie", self.cookie]],
                "theme": "dark",
                "session": "green",
            },
        )
        anonymous = self.effects({"id": 14, "type": "whoami"}, connection())
        self.assertEqual(anonymous[0]["send"]["data"]["user"], "")


class SecretAndShapeTests(BridgeTestCase):
    def test_without_the_secret_403(self):
        for headers in ({}, {"X-Rohrpost-Secret": "wrong"}, {"X-Rohrpost-Secret": ""}):
            for path in ("", "connect/", "disconnect/", "subscribe/"):
                with self.assertLogs("rohrpost_bridge", "WARNING"):
                    response = self.post(path, {"v": 1}, headers=headers)
                self.assertEqual(response.status_code, 403, (path, headers))

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, SECRET_HEADER="Authorization"))
    def test_the_header_is_a_setting(self):
        response = self.post(
            "", {"v": 1, "request": {"id": 1, "type": "echo"}, "connection": connection()},
            headers={"Authorization": "s3cret"},
        )
        self.assertEqual(response.status_code, 200)

    def test_what_does_not_fit_the_contract_400(self):
        bodies = (
            "nope",
            json.dumps({"v": 2, "connection": {}}),
            json.dumps({"v": 1}),
            json.dumps({"v": 1, "request": [1], "connection": {}}),
        )
        for body in bodies:
            with self.assertLogs("rohrpost_bridge", "WARNING"):
                response = self.client.post(
                    "/rohrpost/", data=body, content_type="application/json", headers=SECRET
                )
            self.assertEqual(response.status_code, 400, body)
        with self.assertLogs("rohrpost_bridge", "WARNING"):
            response = self.post("connect/", {"v": 1, "event": "disconnect", "connection": {}})
        self.assertEqual(response.status_code, 400)

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, MAX_BODY_BYTES=2000))
    def test_a_body_past_the_limit_is_refused_without_a_content_length_too(self):
        # A chunked body under ASGI: no Content-Length to check beforehand.
        def call(padding):
            document = {
                "v": 1,
                "request": {"id": 1, "type": "echo", "data": {"pad": padding}},
                "connection": connection(),
            }
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/rohrpost/",
                "query_string": b"",
                "headers": [
                    (b"x-rohrpost-secret", b"s3cret"),
                    (b"content-type", b"application/json"),
                    (b"transfer-encoding", b"chunked"),
                ],
            }
            request = ASGIRequest(scope, BytesIO(json.dumps(document).encode()))
            self.assertNotIn("CONTENT_LENGTH", request.META)
            return resolve("/rohrpost/").func(request)

        self.assertEqual(call("x" * 100).status_code, 200)
        with self.assertLogs("rohrpost_bridge", "WARNING"):
            response = call("x" * 100_000)
        self.assertEqual(response.status_code, 400)
        self.assertIn(b"MAX_BODY_BYTES", response.content)

    def test_only_post(self):
        self.assertEqual(self.client.get("/rohrpost/", headers=SECRET).status_code, 405)


class HookTests(BridgeTestCase):
    def connect(self, cookie):
        response = self.post("connect/", {"v": 1, "event": "connect", "connection": connection(cookie)})
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()["effects"]

    def test_by_default_anonymous_users_are_refused(self):
        self.assertEqual(self.connect(None), [{"close": {"code": 4003, "reason": "Authentication required."}}])
        self.assertEqual(self.connect("sessionid=forged"), [{"close": {"code": 4003, "reason": "Authentication required."}}])
        self.assertEqual(self.connect(self.cookie), [])

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, REFUSE_CODE=4001))
    def test_the_refusal_code_is_a_setting(self):
        self.assertEqual(self.connect(None)[0]["close"]["code"], 4001)

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, ALLOW_ANONYMOUS=True))
    def test_anonymous_users_may_be_admitted(self):
        self.assertEqual(self.connect(None), [])

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, CONNECT="tests.handlers.connect_with_welcome"))
    def test_a_connect_callable_refuses_joins_sets_and_welcomes(self):
        self.assertEqual(self.connect(None), [{"close": {"code": 4001, "reason": "who are you?"}}])
        self.assertEqual(
            self.connect(self.cookie),
            [
                {"set": {"key": "user", "value": "ada"}},
                {"join": "user-ada"},
                {"send": {"type": "welcome", "data": {"user": "ada"}}},
            ],
        )

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, CONNECT="tests.handlers.connect_that_fails"))
    def test_a_connect_callable_that_fails_500(self):
        with self.assertLogs("rohrpost_bridge", "ERROR"):
            response = self.post("connect/", {"v": 1, "event": "connect", "connection": connection()})
        self.assertEqual(response.status_code, 500)

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, DISCONNECT="tests.handlers.disconnected"))
    def test_disconnect_calls_the_callable_with_the_close_code(self):
        handlers.DISCONNECTED.clear()
        conn = connection(self.cookie, data={"user": "ada"})
        response = self.post("disconnect/", {"v": 1, "event": "disconnect", "close_code": 4100, "connection": conn})
        self.assertEqual(response.json(), {"v": 1, "effects": []})
        self.assertEqual(handlers.DISCONNECTED, [("ada", 4100, {"user": "ada"})])

    def test_disconnect_without_a_callable_acknowledges(self):
        response = self.post("disconnect/", {"v": 1, "event": "disconnect", "close_code": 1000, "connection": connection()})
        self.assertEqual(response.json(), {"v": 1, "effects": []})


class SubscribeTests(BridgeTestCase):
    def subscribe(self, cookie, group, auth_jwt=None):
        request = {"id": 1, "type": "subscribe", "data": {"type": "note", "id": 1}}
        document = {
            "v": 1,
            "event": "subscribe",
            "group": group,
            "auth_jwt": auth_jwt,
            "request": request,
            "connection": connection(cookie),
        }
        response = self.post("subscribe/", document)
        self.assertEqual(response.status_code, 200, response.content)
        return response.json()

    def test_by_default_logged_in_users_may(self):
        self.assertEqual(self.subscribe(self.cookie, "note-1"), {"v": 1, "allow": True})
        self.assertEqual(
            self.subscribe(None, "note-1"), {"v": 1, "allow": False, "reason": "not logged in"}
        )

    @override_settings(ROHRPOST_BRIDGE=dict(BRIDGE, SUBSCRIBE="tests.handlers.only_own_group"))
    def test_the_subscribe_callable_decides(self):
        self.assertEqual(self.subscribe(self.cookie, "user-ada", "a.jwt"), {"v": 1, "allow": True})
        denied = self.subscribe(self.cookie, "user-bob")
        self.assertEqual(denied["allow"], False)
        self.assertIn("only_own_group", denied["reason"])

    def test_a_subscribe_call_without_a_group_400(self):
        with self.assertLogs("rohrpost_bridge", "WARNING"):
            response = self.post("subscribe/", {"v": 1, "event": "subscribe", "connection": connection()})
        self.assertEqual(response.status_code, 400)
