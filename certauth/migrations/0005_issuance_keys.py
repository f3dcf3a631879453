"""Issuance keys on registered certificates: what makes a revocation reach every encoding of the same
certificate (issuer + serial, the signed TBS) and, for a compromised key, every certificate for that key.
"Issuer" is the issuing CA: its name and, when the certificate carries an AuthorityKeyIdentifier, its key
identifier, so two CAs sharing a name are two issuers (``certauth.certificates.issuer_serial_of``, the one
computation used here and at registration).

Existing rows are filled from the certificate stored with them; a row that holds only a typed thumbprint
(no PEM), or whose PEM is not the certificate its thumbprint names, stays NULL (certauth fills it the first
time that certificate is presented)."""

from django.db import migrations, models

BATCH = 500


def fill_issuance_keys(apps, schema_editor):
    from certauth.certificates import issuer_serial_of, load_certificate, spki_of, tbs_of, thumbprint_of
    from certauth.reasons import CertificateRefused

    entries = apps.get_model("certauth", "RegisteredCertificate").objects.using(schema_editor.connection.alias)
    pending = []
    rows = (
        entries.filter(tbs_sha256__isnull=True)
        .exclude(certificate_pem="")
        .only("pk", "thumbprint_sha256", "certificate_pem")
    )
    for entry in rows.order_by("pk").iterator(chunk_size=BATCH):
        try:
            certificate = load_certificate(entry.certificate_pem.encode("utf-8", "replace"))
            if thumbprint_of(certificate) != entry.thumbprint_sha256:
                continue  # not the pinned certificate: its keys would describe another one
            entry.issuer_serial_sha256 = issuer_serial_of(certificate)
            entry.tbs_sha256 = tbs_of(certificate)
            entry.spki_sha256 = spki_of(certificate)
        except (CertificateRefused, ValueError, TypeError):  # unreadable PEM or key: treated like a typed thumbprint
            continue
        pending.append(entry)
        if len(pending) >= BATCH:
            entries.bulk_update(pending, ["issuer_serial_sha256", "tbs_sha256", "spki_sha256"])
            pending = []
    if pending:
        entries.bulk_update(pending, ["issuer_serial_sha256", "tbs_sha256", "spki_sha256"])


class Migration(migrations.Migration):
    dependencies = [
        ("certauth", "0004_audit_aggregation"),
    ]

    operations = [
        migrations.AddField(
            model_name="registeredcertificate",
            name="issuer_serial_sha256",
            field=models.CharField(
                blank=True,
                db_index=True,
                editable=False,
                max_length=64,
                null=True,
                verbose_name="issuer and serial (SHA-256)",
            ),
        ),
        migrations.AddField(
            model_name="registeredcertificate",
            name="spki_sha256",
            field=models.CharField(
                blank=True,
                editable=False,
                max_length=64,
                null=True,
                verbose_name="public key (SHA-256 of the SPKI)",
            ),
        ),
        migrations.AddField(
            model_name="registeredcertificate",
            name="tbs_sha256",
            field=models.CharField(
                blank=True,
                db_index=True,
                editable=False,
                max_length=64,
                null=True,
                verbose_name="signed content (SHA-256 of the TBS)",
            ),
        ),
        migrations.AddIndex(
            model_name="registeredcertificate",
            index=models.Index(fields=["spki_sha256", "revocation_reason"], name="certauth_entry_key_idx"),
        ),
        migrations.RunPython(fill_issuance_keys, migrations.RunPython.noop, elidable=True),
    ]
