"""Fixtures shared by the suite. Tests run as the application role: RLS is in force."""

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import DatabaseError, connections
from rest_framework.test import APIClient

from agentidp.devenv import ROOT
from agentidp.secrets import secret_store
from agentidp.tenancy import platform_context
from agents.models import Agent
from organizations.choices import MemberRole
from organizations.models import SYSTEM_ORGANIZATION_ID, Organization
from tests.factories import AgentFactory, OrganizationFactory, StaffFactory
from tests.live import Stack, stack_start
from tests.oidc.conftest import Credentialed, credentialed
from tests.openbao import BaoServer, start_bao


def pytest_configure(config: pytest.Config) -> None:
    # A tenant-table query outside any context raises instead of silently matching nothing.
    settings.AGENTIDP["STRICT_TENANCY"] = True
    # Test logins need no slow password hash; production keeps Django's PBKDF2 default.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Run before anything else, on a database as fresh as a new deployment's: the beat jobs it
# runs for a simulated day fan out to every organization, and other tests leave committed
# organizations behind (those whose threads commit), which would make it slower, not truer.
RUN_FIRST = (
    "tests/compliance/test_controls_over_time.py::test_every_control_passes_at_every_hour",
)


@pytest.hookimpl(trylast=True)  # after any shuffling plugin
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = [item for item in items if item.nodeid.startswith(RUN_FIRST)]
    items[:] = first + [item for item in items if item not in first]


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment: None, django_db_blocker: Any) -> Iterator[None]:
    """Create and migrate the test database as the owner, then point the application role at it.

    pytest-django sets up only the aliases tests ask for; ``default`` is a mirror of ``owner``
    and would otherwise keep the owner's non-test database name.
    """
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(
            verbosity=0, interactive=False, aliases=dict.fromkeys(["default", "owner"])
        )
    yield
    with django_db_blocker.unblock():
        connections.close_all()
        _end_other_sessions()
        teardown_databases(config, verbosity=0)


def _end_other_sessions() -> None:
    """Sessions of the live server's threads may outlive them; end them before the drop."""
    import psycopg

    settings_dict = connections["owner"].settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
        user=settings_dict["USER"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [settings_dict["NAME"]],
        )


@pytest.fixture(scope="session")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """One OpenBao dev server for the session; the app's secret store points at it."""
    server = start_bao(tmp_path_factory.mktemp("openbao"))
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _secret_store_is_openbao(bao: BaoServer) -> Iterator[None]:
    vault = settings.AGENTIDP["VAULT"]
    previous = dict(vault)
    vault.update(ADDR=bao.addr, TOKEN=bao.root_token, MOUNT="secret", PREFIX="agentidp-tests")
    secret_store.cache_clear()
    yield
    vault.update(previous)
    secret_store.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def _responses_scanned_for_private_keys() -> Iterator[None]:
    """Every response any test produces goes through :class:`tests.private_keys.PrivateKeyScan`
    (just inside the error formatter, so ahead of the token endpoint's lean path), whatever
    served it: test clients and live servers build their handlers after this."""
    stack = list(settings.MIDDLEWARE)
    inside = stack.index("agentidp.middleware.ErrorFormatMiddleware") + 1
    settings.MIDDLEWARE = [*stack[:inside], "tests.private_keys.PrivateKeyScan", *stack[inside:]]
    yield


@pytest.fixture(autouse=True)
def _no_private_key_served() -> Iterator[None]:
    from tests import private_keys

    private_keys.violations.clear()
    yield
    assert not private_keys.violations, private_keys.violations


@pytest.fixture(autouse=True)
def _fresh_key_ring() -> Iterator[None]:
    """Each test's rolled-back transaction may have rotated keys or changed clients: forget
    parsed keys, the cached JWKS, verified tokens and cached client records."""
    from oidc.keys import jwks_cache_clear, key_ring
    from oidc.lean import client_cache
    from oidc.tokens import verified_tokens

    for cache in (key_ring, client_cache, verified_tokens):
        cache.clear()
    jwks_cache_clear()
    yield
    for cache in (key_ring, client_cache, verified_tokens):
        cache.clear()
    jwks_cache_clear()


@pytest.fixture(autouse=True)
def _no_failed_authentications_remembered() -> None:
    """Every test client speaks from 127.0.0.1: failures counted for that address by earlier
    tests (the suite shares one Redis) must not throttle this one's."""
    from agentidp.usage import redis_client

    client = redis_client()
    stale = list(client.scan_iter(match="agentidp:authfail-address:*", count=1000))
    if stale:
        client.delete(*stale)


