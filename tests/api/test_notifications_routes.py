"""GET /notifications and POST /notifications/read against a real API instance.

Notifications are written with the Redis domain's sync face (what the consumer
stores), for users made through the API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devctl.state.keys import KeySchema
from devctl.state.notifications import Notifications, new_notification
from tests.api.conftest import ApiServer, User
from tests.conftest import Stack


@pytest.fixture
def notes(stack: Stack) -> Iterator[Notifications]:
    client = stack.redis()
    state = stack.settings.state
    try:
        yield Notifications(
            client,
            KeySchema(stack.settings.redis.key_prefix),
            max_items=state.notifications_max,
            ttl=state.notifications_ttl,
        )
    finally:
        client.close()


def give(notes: Notifications, user: User, count: int) -> list[str]:
    """Store ``count`` notifications for ``user``; their ids, newest first."""
    ids = []
    for n in range(count):
        made = new_notification(
            id=f"{user.id}n{n}",
            type="connection_request",
            user_id=user.id,
            from_user_id="a" * 24,
            text="You have a new connection request",
            data={"requestId": f"r{n}"},
            created_at=f"2026-12-01T10:00:0{n}Z",
        )
        notes.add(made)
        ids.insert(0, made["id"])
    return ids


def test_list_newest_first_with_the_unread_count_and_a_limit(
    signup: Callable[..., User], notes: Notifications
) -> None:
    me = signup()
    ids = give(notes, me, 3)
    answer = me.client.get("/notifications")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [n["id"] for n in body["data"]] == ids
    assert body["unread"] == 3
    first = body["data"][0]
    assert first == {
        "id": ids[0],
        "type": "connection_request",
        "userId": me.id,
        "fromUserId": "a" * 24,
        "text": "You have a new connection request",
        "data": {"requestId": "r2"},
        "createdAt": "2026-12-01T10:00:02Z",
        "read": False,
    }
    limited = me.client.get("/notifications", params={"limit": 2}).json()
    assert [n["id"] for n in limited["data"]] == ids[:2]
    assert limited["unread"] == 3


def test_a_user_with_none_gets_an_empty_list(signup: Callable[..., User]) -> None:
    answer = signup().client.get("/notifications")
    assert answer.status_code == 200
    assert answer.json() == {"data": [], "unread": 0}


def test_mark_some_read_then_the_unread_filter_then_all(
    signup: Callable[..., User], notes: Notifications
) -> None:
    me = signup()
    other = signup()
    ids = give(notes, me, 4)
    others = give(notes, other, 1)
    marked = me.client.post("/notifications/read", json={"ids": [ids[1], ids[3], "unknown"]})
    assert marked.status_code == 200, marked.text
    assert marked.json() == {"unread": 2}
    only_unread = me.client.get("/notifications", params={"unread": "true"}).json()
    assert [n["id"] for n in only_unread["data"]] == [ids[0], ids[2]]
    assert only_unread["unread"] == 2
    everything = me.client.get("/notifications").json()["data"]
    assert [n["read"] for n in everything] == [False, True, False, True]
    # Someone else's id marks nothing of theirs.
    assert me.client.post("/notifications/read", json={"ids": others}).json() == {"unread": 2}
    assert other.client.get("/notifications").json()["unread"] == 1
    # No ids: all of mine; again: still 0.
    assert me.client.post("/notifications/read", json={}).json() == {"unread": 0}
    assert me.client.post("/notifications/read").json() == {"unread": 0}
    assert me.client.get("/notifications", params={"unread": True}).json() == {
        "data": [],
        "unread": 0,
    }
    assert other.client.get("/notifications").json()["unread"] == 1


def test_not_logged_in_is_401(api: ApiServer) -> None:
    client = api.client()
    for answer in (
        client.get("/notifications"),
        client.post("/notifications/read", json={}),
        client.post("/notifications/read", json={"ids": 5}),  # 401 before the body's check
    ):
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "unauthenticated"
        assert answer.json()["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": "abc"}, "ids"),
        ({"ids": ['x",']}, "ids.0"),
        ({"ids": [""]}, "ids.0"),
        ({"ids": ["a" * 65]}, "ids.0"),
        ({"ids": [f"n{i}" for i in range(1001)]}, "ids"),
        ({"id": ["n1"]}, "id"),
        ([], None),
    ],
)
def test_a_bad_body_is_refused_naming_the_field(
    signup: Callable[..., User], body: Any, field: str | None
) -> None:
    me = signup()
    answer = me.client.post("/notifications/read", json=body)
    # The API answers every invalid input 400 (devctl/api/errors.py, docs/api.md).
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "invalid-input"
    assert error.get("field") == field


def test_not_json_is_refused(signup: Callable[..., User]) -> None:
    answer = signup().client.post(
        "/notifications/read", content=b"{ids", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["message"] == "the body is not valid JSON"


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"unread": "perhaps"}]
)
def test_bad_query_values_are_refused(signup: Callable[..., User], params: dict[str, Any]) -> None:
    answer = signup().client.get("/notifications", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == next(iter(params))
