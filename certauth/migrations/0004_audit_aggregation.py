"""Audit rows aggregated per client address (issue 16, class 7): a flag and the latest thumbprint."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("certauth", "0003_authority_ocsp")]

    operations = [
        migrations.AddField(
            model_name="authenticationfailure",
            name="aggregated_by_address",
            field=models.BooleanField(
                default=False,
                help_text="Counts refusals of any certificate from this address; the certificate shown is the first.",
            ),
        ),
        migrations.AddField(
            model_name="authenticationfailure",
            name="last_thumbprint_sha256",
            field=models.CharField(
                blank=True, max_length=64, help_text="The thumbprint of the latest refused certificate in this row."
            ),
        ),
    ]
