"""Hot reads written as SQL once, with rows turned into models as the ORM does.

Django's ORM compiles a queryset's SQL on every request; for the API's hottest reads (a task poll, a
notification POST's template and recipients) that was a third of their Python (docs/benchmarks.md,
"API"). Those selectors build their statements once from the models' own metadata and use these
helpers so that what goes in and comes out is exactly what the ORM would send and build: parameters
prepared by their fields (a UUID is hex text on SQLite), values through the fields' converters (JSON
read as text and decoded), instances through `Model.from_db`.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import connection
from django.db.models import Model


def model_columns(model: type[Model], alias: str) -> str:
    """The model's concrete columns, quoted and qualified by `alias`, in `from_db` order."""
    q = connection.ops.quote_name
    return ", ".join(f"{alias}.{q(f.column)}" for f in model._meta.concrete_fields)


def db_param(model: type[Model], field_name: str, value: Any) -> Any:
    """`value` as the ORM prepares it for `field_name` of `model` in a query parameter."""
    field: Any = model._meta.get_field(field_name)
    return field.get_db_prep_value(value, connection)


@functools.cache
def _converters(model: type[Model]) -> tuple[tuple[int, Any, tuple[Any, ...]], ...]:
    """(index, field, converters) of the model's concrete columns that need converting (JSON, …)."""
    out = []
    for index, concrete in enumerate(model._meta.concrete_fields):
        field: Any = concrete
        converters = tuple(field.get_db_converters(connection)) + tuple(
            connection.ops.get_db_converters(field.get_col(model._meta.db_table))
        )
        if converters:
            out.append((index, field, converters))
    return tuple(out)


@functools.cache
def _attnames(model: type[Model]) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields]


def model_from_row(model: type[Model], values: list[Any]) -> Any:
    """An instance from the values of `model_columns(model, …)`, as a queryset would build it."""
    for index, field, converters in _converters(model):
        for convert in converters:
            values[index] = convert(values[index], field, connection)
    return model.from_db(connection.alias, _attnames(model), values)
