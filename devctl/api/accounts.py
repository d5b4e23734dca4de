"""Accounts: sign-up, login, logout, who a token belongs to, profile and password changes.

Each state change commits its row and its event (into the outbox) in one
transaction; sessions live in Redis (devctl.state). A change that also needs Redis
(a new session, revoked sessions, an invalidated cache entry) makes that Redis call
inside the database transaction, before the commit: if Redis fails, the transaction
rolls back and the answer (503) is true, nothing changed. The reverse (Redis done,
then the commit fails) leaves only harmless traces: a session of a user who does not
exist is refused and revoked on first use. Writing the cache after the commit is
best effort: the entry was already dropped before the commit, so a failed write only
costs the next request a load. Login answers one generic
"invalid credentials" for an unknown email and for a wrong password, after the
same work (an argon2 verification against a dummy hash), so neither the answer
nor its timing tells whether an account exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from devctl.api.backend import Backend
from devctl.api.schemas import PasswordBody, ProfileEditBody, SignupBody
from devctl.api.security import hash_password, verify_password
from devctl.api.views import user_json
from devctl.db.ids import new_id
from devctl.db.models import User
from devctl.errors import (
    Conflict,
    DevctlError,
    InvalidInput,
    NotFound,
    Unauthenticated,
)

log = logging.getLogger("devctl.api")

INVALID_CREDENTIALS = "Invalid credentials"
# The profile fields an edit may change, as (body field, column).
PROFILE_COLUMNS = (
    ("firstName", "first_name"),
    ("lastName", "last_name"),
    ("photoUrl", "photo_url"),
    ("gender", "gender"),
    ("age", "age"),
    ("about", "about"),
    ("skills", "skills"),
)


@dataclass(frozen=True)
class Client:
    """Who is asking, as far as the transport knows: for sessions and rate limits."""

    ip: str
    user_agent: str | None = None


@dataclass(frozen=True)
class Authenticated:
    user: dict[str, Any]
    token: str


def now() -> datetime:
    return datetime.now(UTC)


async def signup(backend: Backend, body: SignupBody, client: Client) -> Authenticated:
    await backend.spend(
        "signup_ip", client.ip, "Too many sign-ups from this address; try again in {wait} s"
    )
    password_hash = await hash_password(body.password)
    moment = now()
    user = User(
        id=new_id(),
        first_name=body.firstName,
        last_name=body.lastName,
        email=body.emailId,
        password_hash=password_hash,
        age=body.age,
        gender=body.gender,
        photo_url=body.photoUrl,
        about=body.about,
        skills=list(body.skills or []),
        is_premium=False,
        membership_tier="free",
        created_at=moment,
        updated_at=moment,
    )
    try:
        async with backend.transaction() as tx:
            tx.session.add(user)
            await tx.session.flush()  # a taken email fails here, before any Redis call
            tx.emit(
                "devconnect.user.signup",
                {
                    "userId": user.id,
                    "firstName": user.first_name,
                    "lastName": user.last_name,
                    "emailId": user.email,
                    "membershipTier": user.membership_tier,
                },
            )
            session = await backend.state.sessions.create(
                user.id, ip=client.ip, user_agent=client.user_agent
            )
    except IntegrityError:
        raise Conflict(
            "an account with this email already exists",
            field="emailId",
            hint="log in instead",
        ) from None
    data = user_json(user)
    await _cache_best_effort(backend, data)
    return Authenticated(data, session.token)


async def _cache_best_effort(backend: Backend, user: dict[str, Any]) -> None:
    try:
        await backend.state.user_cache.put(user)
    except DevctlError as exc:
        log.warning("user %s saved, but not cached: %s", user["_id"], exc)


async def login(backend: Backend, email: str, password: str, client: Client) -> Authenticated:
    email = email.strip().lower()
    await _check_login_limits(backend, client.ip, email)
    user: User | None = None
    if email:
        async with backend.reading() as session:
            backend.queries += 1
            user = (
                await session.execute(select(User).where(User.email == email))
            ).scalar_one_or_none()
    # Verified even without a user (against a dummy hash): the same work either way.
    valid = await verify_password(user.password_hash if user else None, password)
    if user is None or not valid:
        raise Unauthenticated(INVALID_CREDENTIALS)
    async with backend.transaction() as tx:
        session_ = await backend.state.sessions.create(
            user.id, ip=client.ip, user_agent=client.user_agent
        )
        tx.emit(
            "devconnect.user.login",
            {
                "userId": user.id,
                "userAgent": (client.user_agent or None) and client.user_agent[:256],
            },
        )
    data = user_json(user)
    await _cache_best_effort(backend, data)
    return Authenticated(data, session_.token)


async def _check_login_limits(backend: Backend, ip: str, email: str) -> None:
    message = "Too many login attempts; try again in {wait} s"
    await backend.spend("login_ip", ip, message)
    if email:
        await backend.spend("login_email", email, message)


async def logout(backend: Backend, token: str | None, user_id: str | None) -> bool:
    """Revoke the session; True if there was one. Not being logged in is not an error."""
    if token is None:
        return False
    async with backend.transaction() as tx:
        revoked = bool(await backend.state.sessions.revoke(token))
        if revoked and user_id is not None:
            tx.emit("devconnect.user.logout", {"userId": user_id, "reason": "user"})
    return revoked


async def authenticate(backend: Backend, token: str) -> Authenticated:
    """The user of a session token: one Redis round trip when the user is cached."""
    valid = await backend.state.sessions.validate(token)
    if valid is None:
        raise Unauthenticated("Please log in", hint="the session is missing, expired or revoked")
    user = valid.user
    if user is not None:
        backend.user_cache_hits += 1
    else:
        backend.user_cache_misses += 1
        user = await backend.state.user_cache.get(valid.session.user_id, _loader(backend))
        if user is None:  # the account is gone: its sessions are worthless
            await backend.state.sessions.revoke_all(valid.session.user_id)
            raise Unauthenticated("Please log in", hint="the account no longer exists")
    return Authenticated(dict(user), token)


def _loader(backend: Backend) -> Any:
    async def load(user_id: str) -> dict[str, Any] | None:
        row = await load_user(backend, user_id)
        return user_json(row) if row is not None else None

    return load


async def load_user(backend: Backend, user_id: str) -> User | None:
    async with backend.reading() as session:
        backend.queries += 1
        return await session.get(User, user_id)


async def edit_profile(backend: Backend, user_id: str, body: ProfileEditBody) -> dict[str, Any]:
    given = body.model_fields_set
    if not given:
        raise InvalidInput("nothing to change: send at least one profile field")
    async with backend.transaction() as tx:
        user = await tx.session.get(User, user_id, with_for_update=True)
        if user is None:
            raise NotFound("user not found")
        changed: list[str] = []
        for field_name, column in PROFILE_COLUMNS:
            if field_name not in given:
                continue
            value = getattr(body, field_name)
            if field_name == "firstName" and value is None:
                continue  # required: "" leaves it as it is
            if field_name == "skills" and value is None:
                value = []
            if getattr(user, column) != value:
                setattr(user, column, value)
                changed.append(field_name)
        if changed:
            user.updated_at = now()
            tx.emit("devconnect.user.profile_updated", {"userId": user.id, "changed": changed})
            # Dropped before the commit (a dead Redis rolls the edit back), written
            # through after it: no reader sees the edit before the database has it.
            await backend.state.user_cache.invalidate(user.id)
        data = user_json(user)
    if changed:
        await _cache_best_effort(backend, data)
    return data


async def change_password(
    backend: Backend, user_id: str, body: PasswordBody, client: Client
) -> Authenticated:
    """Change the password and end every session; the caller gets a fresh one."""
    user = await load_user(backend, user_id)
    if user is None:
        raise Unauthenticated("Please log in")
    if not await verify_password(user.password_hash, body.currentPassword):
        raise InvalidInput("the current password is wrong", field="currentPassword")
    new_hash = await hash_password(body.newPassword)
    async with backend.transaction() as tx:
        row = await tx.session.get(User, user_id, with_for_update=True)
        if row is None:
            raise Unauthenticated("Please log in")
        row.password_hash = new_hash
        row.updated_at = now()
        data = user_json(row)
        # Every session ends before the new password is committed: a dead Redis rolls
        # the change back rather than leave an intruder's session alive.
        await backend.state.sessions.revoke_all(user_id)
        session = await backend.state.sessions.create(
            user_id, ip=client.ip, user_agent=client.user_agent
        )
    await _cache_best_effort(backend, data)
    return Authenticated(data, session.token)


async def count_users(backend: Backend) -> int:
    async with backend.reading() as session:
        backend.queries += 1
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())
