"""Inbox counts for many streams: one grouped query answers what one query per stream did, and the
realtime process's batcher asks it once for the streams that changed together."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from typing import Any
from unittest import mock

import pytest

from apps.notifications.services.fanout import fanout_chunk_run, notification_fan_out
from apps.notifications.services.inbox import inbox_counts, inbox_counts_many, inbox_mark_read, inbox_mark_seen
from apps.notifications.services.notifications import notification_create
from apps.realtime.counts import CountsBatcher


class Recorder:
    """A stand-in for the grouped query: answers each recipient with its pk (unread) and the call's
    number (unseen), and records each call."""

    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.calls: list[list[Any]] = []
        self.fail = fail
        self.gate = gate

    def __call__(self, pairs: Iterable[tuple[Any, Any]]) -> dict[Any, dict[str, int]]:
        listed = list(pairs)
        self.calls.append([pk for pk, _ in listed])
        number = len(self.calls)
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail:
            raise RuntimeError("database gone")
        return {pk: {"unread": pk, "unseen": number} for pk, _ in listed}


def test_streams_asking_together_share_one_query_and_each_gets_its_own_answer() -> None:
    query = Recorder()

    async def main() -> list[dict[str, int]]:
        batcher = CountsBatcher(query=query, window=0.01)
        return await asyncio.gather(*(batcher.counts(pk, "t") for pk in range(50)))

    answers = asyncio.run(main())
    assert len(query.calls) == 1 and sorted(query.calls[0]) == list(range(50))
    assert [a["unread"] for a in answers] == list(range(50))


def test_a_large_burst_is_read_in_chunks_and_one_recipient_asking_twice_is_read_once() -> None:
    query = Recorder()

    async def main() -> list[dict[str, int]]:
        batcher = CountsBatcher(query=query, window=0.01, chunk=10)
        return await asyncio.gather(*(batcher.counts(pk, "t") for pk in [*range(25), 3, 3]))

    answers = asyncio.run(main())
    assert [len(call) for call in query.calls] == [10, 10, 5]
    assert answers[-1] == answers[-2] == answers[3]


def test_a_request_made_while_a_query_runs_waits_for_a_later_query() -> None:
    gate = threading.Event()
    query = Recorder(gate=gate)

    async def main() -> tuple[dict[str, int], dict[str, int]]:
        batcher = CountsBatcher(query=query, window=0.01)
        first = asyncio.create_task(batcher.counts(1, "t"))
        while not query.calls:  # the first query is running (held at the gate)
            await asyncio.sleep(0.005)
        second = asyncio.create_task(batcher.counts(1, "t"))
        await asyncio.sleep(0.05)
        gate.set()
        return await first, await second

    first, second = asyncio.run(main())
    assert query.calls == [[1], [1]]
    assert (first["unseen"], second["unseen"]) == (1, 2)  # the second answer is from the second read


def test_a_failed_query_fails_every_stream_that_asked() -> None:
    query = Recorder(fail=True)

    async def main() -> list[Any]:
        batcher = CountsBatcher(query=query, window=0.01, chunk=2)
        return await asyncio.gather(*(batcher.counts(pk, "t") for pk in range(5)), return_exceptions=True)

    answers = asyncio.run(main())
    assert len(query.calls) == 1  # the first chunk failed: the rest were not read
    assert all(isinstance(a, RuntimeError) for a in answers)


@pytest.mark.django_db
def test_the_grouped_query_answers_as_one_query_per_recipient_does(
    tenant: Any, make_template: Any, make_recipients: Any, django_assert_num_queries: Any
) -> None:
    make_template(default_channels=["in_app"])
    ada, bob, cy = make_recipients(3)
    with mock.patch("apps.core.publish.publish"):
        for order in ("A-1", "A-2"):
            notification = notification_create(
                tenant=tenant, template="order_shipped", payload={"order_id": order}, recipients=["user-0", "user-1"]
            )
            for chunk_id in notification_fan_out(notification_id=notification.pk):
                fanout_chunk_run(chunk_id=chunk_id)
    inbox_mark_read(recipient=ada)
    inbox_mark_seen(recipient=bob)

    with django_assert_num_queries(1):
        many = inbox_counts_many([(r.pk, r.tenant_id) for r in (ada, bob, cy)])
    assert many == {r.pk: inbox_counts(recipient=r) for r in (ada, bob, cy)}
    assert many[ada.pk] == {"unread": 0, "unseen": 0}
    assert many[bob.pk] == {"unread": 2, "unseen": 0}
    assert many[cy.pk] == {"unread": 0, "unseen": 0}
    assert inbox_counts_many([]) == {}