@pytest.fixture(autouse=True)
def _app_role_on_test_database(db: None) -> Iterator[None]:
    """Every test's default connection is the application role on the test database.

    A test is one transaction around many requests, each of which would have committed as it
    answered: the commit deadline the last one set is cleared before the test's end checks the
    deferred constraints, so a long test is not refused as a late commit."""
    default, owner = connections["default"].settings_dict, connections["owner"].settings_dict
    assert default["USER"] != owner["USER"], "tests must not run as the owner role"
    assert default["NAME"] == owner["NAME"] and str(default["NAME"]).startswith("test_")
    yield
    connection = connections["default"]
    if connection.connection is not None and connection.in_atomic_block:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('app.commit_deadline', '', true)")
        except DatabaseError:
            pass  # a transaction the test left aborted commits nothing anyway


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """Where a test keeps what a person looks at afterwards (screenshots, a report's first
    page): ``build/test-artifacts/<test>/`` in the checkout (``AGENTIDP_TEST_ARTIFACTS``
    elsewhere), emptied first; CI keeps the folder."""
    root = Path(os.environ.get("AGENTIDP_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    folder = root / re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def org() -> Organization:
    return OrganizationFactory()


@pytest.fixture
def cred(org: Organization) -> Credentialed:
    """An agent of ``org`` with a client secret and the agents scopes."""
    return credentialed(org)


@pytest.fixture
def other_org() -> Organization:
    return OrganizationFactory()


@pytest.fixture
def agent(org: Organization) -> Agent:
    return AgentFactory(organization=org)


@pytest.fixture
def foreign_agent(other_org: Organization) -> Agent:
    return AgentFactory(organization=other_org, name="foreign-agent")


@pytest.fixture
def staff(org: Organization) -> User:
    return StaffFactory(organization=org, role=MemberRole.OWNER)


@pytest.fixture
def system_org() -> Organization:
    with platform_context(reason="tests"):
        return Organization.objects.get(id=SYSTEM_ORGANIZATION_ID)


@pytest.fixture
def superuser(system_org: Organization) -> User:
    """A platform superuser, a member of the system organization."""
    return StaffFactory(organization=system_org, role=MemberRole.OWNER, superuser=True)


@pytest.fixture
def client_for() -> Callable[[User | None], APIClient]:
    def make(user: User | None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_login(user)
        return client

    return make


@pytest.fixture
def api(client_for: Callable[[User | None], APIClient], staff: User) -> APIClient:
    """An API client logged in as an owner of ``org``."""
    return client_for(staff)


@pytest.fixture
def platform_api(client_for: Callable[[User | None], APIClient], superuser: User) -> APIClient:
    return client_for(superuser)


@pytest.fixture
def run_in_threads() -> Iterator[Callable[..., list[Any]]]:
    """Run callables concurrently, each thread on its own committed database connection."""
    import threading

    def run(*calls: Callable[[], Any]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        barrier = threading.Barrier(len(calls))

        def worker(index: int, call: Callable[[], Any]) -> None:
            try:
                barrier.wait()
                results[index] = call()
            except BaseException as exc:  # the test inspects what each thread raised
                results[index] = exc
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker, args=(i, c)) for i, c in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return results

    yield run


@pytest.fixture(scope="session")
def make_run() -> Iterator[Stack]:
    """``make run`` as a new user starts it: a fresh data directory (its parents not yet made),
    embedded PostgreSQL and Redis, the demo seed. The demo passwords start with ``-``, which
    once made the seed command take them for options. Webhook retries come after a second
    each, so a failing receiver's delivery is dead-lettered within seconds, not hours."""
    stack = stack_start(
        demo_passwords=("-staff-Pa55word-x9", "--platform-Pa55word-y8"),
        extra_env={"AGENTIDP_WEBHOOK_RETRY_SCHEDULE": "1,1"},
    )
    yield stack
    stack.stop()


PARTNER_SETTINGS = {
    "AGENTIDP_KEY_PREPUBLISH_SECONDS": "3",
    "AGENTIDP_JWKS_MAX_AGE": "1",
    "AGENTIDP_ACCESS_TOKEN_MAX_LIFETIME": "8",
    "AGENTIDP_TOKEN_LEEWAY_SECONDS": "0",
}
"""A partner deployment's settings in tests: a next key may sign 3 s after it is published and
tokens live 8 s, so a retired key leaves its JWKS 8 s after a rotation."""


@pytest.fixture(scope="session")
def partner_run() -> Iterator[Stack]:
    """A second ``make run``, the partner deployment of federation tests (its own embedded
    PostgreSQL and Redis, its own issuer), with short key lifetimes."""
    stack = stack_start(extra_env=PARTNER_SETTINGS)
    yield stack
    stack.stop()
