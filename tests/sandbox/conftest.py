"""Fixtures for the sandbox tests: one sandbox subprocess per session, reset before each test.

The fixtures live in `sandbox.pytest_plugin` so suites outside this folder can load them
too; importing them here makes them visible to these tests.
"""

from sandbox.pytest_plugin import sandbox, sandbox_client

__all__ = ["sandbox", "sandbox_client"]
