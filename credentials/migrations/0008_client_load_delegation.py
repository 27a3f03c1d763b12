"""``credentials_client_load`` also returns who may act for the agent (its delegation policy's
actors), for the ``may_act`` claim of the tokens it is issued."""

from importlib import import_module

from django.db import migrations

BEFORE = import_module("credentials.migrations.0007_encrypted_at_rest").FUNCTION
PREVIOUS = "DROP FUNCTION credentials_client_load(text)"
FUNCTION = BEFORE.replace(
    "id_token_signed_response_alg varchar, agent_did varchar)",
    "id_token_signed_response_alg varchar, agent_did varchar, delegation_actors jsonb)",
).replace(
    "a.name, a.capabilities, c.id_token_signed_response_alg, a.did\n",
    "a.name, a.capabilities, c.id_token_signed_response_alg, a.did, a.delegation_actors\n",
)
assert FUNCTION.count("delegation_actors") == 2  # noqa: S101 - both replacements applied


class Migration(migrations.Migration):
    dependencies = [
        ("credentials", "0007_encrypted_at_rest"),
        ("agents", "0006_sponsors"),
    ]

    operations = [migrations.RunSQL([PREVIOUS, FUNCTION], reverse_sql=[PREVIOUS, BEFORE])]
