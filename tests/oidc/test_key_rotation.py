"""Signing key rotation with pre-publication, under a clock the test controls.

A relying party is modelled as PyJWT holding a JWKS snapshot for its cache lifetime: every token
must verify with every snapshot it could meet, and a retired key must leave the JWKS only once
its last token has expired."""

import datetime as dt
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

import jwt
import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agentidp.secrets import secret_store
from agentidp.tenancy import platform_context
from agentidp.usage import redis_client
from compliance.models import AuditEvent
from oidc.keys import JWKS_CACHE_KEY, jwks_cache_clear, key_ring, signing_keys_ensure
from oidc.models import SigningKey
from oidc.services import RotationRefused, signing_key_rotate
from oidc.tasks import signing_key_rotate_task, signing_keys_remove_expired_task
from organizations.models import SYSTEM_ORGANIZATION_ID, Organization
from tests.factories import TEST_ACTOR
from tests.oidc.conftest import Credentialed, credentialed, jwt_parts, request_token
from tests.platform.test_admin import PASSWORD

PREPUBLISH = 900
MAX_AGE = 300
LIFETIME = 1200
LEEWAY = 30


@pytest.fixture
def clock() -> Iterator[Any]:
    with time_machine.travel(timezone.now(), tick=False) as traveller:
        yield traveller


@pytest.fixture
def rotation_settings(settings: Any) -> Iterator[None]:
    """Short windows, and keys of this test's own: the deployment's keys are set aside inside
    the test's transaction (rolled back after it), and this test's private parts go to a
    secret-store prefix of its own, so removing them cannot touch the keys other tests use."""
    settings.AGENTIDP = {
        **settings.AGENTIDP,
        "KEY_PREPUBLISH_SECONDS": PREPUBLISH,
        "JWKS_MAX_AGE": MAX_AGE,
        "ACCESS_TOKEN_MAX_LIFETIME": LIFETIME,
        "TOKEN_LEEWAY_SECONDS": LEEWAY,
        "VAULT": {**settings.AGENTIDP["VAULT"], "PREFIX": f"rotation-{uuid.uuid4().hex}"},
    }
    secret_store.cache_clear()
    with platform_context(reason="tests"):
        SigningKey.objects.all().delete()
        signing_keys_ensure(actor=TEST_ACTOR)
    key_ring.clear()
    jwks_cache_clear()
    yield
    secret_store.cache_clear()


def _jwks() -> dict[str, Any]:
    response = HttpClient().get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response["Cache-Control"] == f"public, max-age={MAX_AGE}"
    document: dict[str, Any] = response.json()
    return document


def _rotate(capture: Any, algorithms: list[str] | None = None) -> Any:
    with capture(execute=True), platform_context(reason="tests"):
        return signing_key_rotate(actor=TEST_ACTOR, algorithms=algorithms)


def _current() -> dict[str, str]:
    with platform_context(reason="tests"):
        return dict(SigningKey.objects.filter(status="current").values_list("algorithm", "kid"))


@dataclass
class Issued:
    token: str
    at: float
    exp: int
    kid: str


def _verifies(token: str, snapshot: dict[str, Any]) -> bool:
    """PyJWT with only this JWKS snapshot: the signature, under the key the kid names."""
    header = jwt.get_unverified_header(token)
    keys = {key["kid"]: key for key in snapshot["keys"]}
    if header["kid"] not in keys:
        return False
    key = jwt.PyJWK.from_dict(keys[header["kid"]])
    jwt.decode(
        token,
        key,
        algorithms=[header["alg"]],
        options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
    )
    return True


