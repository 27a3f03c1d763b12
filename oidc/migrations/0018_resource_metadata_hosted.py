from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("oidc", "0017_resource_registry"),
    ]

    operations = [
        migrations.AddField(
            model_name="resource",
            name="metadata_hosted",
            field=models.BooleanField(
                default=False,
                help_text="This deployment serves the resource's RFC 9728 metadata (public, at /resources/{id}/oauth-protected-resource) for servers that do not serve their own.",
            ),
        ),
        migrations.RunSQL(
            # Hosted metadata needs no token: this reveals only which organization a hosted
            # resource belongs to (SECURITY DEFINER, owner, search_path pinned); the resource is
            # then read in that organization under RLS.
            sql="""CREATE FUNCTION oidc_resource_hosted(p_resource_id uuid)
                   RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER
                   SET search_path = pg_catalog, public AS $$
                       SELECT organization_id FROM public.oidc_resource
                        WHERE id = p_resource_id AND metadata_hosted
                   $$""",
            reverse_sql="DROP FUNCTION oidc_resource_hosted(uuid)",
        ),
    ]
