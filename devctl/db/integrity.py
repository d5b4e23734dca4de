"""Which rule of the data a refused write broke, whatever the backend says.

PostgreSQL names the violated constraint; SQLite names a CHECK constraint but
describes a UNIQUE one by its columns (``UNIQUE constraint failed: users.email``),
which are looked up in the models' metadata. The API maps the names in
``devctl.db.models`` (``EMAIL_UNIQUE``, ``PAIR_UNIQUE``, ...) to its errors.
"""

from __future__ import annotations

import re

from sqlalchemy import UniqueConstraint
from sqlalchemy.exc import IntegrityError

from devctl.db.models import Base

_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)")
_SQLITE_CHECK = re.compile(r"CHECK constraint failed: (\w+)")


def violated_constraint(exc: IntegrityError) -> str | None:
    """The name of the constraint ``exc`` reports, or None (NOT NULL, SQLite's
    unnamed foreign keys, a constraint the models do not know)."""
    cause: BaseException | None = exc.orig
    while cause is not None:
        name = getattr(cause, "constraint_name", None)  # asyncpg
        if isinstance(name, str) and name:
            return name
        cause = cause.__cause__
    message = str(exc.orig)
    check = _SQLITE_CHECK.search(message)
    if check:
        return check.group(1)
    unique = _SQLITE_UNIQUE.search(message)
    if unique:
        return _unique_named(unique.group(1))
    return None


def _unique_named(columns_text: str) -> str | None:
    qualified = [part.strip() for part in columns_text.split(",")]
    tables = {part.partition(".")[0] for part in qualified}
    if len(tables) != 1:
        return None
    table = Base.metadata.tables.get(tables.pop())
    if table is None:
        return None
    columns = [part.partition(".")[2] for part in qualified]
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint) and [c.name for c in constraint.columns] == (
            columns
        ):
            return str(constraint.name)
    if [c.name for c in table.primary_key.columns] == columns:
        return str(table.primary_key.name)
    return None
