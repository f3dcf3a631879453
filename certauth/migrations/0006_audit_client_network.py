"""The audit's client network: refusals from one IPv6 network of ``AUDIT_IPV6_PREFIX`` bits count as one
client (aggregation and the capture cap), IPv4 addresses one by one.  Existing rows get their IPv4
address, or their IPv6 address's /64 (the default prefix); their aggregation keys stay as they were (rows
of a closed window are only read)."""

import ipaddress

from django.db import migrations, models

BATCH = 1000


def fill_client_network(apps, schema_editor):
    failures = apps.get_model("certauth", "AuthenticationFailure").objects.using(schema_editor.connection.alias)
    pending = []
    rows = failures.filter(client_network="", client_ip__isnull=False).only("pk", "client_ip")
    for row in rows.order_by("pk").iterator(chunk_size=BATCH):
        address = ipaddress.ip_address(row.client_ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv6Address):
            row.client_network = str(ipaddress.IPv6Network((address, 64), strict=False))
        else:
            row.client_network = str(address)
        pending.append(row)
        if len(pending) >= BATCH:
            failures.bulk_update(pending, ["client_network"])
            pending = []
    if pending:
        failures.bulk_update(pending, ["client_network"])


class Migration(migrations.Migration):
    dependencies = [
        ("certauth", "0005_issuance_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="authenticationfailure",
            name="client_network",
            field=models.CharField(
                blank=True,
                db_index=True,
                editable=False,
                help_text="What the row counts refusals of: the IPv4 address, or the IPv6 network (AUDIT_IPV6_PREFIX).",
                max_length=64,
                verbose_name="client network",
            ),
        ),
        migrations.RunPython(fill_client_network, migrations.RunPython.noop, elidable=True),
    ]
