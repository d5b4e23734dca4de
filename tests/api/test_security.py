"""The cookie-signing secret, signed cookies and password hashing (no server needed)."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from devctl.api.security import (
    SECRET_FILE,
    CookieSigner,
    hash_password,
    load_secret,
    verify_password,
)
from devctl.errors import ConfigError


def test_a_secret_is_generated_once_with_owner_only_permissions(tmp_path: Path) -> None:
    first = load_secret(None, tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32 and load_secret(None, tmp_path / "data") == first
    assert load_secret(None, tmp_path / "other") != first  # never a constant


def test_a_loosened_secret_file_is_tightened(tmp_path: Path) -> None:
    secret = load_secret(None, tmp_path)
    (tmp_path / SECRET_FILE).chmod(0o644)
    assert load_secret(None, tmp_path) == secret
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600


def test_the_configured_secret_wins_and_must_be_long_enough(tmp_path: Path) -> None:
    assert load_secret("x" * 32, tmp_path) == b"x" * 32
    assert not (tmp_path / SECRET_FILE).exists()  # nothing generated when one is given
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_secret("short", tmp_path)


def test_signed_cookies_refuse_tampering_and_other_keys() -> None:
    signer = CookieSigner(b"k" * 32)
    value = signer.sign("dc1.token.dXNlcg")
    assert signer.unsign(value) == "dc1.token.dXNlcg"
    assert CookieSigner(b"j" * 32).unsign(value) is None
    for forged in (
        value[:-1] + ("A" if value[-1] != "A" else "B"),
        "dc1.token.dXNlcg",
        "",
        "~",
        "a~" + "x" * 43,
    ):
        assert signer.unsign(forged) is None


def test_passwords_verify_and_an_unknown_account_costs_a_verification() -> None:
    async def run() -> None:
        stored = await hash_password("Str0ng!pass")
        assert stored.startswith("$argon2id$")
        assert await verify_password(stored, "Str0ng!pass")
        assert not await verify_password(stored, "Wr0ng!pass")
        assert not await verify_password(None, "Str0ng!pass")  # the dummy hash: still False
        assert not await verify_password("not a hash", "Str0ng!pass")

    asyncio.run(run())
