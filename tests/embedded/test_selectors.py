"""The reads written as SQL for the API's hot paths (a task poll, a notification POST's template and
recipients) on SQLite, which stores UUIDs as hex text: the embedded default answers them too."""

from __future__ import annotations

from typing import Any

from apps.notifications.selectors import recipient_ids_by_external_id, template_for_send
from apps.notifications.services.templates import template_create
from apps.tasks.selectors import execution_for_poll, execution_version
from apps.tasks.services.executions import execution_create_for_intent


def test_a_task_poll_and_its_conditional_read_find_the_execution(tenant: Any):
    execution = execution_create_for_intent(tenant=tenant, name="signalbox.testing.intent")
    polled = execution_for_poll(tenant_id=tenant.pk, execution_id=execution.pk)
    assert polled is not None and polled.pk == execution.pk and polled.status == execution.status
    assert execution_version(tenant_id=tenant.pk, execution_id=execution.pk) == (execution.version, execution.status)


def test_a_notifications_template_and_recipients_are_read(tenant: Any, people: list[Any]):
    found = recipient_ids_by_external_id(tenant_id=tenant.pk, external_ids=[p.external_id for p in people])
    assert found == {p.external_id: p.pk for p in people}
    assert template_for_send(tenant_id=tenant.pk, key="missing") is None
    template_create(
        tenant=tenant,
        key="welcome",
        definition={
            "name": "welcome",
            "category": "account",
            "variables": [{"name": "name", "example": "Ada"}],
            "default_channels": ["in_app"],
            "content": {"default": {"in_app": {"title": "Hi {{ name }}", "body": "Welcome."}}},
        },
    )
    template = template_for_send(tenant_id=tenant.pk, key="welcome")
    assert template is not None and template.key == "welcome" and template.tenant_id == tenant.pk
