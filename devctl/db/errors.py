"""Errors of the database domain, under the one DevctlError hierarchy.

``DatabaseUnavailable`` (a dead or unreachable database) lives in devctl/errors.py
with the other unavailable servers.
"""

from __future__ import annotations

from devctl.errors import OperationFailed


class LeaseLost(OperationFailed):
    """The outbox relay's lease passed to another owner: stop publishing, claim again."""

    error_code = "lease-lost"
