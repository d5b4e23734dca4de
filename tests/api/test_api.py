"""The whole HTTP API against a real uvicorn, Valkey, Tansu and database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.api.conftest import STRONG_PASSWORD, ApiServer
from tests.conftest import Stack


def error_code(answer: Any) -> str:
    body = answer.json()
    assert isinstance(body["message"], str) and body["message"]
    return str(body["error"]["code"])


# --- sign-up, login, logout --------------------------------------------------


def test_signup_answers_the_user_at_the_top_level_and_sets_the_cookie(api: ApiServer) -> None:
    client = api.client()
    email = f"Grace.{uuid.uuid4().hex[:8]}@Example.COM "
    answer = client.post(
        "/signup",
        json={
            "firstName": " Grace ",
            "lastName": "Hopper",
            "emailId": email,
            "password": STRONG_PASSWORD,
        },
    )
    assert answer.status_code == 200, answer.text
    user = answer.json()
    assert len(user["_id"]) == 24 and int(user["_id"], 16) >= 0
    assert user["firstName"] == "Grace" and user["emailId"] == email.strip().lower()
    assert user["membershipTier"] == "free" and user["isPremium"] is False
    assert user["photoUrl"].startswith("https://") and user["about"] and user["skills"] == []
    assert "password" not in user and "passwordHash" not in json.dumps(user)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("token=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert client.get("/profile/view").json() == user


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"firstName": "A"}, "firstName"),
        ({"firstName": "x" * 51}, "firstName"),
        ({"emailId": "not-an-email"}, "emailId"),
        ({"password": "weakpassword"}, "password"),
        ({"password": "Sh0rt!"}, "password"),
        ({"age": 17}, "age"),
        ({"gender": "robot"}, "gender"),
        ({"firstName": "\u200b\u200b"}, "firstName"),  # invisible
        ({"firstName": "Ada\u202e"}, "firstName"),  # a direction override
        ({"lastName": "12"}, "lastName"),  # no letter
        ({"isPremium": True}, "isPremium"),  # not settable by the user
    ],
)
def test_signup_refuses_bad_input_with_a_field(
    api: ApiServer, change: dict[str, Any], field: str
) -> None:
    body = {
        "firstName": "Ada",
        "emailId": f"a{uuid.uuid4().hex[:8]}@example.com",
        "password": STRONG_PASSWORD,
    }
    body.update(change)
    answer = api.client().post("/signup", json=body)
    assert answer.status_code == 400, answer.text
    assert error_code(answer) == "invalid-input"
    assert answer.json()["error"]["field"] == field


def test_the_sqlite_database_is_private(api: ApiServer) -> None:
    if not api.database_url.startswith("sqlite:///"):
        pytest.skip("a PostgreSQL server keeps its own files")
    path = Path(api.database_url.removeprefix("sqlite:///"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # emails and password hashes


def test_signup_with_a_taken_email_is_a_conflict(api: ApiServer, signup: Any) -> None:
    user = signup()
    answer = api.client().post(
        "/signup",
        json={"firstName": "Eve", "emailId": user.email.upper(), "password": STRONG_PASSWORD},
    )
    assert answer.status_code == 409 and error_code(answer) == "conflict"


def test_login_answers_the_user_and_one_generic_error(api: ApiServer, signup: Any) -> None:
    user = signup()
    client = api.client()
    answer = client.post("/login", json={"emailId": user.email, "password": user.password})
    assert answer.status_code == 200 and answer.json() == user.body
    assert client.get("/profile/view").status_code == 200
    wrong = api.client().post("/login", json={"emailId": user.email, "password": "Wr0ng!pass"})
    unknown = api.client().post(
        "/login",
        json={"emailId": f"nobody{uuid.uuid4().hex[:6]}@example.com", "password": "Wr0ng!pass"},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()  # no account enumeration


def test_login_is_rate_limited_per_email_with_retry_after(api: ApiServer, signup: Any) -> None:
    user = signup()
    answers = [
        api.client()
        .post("/login", json={"emailId": user.email, "password": "Wr0ng!pass"})
        .status_code
        for _ in range(6)
    ]
    assert answers[:5] == [401] * 5 and answers[5] == 429
    limited = api.client().post("/login", json={"emailId": user.email, "password": user.password})
    assert limited.status_code == 429 and error_code(limited) == "rate-limited"
    assert int(limited.headers["retry-after"]) >= 1


def test_login_is_rate_limited_per_ip(api: ApiServer, signup: Any) -> None:
    user = signup()
    client = api.client()  # one source address for all 21
    statuses = [
        client.post(
            "/login", json={"emailId": f"x{i}{user.email}", "password": "Wr0ng!pass"}
        ).status_code
        for i in range(21)
    ]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429
    # Another address is not limited.
    assert (
        api.client()
        .post("/login", json={"emailId": user.email, "password": user.password})
        .status_code
        == 200
    )


def test_logout_revokes_the_session_and_clears_the_cookie(api: ApiServer, signup: Any) -> None:
    user = signup()
    token = user.client.cookies["token"]
    answer = user.client.post("/logout", json={})
    assert answer.status_code == 200 and answer.json()["message"]
    assert 'token=""' in answer.headers["set-cookie"] or "Max-Age=0" in answer.headers["set-cookie"]
    # The old token is dead, even presented again by hand.
    again = api.client().get("/profile/view", headers={"Authorization": f"Bearer {token}"})
    assert again.status_code == 401
    assert api.client().post("/logout", json={}).status_code == 200  # not logged in: fine


def test_bearer_token_works_like_the_cookie(api: ApiServer, signup: Any) -> None:
    user = signup()
    token = user.client.cookies["token"]
    answer = api.client().get("/profile/view", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["_id"] == user.id


@pytest.mark.parametrize(
    "cookie",
    ["", "garbage", "dc1.x.y~z", "a" * 5000, "dc1.ÿ~ÿ"],
)
def test_profile_view_without_a_valid_session_is_exactly_401(api: ApiServer, cookie: str) -> None:
    client = api.client()
    headers = {"cookie": f"token={cookie}".encode()} if cookie else {}  # raw bytes: odd ones too
    answer = client.get("/profile/view", headers=headers)
    assert answer.status_code == 401 and error_code(answer) == "unauthenticated"


def test_a_tampered_cookie_is_refused(api: ApiServer, signup: Any) -> None:
    user = signup()
    token = user.client.cookies["token"]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    client = api.client()
    client.cookies.set("token", forged)
    assert client.get("/profile/view").status_code == 401


# --- profile -----------------------------------------------------------------


def test_the_edit_page_payload_saves_and_the_cache_follows(api: ApiServer, signup: Any) -> None:
    user = signup()
    assert user.client.get("/profile/view").json()["age"] is None  # cached now
    edit = {
        "firstName": "Ada",
        "lastName": "",
        "age": "25",
        "gender": "",
        "photoUrl": "",
        "about": "Analytical engines",
        "skills": ["math", "poetry"],
    }
    answer = user.client.patch(f"/user/{user.id}", json=edit)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert answer.json()["message"] and data["age"] == 25 and data["lastName"] is None
    assert data["about"] == "Analytical engines" and data["skills"] == ["math", "poetry"]
    # Profile edits invalidate (write through) the user cache.
    assert user.client.get("/profile/view").json() == data


def test_editing_another_user_is_forbidden(api: ApiServer, signup: Any) -> None:
    me, other = signup(), signup()
    answer = me.client.patch(f"/user/{other.id}", json={"about": "pwned"})
    assert answer.status_code == 403 and error_code(answer) == "forbidden"
    assert other.client.get("/profile/view").json()["about"] != "pwned"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"age": "abc"}, "age"),
        ({"age": 12}, "age"),
        ({"photoUrl": "javascript:alert(1)"}, "photoUrl"),
        ({"skills": ["x" * 51]}, "skills.0"),
        ({"emailId": "new@example.com"}, "emailId"),
        ({"about": "x" * 1001}, "about"),
    ],
)
def test_profile_edit_refuses_bad_values(
    api: ApiServer, signup: Any, body: dict[str, Any], field: str
) -> None:
    user = signup()
    answer = user.client.patch("/profile/edit", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


def test_password_change_ends_other_sessions(api: ApiServer, signup: Any) -> None:
    user = signup()
    other = api.client()
    assert (
        other.post("/login", json={"emailId": user.email, "password": user.password}).status_code
        == 200
    )
    wrong = user.client.patch(
        "/profile/password", json={"currentPassword": "Nope!1234", "newPassword": "N3w!password"}
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "currentPassword"
    answer = user.client.patch(
        "/profile/password", json={"currentPassword": user.password, "newPassword": "N3w!password"}
    )
    assert answer.status_code == 200
    assert user.client.get("/profile/view").status_code == 200  # the fresh cookie works
    assert other.get("/profile/view").status_code == 401
    assert (
        api.client()
        .post("/login", json={"emailId": user.email, "password": "N3w!password"})
        .status_code
        == 200
    )


# --- connections and the feed --------------------------------------------------


def test_request_flow_from_feed_to_connections(api: ApiServer, signup: Any) -> None:
    me, them, passer = signup(), signup(), signup()
    feed_ids = {u["_id"] for u in me.client.get("/feed?ml=true&limit=10&page=1").json()["data"]}
    assert me.id not in feed_ids
    sent = me.client.post(f"/request/send/interested/{them.id}", json={})
    assert sent.status_code == 200, sent.text
    request = sent.json()["data"]
    assert request["fromUserId"] == me.id and request["status"] == "interested"
    # The web client's Ignore button says "ignore"; it is stored as "ignored".
    ignored = passer.client.post(f"/request/send/ignore/{me.id}", json={})
    assert ignored.status_code == 200 and ignored.json()["data"]["status"] == "ignored"
    # One request per pair, whichever direction.
    assert them.client.post(f"/request/send/interested/{me.id}", json={}).status_code == 409
    assert me.client.post(f"/request/send/interested/{them.id}", json={}).status_code == 409
    # Neither shows in the other's feed any more.
    for user, gone in ((me, them), (them, me), (me, passer)):
        page = user.client.get("/feed?limit=200").json()["data"]
        assert gone.id not in {u["_id"] for u in page}
    received = them.client.get("/user/requests/received").json()["data"]
    mine = [r for r in received if r["_id"] == request["_id"]]
    assert (
        mine
        and mine[0]["fromUserId"]["_id"] == me.id
        and mine[0]["fromUserId"]["firstName"] == "Ada"
    )
    assert "emailId" not in mine[0]["fromUserId"]
    # Only pending requests *to me* are listed: the passer's "ignored" is not.
    assert all(
        r["status"] == "interested" for r in me.client.get("/user/requests/received").json()["data"]
    )
    # Only the recipient may answer.
    assert (
        me.client.patch(
            f"/user/requests/{request['_id']}/respond", json={"action": "accept"}
        ).status_code
        == 404
    )
    answer = them.client.patch(
        f"/user/requests/{request['_id']}/respond", json={"action": "accept"}
    )
    assert answer.status_code == 200 and answer.json()["data"]["status"] == "accepted"
    # Answered once: not pending any more.
    assert them.client.post(f"/request/review/rejected/{request['_id']}").status_code == 404
    assert them.id in {u["_id"] for u in me.client.get("/user/connections").json()["data"]}
    assert me.id in {u["_id"] for u in them.client.get("/user/connections").json()["data"]}
    assert "emailId" not in me.client.get("/user/connections").json()["data"][0]


def test_review_route_rejects(api: ApiServer, signup: Any) -> None:
    me, them = signup(), signup()
    request = me.client.post(f"/request/send/interested/{them.id}", json={}).json()["data"]
    assert them.client.post(f"/request/review/maybe/{request['_id']}").status_code == 400
    answer = them.client.post(f"/request/review/rejected/{request['_id']}")
    assert answer.status_code == 200 and answer.json()["data"]["status"] == "rejected"
    assert them.id not in {u["_id"] for u in me.client.get("/user/connections").json()["data"]}


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/request/send/interested/{me}", 400, "invalid-input"),
        ("/request/send/interested/ffffffffffffffffffffffff", 404, "not-found"),
        ("/request/send/interested/not-an-id", 400, "invalid-input"),
        ("/request/send/accepted/{other}", 400, "invalid-input"),
        ("/request/review/accepted/ffffffffffffffffffffffff", 404, "not-found"),
    ],
)
def test_request_errors(api: ApiServer, signup: Any, path: str, status: int, code: str) -> None:
    me, other = signup(), signup()
    answer = me.client.post(path.format(me=me.id, other=other.id), json={})
    assert answer.status_code == status, answer.text
    assert error_code(answer) == code


def test_free_tier_daily_request_limit_answers_429_with_the_numbers(
    api: ApiServer, signup: Any
) -> None:
    me = signup()
    targets = [signup() for _ in range(11)]
    statuses = [me.client.post(f"/request/send/interested/{t.id}", json={}) for t in targets]
    assert [s.status_code for s in statuses[:10]] == [200] * 10
    limited = statuses[10]
    assert limited.status_code == 429, limited.text
    body = limited.json()
    assert body["tier"] == "free" and body["limit"] == 10 and body["used"] == 10 and body["message"]
    assert int(limited.headers["retry-after"]) >= 1
    # Passing on someone is not a request: not limited.
    assert me.client.post(f"/request/send/ignored/{signup().id}", json={}).status_code == 200


def test_feed_limit_is_capped_by_tier_and_pages(api: ApiServer, signup: Any) -> None:
    me = signup()
    for _ in range(12):
        signup()
    first = me.client.get("/feed?limit=500&page=1").json()
    assert first["limit"] == 10 and len(first["data"]) == 10
    second = me.client.get("/feed?limit=10&page=2").json()["data"]
    assert not {u["_id"] for u in first["data"]} & {u["_id"] for u in second}
    assert me.client.get("/feed?page=0").status_code == 400
    assert me.client.get("/feed?page=abc").status_code == 400


# --- chat history ------------------------------------------------------------


def test_chat_history_is_empty_then_oldest_first_with_plain_ids(
    api: ApiServer, signup: Any
) -> None:
    import asyncio

    me, them = signup(), signup()
    assert me.client.get(f"/chat/{them.id}/history").json() == {"data": []}
    asyncio.run(_write_messages(api.database_url, me.id, them.id, 3))
    data = me.client.get(f"/chat/{them.id}/history").json()["data"]
    assert [m["text"] for m in data] == ["hello 0", "hello 1", "hello 2"]
    assert all(m["fromUserId"] == me.id and isinstance(m["fromUserId"], str) for m in data)
    assert them.client.get(f"/chat/{me.id}/history?limit=2").json()["data"][-1]["text"] == "hello 2"
    assert me.client.get(f"/chat/{them.id}/history?limit=0").status_code == 400


async def _write_messages(url: str, sender: str, to: str, count: int) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.ext.asyncio import async_sessionmaker

    from devctl.db.engine import make_engine
    from devctl.db.ids import new_id
    from devctl.db.models import Message
    from devctl.events.schemas import conversation_id

    engine = make_engine(url)
    try:
        async with async_sessionmaker(engine)() as session, session.begin():
            start = datetime.now(UTC)
            for i in range(count):
                session.add(
                    Message(
                        id=new_id(),
                        from_user_id=sender,
                        to_user_id=to,
                        conversation_id=conversation_id(sender, to),
                        text=f"hello {i}",
                        ts=start + timedelta(milliseconds=i),
                    )
                )
    finally:
        await engine.dispose()


# --- events through the outbox -----------------------------------------------


def _events_for(
    stack: Stack, topic: str, key: str, want: int, timeout: float = 20
) -> list[dict[str, Any]]:
    consumer = Consumer(
        {
            "bootstrap.servers": stack.endpoints.kafka_brokers,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < want:
            for record in consumer.consume(500, 0.5):
                if record.error() is None and record.key() == key.encode():
                    found.append(json.loads(record.value()))
        return found
    finally:
        consumer.close()


def test_state_changes_reach_kafka_through_the_outbox(
    api: ApiServer, signup: Any, stack: Stack
) -> None:
    user = signup()
    api.client().post("/login", json={"emailId": user.email, "password": user.password})
    user.client.patch("/profile/edit", json={"about": "changed"})
    user.client.post("/logout", json={})
    events = _events_for(stack, "user-events", user.id, 4)
    types = [e["type"] for e in events]
    assert types == [
        "devconnect.user.signup",
        "devconnect.user.login",
        "devconnect.user.profile_updated",
        "devconnect.user.logout",
    ]
    assert events[0]["data"]["emailId"] == user.email and events[2]["data"]["changed"] == ["about"]
    assert len({e["id"] for e in events}) == 4


# --- transport: errors, CORS, operations ----------------------------------------


def test_errors_are_json_with_a_message(api: ApiServer, signup: Any) -> None:
    client = api.client()
    assert error_code(client.get("/no/such/route")) == "not-found"
    bad_json = client.post(
        "/signup", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and error_code(bad_json) == "invalid-input"
    huge = client.post(
        "/signup", content=b"x" * (2 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413 and error_code(huge) == "too-large"
    wrong_method = client.delete("/signup")
    assert wrong_method.status_code == 405 and error_code(wrong_method) == "method-not-allowed"
    for path, method in (("/email-preferences", "GET"), ("/payments/phonepe/create", "POST")):
        answer = client.request(method, path)
        assert answer.status_code == 404 and answer.json()["message"]


def test_cors_answers_the_allowed_origin_exactly(api: ApiServer) -> None:
    client = api.client()
    preflight = client.options(
        "/signup",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert preflight.headers["access-control-allow-credentials"] == "true"
    other = client.get("/healthz", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_every_answer_carries_cors_headers(api: ApiServer, signup: Any) -> None:
    """A browser hides an answer without them: the 401 of /profile/view above all."""
    origin = {"Origin": "http://localhost:5173"}
    user = signup()
    answers = [
        user.client.get("/profile/view", headers=origin),  # the fast path, 200
        api.client().get("/profile/view", headers=origin),  # the fast path, 401
        user.client.get("/user/connections", headers=origin),  # the router
        api.client().post(
            "/signup",
            content=b"x" * (2 * 1024 * 1024),
            headers={**origin, "content-type": "application/json"},
        ),  # 413
        api.client().get("/no/such/route", headers=origin),
    ]
    assert [a.status_code for a in answers] == [200, 401, 200, 413, 404]
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == "http://localhost:5173"
        assert answer.headers["access-control-allow-credentials"] == "true"


def test_health_readiness_and_metrics(api: ApiServer, signup: Any) -> None:
    client = api.client()
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"redis", "kafka", "database"}
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in checks.values())
    signup().client.get("/profile/view")
    text = client.get("/metrics").text
    for name in (
        'devconnect_http_requests_total{method="GET",route="/profile/view",status="200"}',
        "devconnect_http_request_duration_seconds_bucket",
        "devconnect_outbox_backlog",
        "devconnect_user_cache_hit_ratio",
        "devconnect_producer_queue",
    ):
        assert name in text, name
    assert "/no/such" not in text  # unmatched paths share one label
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["paths"]["/signup"]
