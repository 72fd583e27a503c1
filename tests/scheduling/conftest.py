"""Fixtures for the scheduling tests: the notification fixtures and the test-only task types.

SIGNALBOX_TEST_TASKS is set at collection, before the session worker starts (it copies
os.environ), as tests/tasks does.
"""

from __future__ import annotations

import os

os.environ["SIGNALBOX_TEST_TASKS"] = "1"

from collections.abc import Iterator
from typing import Any

import pytest

import apps.tasks.testing  # noqa: F401  (registers the test task types in this process)
from tests.notifications.conftest import make_recipients, make_template, recording_tenant  # noqa: F401
from tests.scheduling.pipeline import wait_until_idle


@pytest.fixture
def worker(worker: Any) -> Iterator[Any]:
    """The session worker; at teardown, waits for what the test started to finish."""
    yield worker
    wait_until_idle()
