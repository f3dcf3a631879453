"""Registry rows written in bulk with ``executemany``: one template ``RegisteredCertificate`` gives the
database-ready value of every column (so fields added later with defaults keep working), and only the
per-certificate columns vary.  Used to build 1,000,000-entry registries in reasonable time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from certauth.certificates import CertificateInfo
from certauth.registry import registry_changed

BATCH = 20_000


class EntryWriter:
    def __init__(self) -> None:
        from certauth.models import RegisteredCertificate

        self.model = RegisteredCertificate
        self.fields = [f for f in RegisteredCertificate._meta.concrete_fields if not f.primary_key]
        self.columns = [f.column for f in self.fields]
        template = RegisteredCertificate(
            identity_id=0,
            thumbprint_sha256="0" * 64,
            not_after=timezone.now() + dt.timedelta(days=365),
            created_at=timezone.now(),
        )
        for field in self.fields:
            if getattr(template, field.attname) is None and field.has_default():
                setattr(template, field.attname, field.get_default())
        self.template = template
        self._index = {field.attname: position for position, field in enumerate(self.fields)}
        self._identity_index = self._index["identity_id"]
        self._prepared: list[Any] | None = None
        table = connection.ops.quote_name(RegisteredCertificate._meta.db_table)
        quoted = ", ".join(connection.ops.quote_name(c) for c in self.columns)
        placeholders = ", ".join(["%s"] * len(self.columns))
        self.sql = f"INSERT INTO {table} ({quoted}) VALUES ({placeholders})"  # noqa: S608 (metadata only)

    def identity(self, name: str, scopes: str = "") -> int:
        from certauth.models import CertificateIdentity

        identity, _ = CertificateIdentity.objects.get_or_create(name=name, defaults={"scopes": scopes})
        return int(identity.pk)

    def _values(self, identity_id: int, facts: dict[str, Any]) -> list[Any]:
        if self._prepared is None:
            template = self.template
            self._prepared = [f.get_db_prep_save(getattr(template, f.attname), connection) for f in self.fields]
        values = list(self._prepared)
        values[self._identity_index] = identity_id
        for name, value in facts.items():
            index = self._index[name]
            values[index] = self.fields[index].get_db_prep_save(value, connection)
        return values

    def write(self, rows: Iterable[tuple[int, CertificateInfo]]) -> int:
        """Insert ``(identity_id, info)`` rows; bumps the registry generation once at the end."""
        return self.write_facts((identity_id, facts_of(info)) for identity_id, info in rows)

    def write_facts(self, rows: Iterable[tuple[int, dict[str, Any]]], batch: int = BATCH) -> int:
        written = 0
        buffer: list[list[Any]] = []
        with transaction.atomic():
            with connection.cursor() as cursor:
                for identity_id, facts in rows:
                    buffer.append(self._values(identity_id, facts))
                    if len(buffer) >= batch:
                        cursor.executemany(self.sql, buffer)
                        written += len(buffer)
                        buffer = []
                if buffer:
                    cursor.executemany(self.sql, buffer)
                    written += len(buffer)
            registry_changed()
        return written


def facts_of(info: CertificateInfo) -> dict[str, Any]:
    return {
        "thumbprint_sha256": info.thumbprint_sha256,
        "subject": info.subject,
        "subject_cn": info.subject_cn[:255],
        "issuer": info.issuer,
        "serial_number": info.serial_hex[:100],
        "not_before": info.not_before,
        "not_after": info.not_after,
        "certificate_pem": info.pem(),
        "issuer_serial_sha256": info.issuer_serial_sha256 or None,  # as RegisteredCertificate.fill_from()
        "tbs_sha256": info.tbs_sha256 or None,
        "spki_sha256": info.spki_sha256 or None,
        "label": "bench",
    }
