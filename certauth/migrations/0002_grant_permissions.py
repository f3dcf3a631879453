from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("certauth", "0001_initial")]

    operations = [
        migrations.AlterModelOptions(
            name="certificateidentity",
            options={
                "ordering": ["name"],
                "permissions": [
                    ("disable_certificateidentity", "Can disable certificate identities"),
                    ("grant_certificateidentity", "Can grant: edit identity rules, add scopes, rename, re-enable"),
                ],
                "verbose_name": "certificate identity",
                "verbose_name_plural": "certificate identities",
            },
        ),
    ]
