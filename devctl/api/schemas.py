"""What the API accepts and answers: request bodies and the user and request shapes.

Field names are DevConnect's (camelCase), as its web client sends and reads them.
Bodies refuse unknown fields (a misspelt field is an error, not a silent no-op),
except where the web client is known to send extra ones. Profile edits follow the
client's edit page: it sends all seven fields every time, unset ones as ``""``, and
the age as text (``"25"``); ``""`` means "no value" (a required name is then left
as it is), a numeric string is a number.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

NAME_MIN, NAME_MAX = 2, 50
MIN_AGE, MAX_AGE = 18, 120
ABOUT_MAX = 1000
SKILLS_MAX, SKILL_MAX = 20, 50
PASSWORD_MIN, PASSWORD_MAX = 8, 128
DEFAULT_PHOTO_URL = "https://www.gravatar.com/avatar/?d=mp&s=200"
DEFAULT_ABOUT = "Hey there! I am using DevConnect."
GENDERS = ("male", "female", "others")
TIERS = ("free", "silver", "gold")

_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Zero-width and bidi controls (Cf), private use, surrogates, line/paragraph separators.
_INVISIBLE = {"Cf", "Co", "Cs", "Zl", "Zp"}


def _text(value: Any) -> Any:
    """Strip a string; refuse control characters (names and bios are shown in pages)."""
    if isinstance(value, str):
        value = value.strip()
        if _CONTROL.search(value):
            raise ValueError("control characters are not allowed")
    return value


def _name(value: Any) -> Any:
    """A name as people write it: no invisible or direction-changing characters, a letter."""
    value = _text(value)
    if isinstance(value, str) and value:
        if any(unicodedata.category(c) in _INVISIBLE for c in value):
            raise ValueError("invisible or formatting characters are not allowed in a name")
        if not any(unicodedata.category(c).startswith("L") for c in value):
            raise ValueError("a name needs at least one letter")
    return value


def _optional_name(value: Any) -> Any:
    value = _blank_to_none(value)
    return _name(value) if value is not None else None


def _blank_to_none(value: Any) -> Any:
    value = _text(value)
    return None if value == "" else value


def _email(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    value = value.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value


def _password(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        raise ValueError(f"must be {PASSWORD_MIN} to {PASSWORD_MAX} characters")
    kinds = (
        any(c.islower() for c in value),
        any(c.isupper() for c in value),
        any(c.isdigit() for c in value),
        any(not c.isalnum() and not c.isspace() for c in value),
    )
    if not all(kinds):
        raise ValueError("use a lowercase and an uppercase letter, a digit and a symbol")
    return value


def _age(value: Any) -> Any:
    value = _blank_to_none(value)
    if isinstance(value, bool):
        raise ValueError("must be a whole number")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 3:
            raise ValueError("must be a whole number")
        value = int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        value = int(value)
    if isinstance(value, int) and not MIN_AGE <= value <= MAX_AGE:
        raise ValueError(f"must be between {MIN_AGE} and {MAX_AGE}")
    return value


def _photo_url(value: Any) -> Any:
    value = _blank_to_none(value)
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or " " in value:
            raise ValueError("must be an http(s) URL")
    return value


def _skills(value: Any) -> Any:
    value = _blank_to_none(value)
    if isinstance(value, str):  # "python, go" from a text field
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, list):
        cleaned: list[Any] = []
        for item in value:
            item = _text(item)
            if isinstance(item, str) and item and item not in cleaned:
                cleaned.append(item)
            elif not isinstance(item, str):
                cleaned.append(item)  # the type check below names the problem
        value = cleaned
    return value


NameText = Annotated[str, StringConstraints(min_length=NAME_MIN, max_length=NAME_MAX)]
Name = Annotated[NameText, BeforeValidator(_name)]
OptionalName = Annotated[NameText | None, BeforeValidator(_optional_name)]
EmailAddress = Annotated[str, BeforeValidator(_email)]
Password = Annotated[str, BeforeValidator(_password)]
Age = Annotated[int | None, BeforeValidator(_age)]
Gender = Annotated[Literal["male", "female", "others"] | None, BeforeValidator(_blank_to_none)]
PhotoUrl = Annotated[
    Annotated[str, StringConstraints(max_length=2048)] | None, BeforeValidator(_photo_url)
]
About = Annotated[
    Annotated[str, StringConstraints(max_length=ABOUT_MAX)] | None, BeforeValidator(_blank_to_none)
]
Skills = Annotated[
    Annotated[
        list[Annotated[str, StringConstraints(max_length=SKILL_MAX)]], Field(max_length=SKILLS_MAX)
    ]
    | None,
    BeforeValidator(_skills),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000)


class SignupBody(_Body):
    firstName: Name
    lastName: OptionalName = None
    emailId: EmailAddress
    password: Password
    age: Age = None
    gender: Gender = None
    photoUrl: PhotoUrl = None
    about: About = None
    skills: Skills = None


class LoginBody(_Body):
    emailId: Annotated[str, StringConstraints(max_length=254)]
    password: Annotated[str, StringConstraints(max_length=PASSWORD_MAX)]


class ProfileEditBody(_Body):
    """Any of the seven profile fields; ``""`` is "no value" (see the module docstring)."""

    firstName: OptionalName = None
    lastName: OptionalName = None
    photoUrl: PhotoUrl = None
    gender: Gender = None
    age: Age = None
    about: About = None
    skills: Skills = None


class PasswordBody(_Body):
    currentPassword: Annotated[str, StringConstraints(max_length=PASSWORD_MAX)]
    newPassword: Password


class RespondBody(_Body):
    action: Literal["accept", "reject"]


class MessageOut(BaseModel):
    message: str


class UserOut(BaseModel):
    """The logged-in user as the web client stores it (never the password hash)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    firstName: str
    lastName: str | None = None
    emailId: str
    age: int | None = None
    gender: str | None = None
    photoUrl: str
    about: str
    skills: list[str]
    isPremium: bool
    membershipTier: str
    createdAt: datetime
    updatedAt: datetime


class SafeUserOut(BaseModel):
    """What other users may see of a user."""

    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    firstName: str
    lastName: str | None = None
    photoUrl: str
    age: int | None = None
    gender: str | None = None
    about: str
    skills: list[str]
    isPremium: bool
    membershipTier: str


class RequestOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    fromUserId: str
    toUserId: str
    status: str
    createdAt: datetime
    updatedAt: datetime


class ReceivedRequestOut(RequestOut):
    fromUserId: SafeUserOut  # type: ignore[assignment]  # populated, as the client reads it


class ProfileEditOut(BaseModel):
    message: str
    data: UserOut


class RequestAnswer(BaseModel):
    message: str
    data: RequestOut


class ReceivedAnswer(BaseModel):
    message: str
    data: list[ReceivedRequestOut]


class ConnectionsAnswer(BaseModel):
    message: str
    data: list[SafeUserOut]


class FeedAnswer(BaseModel):
    data: list[SafeUserOut]
    page: int
    limit: int


class ChatMessageOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str = Field(alias="_id")
    fromUserId: str
    toUserId: str
    text: str
    ts: datetime


class HistoryAnswer(BaseModel):
    data: list[ChatMessageOut]


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None
    hint: str | None = None


class ErrorAnswer(BaseModel):
    message: str
    error: ErrorDetail
