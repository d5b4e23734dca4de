"""Passwords, the cookie-signing secret and signed session cookies.

Passwords: argon2id with RFC 9106's second recommended option scaled to a server
that hashes on every login (time cost 3, 64 MiB, parallelism 1; ~60 ms on the
reference machine, see docs/benchmarks.md). Hashing runs in a worker thread:
it is CPU work that would otherwise stop the event loop for every other request.

Session tokens are the Redis domain's opaque 256-bit tokens. The cookie carries
the token plus an HMAC-SHA256 tag under the API secret, so a forged or mangled
cookie is refused without a Redis round trip, and rotating the secret logs every
browser out. The secret is ``api.secret`` (``JWT_SECRET``) when set, else 32
random bytes generated on first run into ``<data dir>/api-secret`` (mode 0600);
it is never a constant.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from devctl.errors import ConfigError

HASH_TIME_COST = 3
HASH_MEMORY_KIB = 64 * 1024
HASH_PARALLELISM = 1

_hasher = PasswordHasher(
    time_cost=HASH_TIME_COST, memory_cost=HASH_MEMORY_KIB, parallelism=HASH_PARALLELISM
)
# Verified against when the email is unknown, so that an unknown account costs the
# same time as a wrong password (no account enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

SECRET_FILE = "api-secret"
_MIN_SECRET_BYTES = 16
_TAG_CHARS = 43  # HMAC-SHA256 in unpadded base64url


# Hashes running at once: each holds 64 MiB and a core, so more than the cores only
# grows memory (60 concurrent sign-ups took 400 MiB) without finishing any sooner.
_HASH_SLOTS = max(2, os.cpu_count() or 2)
_slots: asyncio.Semaphore | None = None


def _hash_slots() -> asyncio.Semaphore:
    global _slots
    if _slots is None:  # made on first use, inside the server's event loop
        _slots = asyncio.Semaphore(_HASH_SLOTS)
    return _slots


async def hash_password(password: str) -> str:
    async with _hash_slots():
        return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; always does the work of one verification."""
    async with _hash_slots():
        return await asyncio.to_thread(_verify, stored_hash, password)


def _verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, else the one in the data dir, created on first use."""
    if configured is not None:
        if len(configured.encode("utf-8")) < _MIN_SECRET_BYTES:
            raise ConfigError(
                f"the API secret must be at least {_MIN_SECRET_BYTES} bytes",
                key="api.secret",
                hint="unset JWT_SECRET to have one generated, or use e.g. `openssl rand -hex 32`",
            )
        return configured.encode("utf-8")
    path = data_dir / SECRET_FILE
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two instances starting together cannot both write one; the loser reads.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}", key="data_dir") from exc
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return _read_secret_file(path)


def _read_secret_file(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, 0o600)  # someone loosened it: tighten, never trust it wider
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key="data_dir") from exc
    if len(text) < _MIN_SECRET_BYTES:
        # A half-written file from a crash between create and write: start again.
        path.unlink(missing_ok=True)
        return load_secret(None, path.parent)
    return text.encode("utf-8")


class CookieSigner:
    """``<token>~<tag>``: the session token and its HMAC under the API secret."""

    def __init__(self, secret: bytes):
        self._key = hashlib.sha256(b"devctl session cookie\0" + secret).digest()

    def _tag(self, token: str) -> str:
        digest = hmac.new(self._key, token.encode("utf-8"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, token: str) -> str:
        return f"{token}~{self._tag(token)}"

    def unsign(self, value: str) -> str | None:
        """The token inside a signed value, or None when the tag does not match."""
        token, sep, tag = value.strip().rpartition("~")
        if not sep or len(tag) != _TAG_CHARS or not token:
            return None
        try:
            expected = self._tag(token)
        except UnicodeEncodeError:
            return None
        return token if hmac.compare_digest(expected, tag) else None


def session_token(
    cookie_value: str | None, authorization: str | None, signer: CookieSigner
) -> str | None:
    """The session token of a request: the cookie, else ``Authorization: Bearer``; None
    if absent or forged. The one rule both the router and the fast path apply."""
    value = cookie_value
    if not value and authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            value = credentials.strip()
    return signer.unsign(value) if value else None
