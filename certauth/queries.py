"""Queries compiled once per database alias and re-executed with new parameters.

The request path runs three reads (a registry entry by thumbprint, another entry that is the same
certificate, the registry generation; the first two once per certificate while the registry cache is
current) and one rate-limited write (``last_used_at``).  Building them through the ORM costs far more than
executing them (hundreds of microseconds of query compilation against tens for the database), so they are
compiled by Django once — same SQL, same quoting, same type converters per backend — and then executed
directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from django.db import connections, router
from django.db.models import Field, Model, QuerySet

#: Stand in for the per-call parameters while compiling; never reach the database.
PLACEHOLDERS = tuple(f"\x00certauth-parameter-{position}\x00" for position in range(8))
PLACEHOLDER = PLACEHOLDERS[0]


class _Compiled:
    def __init__(self, queryset: QuerySet[Any], alias: str) -> None:
        # No ORDER BY (not even the model's default) unless the queryset asks for one explicitly.
        query = (queryset if queryset.query.order_by else queryset.order_by())[:1].query
        compiler = query.get_compiler(using=alias)
        self.sql, params = compiler.as_sql()
        self.params = list(params)
        # (index in params, index of the caller's value) for every place a placeholder landed
        self.slots = [
            (index, PLACEHOLDERS.index(param))
            for index, param in enumerate(self.params)
            if isinstance(param, str) and param in PLACEHOLDERS
        ]
        # position -> (converter functions, expression): the backend's and the fields' from_db_value.
        self.converters = list(compiler.get_converters([column for column, _, _ in compiler.select]).items())
        # Only values() querysets: the selected names, in order (related ones as "identity__name").
        self.names = list(queryset.query.values_select)


class CompiledLookup:
    """``first(*values)`` == ``build(*values).first()`` (in the queryset's explicit order, if any) as a dict
    of the selected values (``values()`` querysets), or None.  ``build`` is called once per alias with
    ``parameters`` placeholders (``PLACEHOLDERS``), each of which must reach the SQL unchanged (plain
    equality on text columns)."""

    def __init__(
        self, model: Callable[[], type[Model]], build: Callable[..., QuerySet[Any]], parameters: int = 1
    ) -> None:
        self._model = model
        self._build = build
        self._parameters = parameters
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._lock = threading.Lock()

    def _for(self, alias: str) -> _Compiled:
        key = (alias, str(connections[alias].settings_dict.get("NAME")))
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                built = self._build(*PLACEHOLDERS[: self._parameters])
                compiled = self._compiled[key] = _Compiled(built, alias)
        return compiled

    def first(self, *values: Any, using: str | None = None) -> dict[str, Any] | None:
        alias = using or router.db_for_read(self._model())
        compiled = self._for(alias)
        params = compiled.params
        if compiled.slots:
            params = list(params)
            for index, position in compiled.slots:
                params[index] = values[position]
        connection = connections[alias]  # this thread's connection
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        if row is None:
            return None
        columns = list(row)
        for position, (functions, expression) in compiled.converters:
            value = columns[position]
            for function in functions:
                value = function(value, expression, connection)
            columns[position] = value
        return dict(zip(compiled.names, columns, strict=True))


def update_where_not_after(
    model: type[Model], pk: Any, field_name: str, value: Any, threshold: Any, using: str | None = None
) -> int:
    """``UPDATE model SET field = value WHERE pk = pk AND (field IS NULL OR field <= threshold)``:
    ``filter(pk=pk).exclude(field__gt=threshold).update(field=value)`` without compiling a query."""
    alias = using or router.db_for_write(model)
    connection = connections[alias]
    sql, field = _update_sql(model, field_name, connection.vendor, alias)
    params: Sequence[Any] = (
        field.get_db_prep_save(value, connection),
        model._meta.pk.get_db_prep_value(pk, connection),
        field.get_db_prep_value(threshold, connection),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


@lru_cache(maxsize=64)
def _update_sql(model: type[Model], field_name: str, vendor: str, alias: str) -> tuple[str, Field[Any, Any]]:
    connection = connections[alias]
    field: Field[Any, Any] = model._meta.get_field(field_name)  # type: ignore[assignment]
    quote = connection.ops.quote_name
    column = quote(str(field.column))
    sql = (
        f"UPDATE {quote(model._meta.db_table)} SET {column} = %s "  # noqa: S608 (names from model metadata)
        f"WHERE {quote(str(model._meta.pk.column))} = %s AND ({column} IS NULL OR {column} <= %s)"
    )
    return sql, field
