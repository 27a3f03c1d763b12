"""Monthly token usage: counted in Redis by the token endpoint, persisted by a beat task."""

from typing import Any

from agentidp.tenancy import tenant_context
from agentidp.usage import month_start, redis_client, usage_key
from organizations.models import Organization, TokenUsage
from organizations.tasks import token_usage_persist_task
from tests.factories import OrganizationFactory
from tests.oidc.conftest import credentialed, request_token


def test_issued_tokens_are_counted_and_persisted(django_capture_on_commit_callbacks: Any) -> None:
    org = OrganizationFactory()
    cred = credentialed(org)
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            assert request_token(cred).status_code == 200
    assert token_usage_persist_task(str(org.id)) == 3
    with tenant_context(org.id):
        usage = TokenUsage.objects.get(organization_id=org.id, month=month_start())
    assert usage.tokens_issued == 3


def test_a_lost_redis_counter_is_restored_from_the_table(org: Organization) -> None:
    key = usage_key(org.id)
    redis_client().set(key, 7)
    assert token_usage_persist_task(str(org.id)) == 7
    redis_client().delete(key)  # Redis restarted and kept nothing
    assert token_usage_persist_task(str(org.id)) == 7
    assert redis_client().get(key) == b"7"
