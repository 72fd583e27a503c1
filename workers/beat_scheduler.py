"""Beat's scheduler with a liveness signal: django-celery-beat's DatabaseScheduler that touches
`BEAT_HEARTBEAT_FILE` on every tick.

Beat calls `tick()` in its loop at least every few seconds (the scheduler's max interval), so the file
goes stale when beat is dead or wedged (a hung database call, a lost broker it keeps retrying). The
Kubernetes liveness probe is the workers' own: `python -m workers.probe --file $BEAT_HEARTBEAT_FILE
--max-age 120` (k8s/beat.yaml). Selected with `celery beat --scheduler workers.beat_scheduler:HeartbeatScheduler`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django_celery_beat.schedulers import DatabaseScheduler


class HeartbeatScheduler(DatabaseScheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        path = os.environ.get("BEAT_HEARTBEAT_FILE", "")
        self.heartbeat_path = Path(path) if path else None
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = super().tick(*args, **kwargs)
        # After the tick: a tick stuck in the database or the broker leaves the file stale.
        if self.heartbeat_path is not None:
            self.heartbeat_path.touch()
        return interval
