"""Timing marks put between the middlewares for bench/api's in-process pass: the time a request
spends in each middleware itself is the gap between the marks on either side of it, going in and
coming out; what is inside the last mark is the URL resolution and the view."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# (mark index, "in" | "out", perf_counter) for the requests since the last clear().
MARKS: list[tuple[int, str, float]] = []


def _mark(index: int) -> type:
    class Mark:
        def __init__(self, get_response: Callable[[Any], Any]) -> None:
            self.get_response = get_response

        def __call__(self, request: Any) -> Any:
            MARKS.append((index, "in", time.perf_counter()))
            response = self.get_response(request)
            MARKS.append((index, "out", time.perf_counter()))
            return response

    Mark.__name__ = f"Mark{index}"
    return Mark


for _i in range(40):
    globals()[f"Mark{_i}"] = _mark(_i)


def interleaved(middleware: list[str]) -> list[str]:
    """`middleware` with a mark before each one and one around the view."""
    out: list[str] = []
    for i, name in enumerate(middleware):
        out += [f"bench.api.timing.Mark{i}", name]
    return [*out, f"bench.api.timing.Mark{len(middleware)}"]


def per_layer(marks: list[tuple[int, str, float]], layers: int) -> list[float]:
    """Seconds in each of `layers` middlewares itself, then the view, summed over the marked requests."""
    spent = [0.0] * (layers + 1)
    opened: dict[int, float] = {}
    closed: dict[int, float] = {}
    for index, kind, at in marks:
        if kind == "in":
            opened[index] = at
            if index > 0:
                spent[index - 1] += at - opened[index - 1]
        else:
            closed[index] = at
            if index == layers:
                spent[layers] += at - opened[layers]
            else:
                spent[index] += at - closed[index + 1]
    return spent
