"""The rules every adapter shares: which answers are transient, and how long a provider asks us to wait."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
import requests

from apps.providers.base import Outcome
from apps.providers.classify import from_network_error, from_status, parse_retry_after


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "30"}, 30.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "-4"}, 0.0),
        ({"Retry-After": "86400"}, 3600.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_in_seconds(headers, expected):
    assert parse_retry_after(headers) == expected


def test_retry_after_as_an_http_date():
    wait = parse_retry_after({"Retry-After": formatdate(time.time() + 120, usegmt=True)})

    assert wait is not None and 115 <= wait <= 120


def test_sendgrids_rate_limit_reset_counts_when_there_is_no_retry_after():
    wait = parse_retry_after({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 40)})

    assert wait is not None and 38 <= wait <= 40


@pytest.mark.parametrize("status", [408, 425, 429, 500, 503])
def test_timeouts_rate_limits_and_server_errors_are_transient_with_the_wait(status):
    result = from_status("p", status, headers={"Retry-After": "2"})

    assert (result.outcome, result.code, result.retry_after) == (Outcome.TRANSIENT, f"http_{status}", 2.0)


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_client_errors_are_permanent(status):
    result = from_status("p", status, headers={"Retry-After": "2"})

    assert (result.outcome, result.code, result.retry_after) == (Outcome.PERMANENT, f"http_{status}", None)


def test_timeouts_and_refused_connections_are_transient():
    assert from_network_error("p", requests.ReadTimeout("slow")).code == "timeout"  # type: ignore[union-attr]
    assert from_network_error("p", ConnectionRefusedError()).code == "connection_error"  # type: ignore[union-attr]
    assert from_network_error("p", ValueError("a bug")) is None
