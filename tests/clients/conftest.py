"""The CLI fixture, for the security tests that run devctl."""

from tests.cli.conftest import cli  # noqa: F401  (a fixture, used by name)
