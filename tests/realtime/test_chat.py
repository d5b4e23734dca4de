"""Chat and presence over real Socket.IO clients against two real API instances."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import socketio

from tests.api.test_api import _events_for
from tests.conftest import Stack
from tests.realtime.conftest import LEASE_TTL, Pair, Sock, connect_people, make_person


def test_message_crosses_instances_and_spoofed_sender_is_ignored(pair: Pair) -> None:
    ada, bob, eve = (make_person(pair.a) for _ in range(3))
    connect_people(pair.a, ada, bob)

    async def scenario() -> None:
        a, b = Sock(ada, pair.a.url), Sock(bob, pair.b.url)
        await a.connect()
        await b.connect()
        try:
            ack = await a.client.call(
                "private-message",
                {"toUserId": bob.id, "message": "  hello  ", "fromUserId": eve.id},
                timeout=10,
            )
            assert ack["ok"] is True
            [got] = await b.wait_for("private-message")
            assert got["message"] == "hello" and got["fromUserId"] == ada.id
            [echo] = await a.wait_for("private-message")
            assert echo["fromUserId"] == ada.id
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())
    history = bob.http.get(f"/chat/{ada.id}/history").json()
    assert [m["text"] for m in history["data"]] == ["hello"]


def test_only_connections_may_message_and_bad_payloads_keep_the_socket(pair: Pair) -> None:
    ada, stranger = make_person(pair.a), make_person(pair.b)

    async def scenario() -> None:
        a = Sock(ada, pair.a.url)
        await a.connect()
        try:
            ack = await a.client.call(
                "private-message", {"toUserId": stranger.id, "message": "hi"}, timeout=10
            )
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
            for bad in (
                None,
                "text",
                [1, 2],
                {"toUserId": 5, "message": "x"},
                {"toUserId": stranger.id},
                {"toUserId": "nope", "message": "x"},
                {"toUserId": stranger.id, "message": " " * 10},
                {"toUserId": stranger.id, "message": "x" * 5001},
            ):
                ack = await a.client.call("private-message", bad, timeout=10)
                assert ack["ok"] is False and ack["error"]["code"] in (
                    "invalid-input",
                    "forbidden",
                ), (bad, ack)
            errors = await a.wait_for("error", count=9)
            assert all(set(e) >= {"code", "message"} for e in errors)
            # Still connected and answering after all that.
            assert (await a.client.call("register", ada.id, timeout=10))["userId"] == ada.id
            denied = await a.client.call("presence:query", {"userId": stranger.id}, timeout=10)
            assert denied["error"]["code"] == "forbidden"
            mine = await a.client.call("presence:query", {"userId": ada.id}, timeout=10)
            assert mine["online"] is True
            assert a.client.connected
        finally:
            await a.close()

    asyncio.run(scenario())


def test_unauthenticated_handshakes_are_refused(pair: Pair) -> None:
    ada = make_person(pair.a)

    async def scenario() -> None:
        for cookie in ("", "forged~tag", ada.cookie + "x"):
            sock = Sock(ada, pair.a.url)
            try:
                await sock.connect(cookie=cookie)
            except socketio.exceptions.ConnectionError:
                [refusal] = sock.of("connect_error")
                # JSON for a JavaScript client: err.message and err.data.code.
                assert refusal == {
                    "message": "Please log in",
                    "data": {"code": "unauthenticated", "message": "Please log in"},
                }, refusal
            else:
                await sock.close()
                raise AssertionError(f"connected with cookie {cookie!r}")
        # The same signed value in the handshake's auth works (clients without cookies).
        sock = Sock(ada, pair.a.url)
        await sock.connect(cookie="", auth={"token": ada.cookie})
        assert sock.client.connected
        await sock.close()

    asyncio.run(scenario())


def test_long_polling_first_then_upgrade_as_the_web_client_does(pair: Pair) -> None:
    ada, bob = make_person(pair.a), make_person(pair.a)
    connect_people(pair.a, ada, bob)

    async def scenario() -> None:
        a = Sock(ada, pair.a.url, transports=["polling", "websocket"])
        b = Sock(bob, pair.b.url, transports=["polling"])
        await a.connect()
        await b.connect()
        try:
            await a.client.call("private-message", {"toUserId": bob.id, "message": "poll"})
            [got] = await b.wait_for("private-message")
            assert got["message"] == "poll"
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_presence_transition_is_announced_once_across_tabs_and_instances(pair: Pair) -> None:
    ada, bob = make_person(pair.a), make_person(pair.a)
    connect_people(pair.a, ada, bob)

    async def scenario() -> None:
        watcher = Sock(bob, pair.b.url)
        await watcher.connect()
        tabs = [Sock(ada, pair.a.url), Sock(ada, pair.b.url), Sock(ada, pair.a.url)]
        try:
            await asyncio.gather(*(tab.connect() for tab in tabs))
            await watcher.wait_for("presence")
            await asyncio.sleep(1.0)  # room for duplicates to show up
            assert watcher.of("presence") == [{"userId": ada.id, "online": True}]
            state = await watcher.client.call("presence:query", {"userId": ada.id})
            assert state["online"] is True
            await tabs[0].close()
            await tabs[1].close()
            await asyncio.sleep(0.5)
            assert len(watcher.of("presence")) == 1  # one tab left: still online
            await tabs[2].close()
            await watcher.wait_for("presence", count=2)
            await asyncio.sleep(1.0)
            assert watcher.of("presence")[1:] == [{"userId": ada.id, "online": False}]
            state = await watcher.client.call("presence:query", {"userId": ada.id})
            assert state["online"] is False
        finally:
            for sock in (watcher, *tabs):
                await sock.close()

    asyncio.run(scenario())


def test_killed_instance_users_go_offline_once_after_a_sweep(pair: Pair, stack: Stack) -> None:
    ada, bob = make_person(pair.a), make_person(pair.a)
    connect_people(pair.a, ada, bob)

    async def scenario() -> float:
        watcher = Sock(bob, pair.a.url)
        await watcher.connect()
        tabs = [Sock(ada, pair.b.url), Sock(ada, pair.b.url)]
        try:
            for tab in tabs:
                await tab.connect()
            await watcher.wait_for("presence")
            os.killpg(pair.b.proc.pid, signal.SIGKILL)
            pair.b.proc.wait()
            killed = time.monotonic()
            await watcher.wait_for("presence", count=2, timeout=6 * LEASE_TTL)
            took = time.monotonic() - killed
            await asyncio.sleep(LEASE_TTL)  # another sweep: it must not announce again
            assert watcher.of("presence") == [
                {"userId": ada.id, "online": True},
                {"userId": ada.id, "online": False},
            ]
            return took
        finally:
            for sock in (watcher, *tabs):
                with contextlib.suppress(Exception):
                    await sock.close()

    try:
        took = asyncio.run(scenario())
        # Lease TTL, then at most one sweep interval (TTL/2), plus scheduling slack.
        assert took < LEASE_TTL * 1.5 + 2
        events = _events_for(stack, "user-events", ada.id, 3, timeout=15)
        types = [e["type"] for e in events]
        assert types.count("devconnect.user.online") == 1
        assert types.count("devconnect.user.offline") == 1
    finally:
        pair.restart("b")


def test_a_socket_outliving_its_session_cannot_act_and_is_closed(pair: Pair) -> None:
    ada, bob = make_person(pair.a), make_person(pair.a)
    connect_people(pair.a, ada, bob)

    async def scenario() -> None:
        a = Sock(ada, pair.a.url)
        await a.connect()
        try:
            assert (
                await a.client.call(
                    "private-message", {"toUserId": bob.id, "message": "before"}, timeout=10
                )
            )["ok"]
            assert ada.http.post("/logout", json={}).status_code == 200
            # The socket is closed right after the error: no ack comes back.
            await a.client.emit("private-message", {"toUserId": bob.id, "message": "after"})
            [error] = await a.wait_for("error")
            assert error["code"] == "unauthenticated"
            deadline = time.monotonic() + 5
            while a.client.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not a.client.connected
        finally:
            await a.close()

    asyncio.run(scenario())
    history = bob.http.get(f"/chat/{ada.id}/history").json()["data"]
    assert [m["text"] for m in history] == ["before"]


def test_client_events_named_like_lifecycle_ones_change_nothing(pair: Pair) -> None:
    """A client emitting "disconnect"/"connect" must not fake presence transitions."""
    ada, bob = make_person(pair.a), make_person(pair.a)
    connect_people(pair.a, ada, bob)

    async def scenario() -> None:
        watcher, a = Sock(bob, pair.b.url), Sock(ada, pair.a.url)
        await watcher.connect()
        await a.connect()
        try:
            await watcher.wait_for("presence")
            for _ in range(5):
                await a.client.emit("disconnect", {"x": 1})
                await a.client.emit("connect", {"HTTP_COOKIE": f"token={ada.cookie}"})
            # A tuple is sent as several arguments: the handler takes the first.
            await a.client.emit("private-message", ({"toUserId": bob.id, "message": "hi"}, "x", 3))
            await watcher.wait_for("private-message")
            await asyncio.sleep(1.0)
            assert watcher.of("presence") == [{"userId": ada.id, "online": True}]
            state = await watcher.client.call("presence:query", {"userId": ada.id}, timeout=10)
            assert state["online"] is True and a.client.connected
        finally:
            await a.close()
            await watcher.close()

    asyncio.run(scenario())


def test_malformed_frames_cost_one_log_line_not_a_traceback(pair: Pair) -> None:
    import websockets

    uri = pair.a.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    before = pair.a.log()

    async def scenario() -> None:
        async with websockets.connect(uri, ping_interval=None) as ws:
            assert (await ws.recv()).startswith("0")
            for frame in ('42["register"', "4" + "[" * 5000 + "]" * 5000, "9", "4zzz"):
                await ws.send(frame)
            await asyncio.sleep(0.5)

    asyncio.run(scenario())
    time.sleep(0.5)
    new = pair.a.log()[len(before) :]
    assert "Traceback" not in new and "Exception in ASGI application" not in new, new


def test_one_user_holds_at_most_the_cap_of_sockets_on_an_instance(pair: Pair) -> None:
    from devctl.realtime.handlers import MAX_SOCKETS_PER_USER

    ada = make_person(pair.a)

    async def scenario() -> None:
        tabs = [
            Sock(ada, pair.a.url, transports=["websocket"]) for _ in range(MAX_SOCKETS_PER_USER)
        ]
        extra = Sock(ada, pair.a.url, transports=["websocket"])
        try:
            await asyncio.gather(*(tab.connect() for tab in tabs))
            try:
                await extra.connect()
            except socketio.exceptions.ConnectionError:
                [refusal] = extra.of("connect_error")
                assert refusal["data"]["code"] == "too-many-connections", refusal
            else:
                raise AssertionError("one socket over the cap was accepted")
            await tabs[0].close()
            again = Sock(ada, pair.a.url, transports=["websocket"])
            await again.connect()  # room again once one closed
            tabs[0] = again
        finally:
            await asyncio.gather(*(tab.close() for tab in tabs), return_exceptions=True)

    asyncio.run(scenario())
