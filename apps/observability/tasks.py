"""Maintenance tasks of the observability app."""

from __future__ import annotations

import os

from celery import shared_task

from apps.observability.audit import audit_purge


@shared_task(name="signalbox.maintenance.purge_audit", queue="maintenance")
def purge_audit() -> int:
    """Deletes audit entries past their tenant's retention; returns how many went."""
    return audit_purge()


# Tasks only the test suite uses (graceful shutdown), registered in workers started with this flag.
if os.environ.get("SIGNALBOX_TEST_TASKS") == "1":
    from apps.observability import testing_tasks  # noqa: F401
