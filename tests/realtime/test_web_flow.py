"""The web client's whole flow from the outside, against `devctl serve --instances 2`.

Sign up two users, request, get notified live, accept, chat, see presence: through
HTTP and Socket.IO only, on two instances and with the consumers `serve` runs.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from devctl.engines.processes import free_port
from tests.cli.conftest import Cli, cli  # noqa: F401  (a fixture, used by name)
from tests.realtime.conftest import Person, Sock

ORIGIN = "http://localhost:5173"  # FRONTEND_URL's default


def _signup(url: str) -> Person:
    client = httpx.Client(base_url=url, timeout=30, headers={"Origin": ORIGIN})
    email = f"web{uuid.uuid4().hex[:10]}@example.com"
    answer = client.post(
        "/signup",
        json={
            "firstName": "Linus",
            "lastName": "Torvalds",
            "emailId": email,
            "password": "Str0ng!pass",
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    return Person(str(answer.json()["_id"]), email, client.cookies["token"], client)


def test_signup_request_accept_chat_presence_across_two_served_instances(cli: Cli) -> None:  # noqa: F811
    port = free_port()
    started = cli.run("serve", "--detach", "--instances", "2", "--port", str(port), timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    one, two = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    try:
        preflight = httpx.options(
            two + "/socket.io/?EIO=4&transport=polling",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        assert preflight.headers.get("access-control-allow-origin") == ORIGIN
        assert preflight.headers.get("access-control-allow-credentials") == "true"
        foreign = httpx.get(
            two + "/socket.io/?EIO=4&transport=polling", headers={"Origin": "http://evil.example"}
        )
        assert foreign.headers.get("access-control-allow-origin") != "http://evil.example"

        ada, bob = _signup(one), _signup(two)

        async def flow() -> None:
            a, b = Sock(ada, one, transports=["polling", "websocket"]), Sock(bob, two)
            await a.connect()
            await b.connect()
            try:
                await a.client.emit("register", ada.id)
                sent = ada.http.post(f"/request/send/interested/{bob.id}")
                assert sent.status_code == 200, sent.text
                # The notifications consumer's first group join takes a few seconds.
                [note] = await b.wait_for("notification", timeout=60)
                assert note["notification"]["fromUserId"] == ada.id
                request_id = sent.json()["data"]["_id"]
                accepted = bob.http.post(f"/request/review/accepted/{request_id}")
                assert accepted.status_code == 200, accepted.text
                [back] = await a.wait_for("notification", timeout=30)
                assert back["notification"]["fromUserId"] == bob.id

                state = await a.client.call("presence:query", {"userId": bob.id}, timeout=10)
                assert state == {"ok": True, "userId": bob.id, "online": True}
                await a.client.emit("private-message", {"toUserId": bob.id, "message": "hi bob"})
                [got] = await b.wait_for("private-message")
                assert got["fromUserId"] == ada.id and got["message"] == "hi bob"
                await b.client.emit("private-message", {"toUserId": ada.id, "message": "hi ada"})
                await a.wait_for("private-message", count=2)
                assert a.of("private-message")[1]["fromUserId"] == bob.id

                await b.close()
                [gone] = await a.wait_for("presence")
                assert gone == {"userId": bob.id, "online": False}
            finally:
                await a.close()
                await b.close()

        asyncio.run(flow())
        history = ada.http.get(f"/chat/{bob.id}/history").json()["data"]
        assert [(m["fromUserId"], m["text"]) for m in history] == [
            (ada.id, "hi bob"),
            (bob.id, "hi ada"),
        ]
        listed = bob.http.get("/notifications").json()
        assert listed["unread"] >= 1 and listed["data"][0]["fromUserId"] == ada.id
    finally:
        down = cli.run("down", timeout=120)
    assert down.returncode == 0, down.stderr
