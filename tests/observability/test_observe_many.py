"""`observe_many`: n observations of one value in constant time, recorded as n `observe` calls would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram

from apps.observability.metrics import observe_many


def _samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for metric in histogram.collect()
        for s in metric.samples
        if "le" in s.labels or s.name.endswith(("_sum", "_count"))
    }


@pytest.mark.parametrize("amount", [0.01, 0.3, 7.0, 5000.0])
def test_many_observations_at_once_match_one_at_a_time(amount: float):
    one_by_one = Histogram("one_by_one", "", buckets=(0.05, 0.5, 10), registry=CollectorRegistry())
    at_once = Histogram("one_by_one", "", buckets=(0.05, 0.5, 10), registry=CollectorRegistry())
    for _ in range(1234):
        one_by_one.observe(amount)

    observe_many(at_once, amount, 1234)
    observe_many(at_once, amount, 0)  # nothing

    # the same buckets and count; the same sum, but for the rounding of 1,234 additions
    assert _samples(at_once) == pytest.approx(_samples(one_by_one))
    assert _samples(at_once)[("one_by_one_count", "")] == 1234
