"""`field__any=[...]`: membership in a list as one array parameter on PostgreSQL.

`__in` renders one placeholder per value, and psycopg's client-side binding parses the query text
placeholder by placeholder: for a 2,000-recipient chunk that parsing alone cost a fifth of the
chunk. `= ANY(%s)` has one placeholder whatever the list. Other databases get a plain `IN (...)`.
Registered on the few fields the pipeline filters by long id lists (apps.py).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Lookup

from apps.notifications.models import Delivery, Device, Preference, Recipient, Suppression


class AnyOf(Lookup):  # type: ignore[type-arg]
    lookup_name = "any"
    prepare_rhs = False

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        values = list(self.rhs)
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(%s)", [*lhs_params, values]
        if not values:
            return "1 = 0", list(lhs_params)
        return f"{lhs} IN ({', '.join(['%s'] * len(values))})", [*lhs_params, *values]


def register() -> None:
    for model, field in (
        (Recipient, "id"),
        (Delivery, "id"),
        (Delivery, "recipient"),
        (Preference, "recipient"),
        (Device, "recipient"),
        (Suppression, "address"),  # a chunk's addresses against the suppression list
    ):
        model._meta.get_field(field).register_lookup(AnyOf)  # type: ignore[union-attr]
