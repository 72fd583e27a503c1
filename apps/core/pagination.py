"""Pagination: page numbers for admin-like lists, cursors for feeds that grow while read."""

from rest_framework.pagination import CursorPagination, LimitOffsetPagination


class DefaultPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class CreatedCursorPagination(CursorPagination):
    """Stable under inserts: the inbox and other newest-first feeds."""

    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200
