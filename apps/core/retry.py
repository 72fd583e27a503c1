"""The retry policy shared by deliveries and tracked tasks: how many attempts, and how long to
wait before the next one (exponential backoff from `base_seconds`, capped, with jitter)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) waits up to `min(cap_seconds, base_seconds * 2**(n-1))`.

    `jitter`: "full" draws uniformly in [0, that] (deliveries: retries of one outage spread out
    most); "equal" in [half of it, all of it] (tracked tasks: never much sooner than the backoff);
    "none" waits exactly that. `retry_for`: the exceptions worth another attempt (tasks)."""

    max_attempts: int = 4
    base_seconds: float = 5.0
    cap_seconds: float = 600.0
    jitter: Literal["full", "equal", "none"] = "full"
    retry_for: tuple[type[BaseException], ...] = (Exception,)

    @property
    def max_retries(self) -> int:
        return self.max_attempts - 1

    def delay(
        self, attempt: int, *, retry_after: float | None = None, rng: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait after `attempt` failed; a provider's `retry_after` is a floor, never
        shortened by the jitter."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(attempt - 1, 0))
        if self.jitter == "full":
            delay = rng() * ceiling
        elif self.jitter == "equal":
            delay = ceiling / 2 + rng() * (ceiling / 2)
        else:
            delay = ceiling
        if retry_after:
            delay = max(delay, float(retry_after))
        return delay
