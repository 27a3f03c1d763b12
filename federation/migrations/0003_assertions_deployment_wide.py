"""Spent partner assertions move to the deployment-wide record (``oidc_assertionuse``): a jti
is single use per issuer whatever organization it is presented to. The rows still unexpired are
carried over (keyed by the issuer's and the jti's SHA-256), then the per-organization table is
dropped."""

from django.db import migrations

CARRY_OVER = """
INSERT INTO oidc_assertionuse (issuer_sha256, jti_sha256, expires_at, spent_at)
SELECT encode(sha256(convert_to(p.issuer, 'UTF8')), 'hex'), a.jti_hash, max(a.expires_at),
       min(a.created_at)
  FROM federation_federationassertion a
  JOIN federation_federationpartner p ON p.id = a.partner_id
 WHERE a.expires_at > now()
 GROUP BY 1, 2
ON CONFLICT (issuer_sha256, jti_sha256) DO NOTHING
"""


class Migration(migrations.Migration):
    dependencies = [
        ("federation", "0002_maintain_schedule"),
        ("oidc", "0010_assertion_uses"),
    ]

    operations = [
        migrations.RunSQL(CARRY_OVER, reverse_sql=migrations.RunSQL.noop),
        migrations.DeleteModel(name="FederationAssertion"),
    ]
