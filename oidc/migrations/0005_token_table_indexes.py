"""The token table keeps only the indexes its queries use.

Dropped: the single-column index on organization_id (the (organization_id, expires) index
covers it), the one on user_id (client_credentials never sets a user), and the
varchar_pattern_ops copy of the token_checksum index (nothing searches checksums by prefix;
the unique index stays). Each one cost PostgreSQL an index insertion per issued token.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0004_revocations_purge_schedule"),
        ("organizations", "0003_token_usage"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunSQL(
            """
            DO $$
            DECLARE name text;
            BEGIN
                FOR name IN SELECT indexname FROM pg_indexes
                             WHERE tablename = 'oidc_accesstoken'
                               AND indexdef LIKE '%varchar_pattern_ops%'
                LOOP
                    EXECUTE format('DROP INDEX %I', name);
                END LOOP;
            END $$
            """,
            reverse_sql="CREATE INDEX oidc_accesstoken_token_checksum_like"
            " ON oidc_accesstoken (token_checksum varchar_pattern_ops)",
        ),
        migrations.AlterField(
            model_name="accesstoken",
            name="organization",
            field=models.ForeignKey(
                db_index=False,
                editable=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="organizations.organization",
            ),
        ),
        migrations.AlterField(
            model_name="accesstoken",
            name="user",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="%(app_label)s_%(class)s",
                to=settings.AUTH_USER_MODEL,
                verbose_name="user",
            ),
        ),
    ]
