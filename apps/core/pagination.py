"""Pagination: page numbers for admin-like lists, cursors for feeds that grow while read.

`limit` and `offset` are checked, not guessed: a value that is not a whole number in range answers 400
(DRF's default would silently read `?offset=abc` as 0), so a typo never looks like the first page.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import serializers
from rest_framework.pagination import CursorPagination, LimitOffsetPagination
from rest_framework.request import Request

# PostgreSQL's OFFSET is a bigint; a larger value would be a database error (a 500), not an empty page.
MAX_OFFSET = 2**31 - 1
_DIGITS = re.compile(r"^[0-9]{1,19}$")


def _whole_number(request: Request, name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    """The query parameter `name` as an int in range, None when absent; 400 `validation_error` otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    value = int(raw) if _DIGITS.match(raw) else None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise serializers.ValidationError({name: [f"A whole number of at least {minimum}{bound}."]})
    return value


class DefaultPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_limit(self, request: Request) -> int:
        limit = _whole_number(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request: Request) -> int:
        offset = _whole_number(request, self.offset_query_param, minimum=0, maximum=MAX_OFFSET)
        return offset or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    f"Results per page: {self.default_limit} by default, at most {self.max_limit}."
                )
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}
        return parameters


class CreatedCursorPagination(CursorPagination):
    """Stable under inserts: the inbox and other newest-first feeds."""

    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        size = _whole_number(request, self.page_size_query_param, minimum=1)
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
        return parameters
