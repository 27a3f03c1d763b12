"""Clients may take DPoP-bound tokens only (RFC 9449 5.2 ``dpop_bound_access_tokens``);
``credentials_client_load`` returns the flag, so the token endpoint's lean path knows to decline
such a client without another read."""

from importlib import import_module

from django.db import migrations, models

BEFORE = import_module("credentials.migrations.0008_client_load_delegation").FUNCTION
PREVIOUS = "DROP FUNCTION credentials_client_load(text)"
FUNCTION = BEFORE.replace(
    "agent_did varchar, delegation_actors jsonb)",
    "agent_did varchar, delegation_actors jsonb, dpop_bound_access_tokens boolean)",
).replace(
    "a.did, a.delegation_actors\n",
    "a.did, a.delegation_actors, c.dpop_bound_access_tokens\n",
)
assert FUNCTION.count("dpop_bound_access_tokens") == 2  # noqa: S101 - both replacements applied


class Migration(migrations.Migration):
    dependencies = [
        ("credentials", "0009_agent_keys"),
    ]

    operations = [
        migrations.AddField(
            model_name="client",
            name="dpop_bound_access_tokens",
            field=models.BooleanField(
                default=False,
                help_text="Refuse token requests without a DPoP proof: every token is "
                "sender-bound.",
            ),
        ),
        migrations.RunSQL([PREVIOUS, FUNCTION], reverse_sql=[PREVIOUS, BEFORE]),
    ]
