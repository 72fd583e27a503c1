"""The ceiling: the least a DRF endpoint can do — parse a JSON body and write one row, or read one row
by its key — on the same gunicorn, middleware and database as the API, without authentication,
throttling or any of Signalbox's own work. What the API costs beyond it is what bench/api measures."""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

TABLE = "bench_api_row"
CREATE = f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, body jsonb NOT NULL)"


class Bare(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    def post(self, request: Request) -> Response:
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {TABLE} (body) VALUES (%s) RETURNING id", [json.dumps(request.data)])
            (row_id,) = cursor.fetchone()
        return Response({"id": row_id}, status=202)


class BareRow(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []

    def get(self, request: Request, pk: int) -> Response:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT id, body FROM {TABLE} WHERE id = %s", [pk])
            row = cursor.fetchone()
        return Response({"id": row[0], "body": row[1]})
