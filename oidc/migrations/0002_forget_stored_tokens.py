"""RFC 9700 token storage: rows keep only each token's checksum from now on; blank the bearer
tokens earlier versions stored in full (their checksums, which lookups use, stay)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("oidc", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "UPDATE oidc_accesstoken SET token = '' WHERE token <> ''",
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
