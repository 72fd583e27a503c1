"""The Celery app the peer run's worker loads (`celery -A bench.fanout.peer_worker`)."""

from __future__ import annotations

from bench.fanout.peer import celery_app

app = celery_app()
