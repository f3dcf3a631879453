from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("certauth", "0002_grant_permissions")]

    operations = [
        migrations.AddField(
            model_name="trustedauthority",
            name="ocsp_url",
            field=models.URLField(
                blank=True,
                help_text="Asked about certificates this CA issued (REVOCATION_MODE ocsp); empty: each certificate's AIA.",
                max_length=1000,
                verbose_name="OCSP responder URL",
            ),
        ),
    ]