def test_every_token_verifies_with_every_jwks_a_relying_party_may_hold(
    clock: Any, rotation_settings: None, org: Organization,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    """Every MAX_AGE seconds for five rotations: fetch the JWKS (a relying party caches it for
    MAX_AGE), get an access token (ES256) and an id_token (RS256), try to rotate (refused until
    the next key is pre-published)."""
    cred = credentialed(org, scopes=["openid", "agents:read"])
    snapshots: list[tuple[float, dict[str, Any]]] = []
    issued: list[Issued] = []
    rotations = refusals = 0
    removed: set[str] = set()
    for _ in range(20):
        now = timezone.now().timestamp()
        snapshots.append((now, _jwks()))
        response = request_token(cred, scope="openid agents:read")
        assert response.status_code == 200, response.content
        for token in (response.json()["access_token"], response.json()["id_token"]):
            header, claims = jwt_parts(token)
            issued.append(Issued(token, now, claims["exp"], header["kid"]))
        try:
            rotation = _rotate(django_capture_on_commit_callbacks)
            rotations += 1
            removed.update(rotation.removed)
        except RotationRefused:
            refusals += 1
        published = {key["kid"] for key in _jwks()["keys"]}
        for earlier in issued:
            if earlier.exp + LEEWAY > now:  # alive: its key must still be published
                assert earlier.kid in published
        clock.shift(MAX_AGE)
        key_ring.clear()  # its refresh runs on the monotonic clock, which does not travel
    assert rotations >= 5 and refusals >= 10
    assert len({one.kid for one in issued}) >= 10  # both algorithms went through rotations
    assert removed, "no retired key was ever removed"
    assert not removed & {kid for kid in _current().values()}
    checked = 0
    for fetched_at, snapshot in snapshots:
        for one in issued:
            # The relying party holds this snapshot until fetched_at + MAX_AGE; any token alive
            # at fetched_at or issued before the snapshot goes stale must verify with it.
            if one.at <= fetched_at + MAX_AGE and one.exp > fetched_at:
                assert _verifies(one.token, snapshot), (fetched_at, one.kid)
                checked += 1
    assert checked > len(issued)


def test_a_cached_jwks_verifies_the_first_token_after_rotation(
    clock: Any, rotation_settings: None, cred: Credentialed,
    token_for: Callable[..., str], django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    clock.shift(PREPUBLISH + 1)
    _rotate(django_capture_on_commit_callbacks)  # the next key now is a fresh one
    clock.shift(PREPUBLISH - MAX_AGE)
    cached = _jwks()  # fetched before the rotation, kept for MAX_AGE
    clock.shift(MAX_AGE + 1)
    before = token_for(cred)
    _rotate(django_capture_on_commit_callbacks)
    key_ring.clear()
    after = token_for(cred)
    assert jwt_parts(after)[0]["kid"] != jwt_parts(before)[0]["kid"]
    assert _verifies(after, cached) and _verifies(before, cached)


def test_a_second_rotation_inside_the_window_is_refused_and_changes_nothing(
    clock: Any, rotation_settings: None, django_capture_on_commit_callbacks: Any
) -> None:
    clock.shift(PREPUBLISH + 1)
    rotated = _rotate(django_capture_on_commit_callbacks)
    current = _current()
    assert current == {name: key.kid for name, key in rotated.activated.items()}
    with pytest.raises(CommandError, match="not been published long enough"):
        call_command("rotatesigningkeys", stdout=StringIO())
    assert _current() == current
    out = StringIO()
    call_command("rotatesigningkeys", "--status", stdout=out)
    status = json.loads(out.getvalue())["keys"]
    assert {name: entry["current"] for name, entry in status.items()} == current
    assert dt.datetime.fromisoformat(status["ES256"]["may_sign_from"]) > timezone.now()
    assert signing_key_rotate_task() == {}  # the beat job logs and waits for the next run
    clock.shift(PREPUBLISH)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("rotatesigningkeys", "--algorithm", "EdDSA", stdout=out)
    document = json.loads(out.getvalue())
    assert list(document["current"]) == ["EdDSA"]
    after = _current()
    assert after["EdDSA"] != current["EdDSA"] and after["ES256"] == current["ES256"]
    assert document["retired"] == {"EdDSA": current["EdDSA"]}


def test_rotation_with_the_secret_store_unreachable_leaves_the_current_key_signing(
    clock: Any, rotation_settings: None, settings: Any, cred: Credentialed,
    token_for: Callable[..., str],
) -> None:  # fmt: skip
    clock.shift(PREPUBLISH + 1)
    before = _current()
    kid = jwt_parts(token_for(cred))[0]["kid"]
    vault = settings.AGENTIDP["VAULT"]
    reachable = vault["ADDR"]
    vault["ADDR"] = "http://127.0.0.1:9"
    secret_store.cache_clear()
    try:
        with pytest.raises(CommandError, match="secret store is unavailable"):
            call_command("rotatesigningkeys", stdout=StringIO())
    finally:
        vault["ADDR"] = reachable
        secret_store.cache_clear()
    assert _current() == before
    key_ring.clear()
    assert jwt_parts(token_for(cred))[0]["kid"] == kid


def test_rotation_is_audited_and_retired_keys_are_removed_after_their_tokens(
    clock: Any, rotation_settings: None, django_capture_on_commit_callbacks: Any
) -> None:
    clock.shift(PREPUBLISH + 1)
    rotation = _rotate(django_capture_on_commit_callbacks, ["ES256"])
    old = rotation.retired["ES256"]
    with platform_context(reason="tests"):
        actions = list(
            AuditEvent.objects.filter(organization_id=SYSTEM_ORGANIZATION_ID)
            .order_by("-sequence")
            .values_list("action", "subject_id")[:3]
        )
        new_next = SigningKey.objects.get(algorithm="ES256", status="next").kid
    assert set(actions) == {
        ("key.retired", old),
        ("key.activated", rotation.activated["ES256"].kid),
        ("key.published", new_next),
    }
    clock.shift(LIFETIME + LEEWAY - 1)
    assert old in {key["kid"] for key in _jwks()["keys"]}
    assert signing_keys_remove_expired_task() == []
    clock.shift(2)
    assert old not in {key["kid"] for key in _jwks()["keys"]}
    assert signing_keys_remove_expired_task() == [old]
    with platform_context(reason="tests"):
        assert not SigningKey.objects.filter(kid=old).exists()
        assert AuditEvent.objects.filter(action="key.removed", subject_id=old).exists()


def test_key_age_metric(
    rotation_settings: None, cred: Credentialed, token_for: Callable[..., str]
) -> None:
    token_for(cred)
    page = HttpClient().get("/metrics").content.decode()
    for algorithm, kid in _current().items():
        line = next(
            line
            for line in page.splitlines()
            if line.startswith("agentidp_signing_key_age_seconds{")
            and f'algorithm="{algorithm}"' in line
        )
        assert f'kid="{kid}"' in line and float(line.rsplit(" ", 1)[1]) >= 0


def test_admin_shows_keys_and_rotates_through_the_service(
    clock: Any, rotation_settings: None, superuser: User, staff: User,
    cred: Credentialed, token_for: Callable[..., str],
) -> None:  # fmt: skip
    token_for(cred)  # the keys exist
    platform = HttpClient()
    assert platform.login(username=superuser.username, password=PASSWORD)
    page = platform.get("/admin/oidc/signingkey/").content.decode()
    current = _current()
    for kid in current.values():
        assert kid in page
    assert "Current (signing)" in page and "Next (published, not yet signing)" in page
    refused = platform.post(
        "/admin/oidc/signingkey/",
        {"action": "rotate_now", "_selected_action": list(current.values())},
        follow=True,
    ).content.decode()
    assert "not been published long enough" in refused
    assert _current() == current
    clock.shift(PREPUBLISH + 1)
    done = platform.post(
        "/admin/oidc/signingkey/",
        {"action": "rotate_now", "_selected_action": [current["RS256"]]},
        follow=True,
    ).content.decode()
    assert "Rotated. Now signing: RS256" in done
    after = _current()
    assert after["RS256"] != current["RS256"] and after["ES256"] == current["ES256"]
    member = HttpClient()
    assert member.login(username=staff.username, password=PASSWORD)
    assert member.get("/admin/oidc/signingkey/").status_code == 403


def test_prepublication_must_outlast_two_jwks_cache_lifetimes() -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter on our own settings
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            "DJANGO_SETTINGS_MODULE": "agentidp.settings",
            "SECRET_KEY": "x",
            "AGENTIDP_KEY_PREPUBLISH_SECONDS": "600",
            "AGENTIDP_JWKS_MAX_AGE": "300",
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "AGENTIDP_KEY_PREPUBLISH_SECONDS must exceed twice AGENTIDP_JWKS_MAX_AGE" in (
        result.stderr
    )


def test_expired_retired_keys_are_not_in_the_jwks_even_when_cached(
    clock: Any, rotation_settings: None, django_capture_on_commit_callbacks: Any
) -> None:
    clock.shift(PREPUBLISH + 1)
    old = _rotate(django_capture_on_commit_callbacks, ["RS256"]).retired["RS256"]
    assert old in {key["kid"] for key in _jwks()["keys"]}  # cached now
    clock.shift(dt.timedelta(seconds=LIFETIME + LEEWAY + 1))
    assert old not in {key["kid"] for key in _jwks()["keys"]}


def test_the_jwks_is_served_from_redis_and_rotation_clears_it(
    clock: Any, rotation_settings: None, django_capture_on_commit_callbacks: Any
) -> None:
    first = _jwks()
    assert redis_client().get(JWKS_CACHE_KEY) is not None
    with CaptureQueriesContext(connection) as queries:
        assert _jwks() == first
    assert not [q for q in queries.captured_queries if "oidc_signingkey" in q["sql"]]
    clock.shift(PREPUBLISH + 1)
    _jwks()  # cached again, past its own deadline's rebuild
    _rotate(django_capture_on_commit_callbacks)
    with platform_context(reason="tests"):
        fresh = set(SigningKey.objects.filter(status="next").values_list("kid", flat=True))
    assert len(fresh) == 3 and not fresh & {key["kid"] for key in first["keys"]}
    assert fresh <= {key["kid"] for key in _jwks()["keys"]}
