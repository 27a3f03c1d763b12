"""The token endpoint's lean path: a plain, valid ``client_credentials`` request answered in
one Redis call and one autocommit SQL statement, ahead of the middleware chain.

:class:`LeanTokenMiddleware` sits third in ``MIDDLEWARE``, after django-prometheus's first
middleware and the error formatter (which turns anything unexpected into an OAuth error). For ``POST /oauth2/token`` it tries :func:`token_issue_lean`; whatever that
declines goes on down the chain to the full path (:class:`oidc.views.TokenView`: DOT, the
request transaction, every refusal with its reason, ``auth.failed`` event, throttling and
error body). So the lean path only ever answers 200, with the full path's body and headers
(django-prometheus's per-view metrics, the security headers, ``no-store``), and the same
``agentidp_token_endpoint_seconds`` and ``agentidp_tokens_issued_total`` metrics.

It answers when, and only when:

- the body is a small form with ``grant_type=client_credentials`` and at most ``scope``, and
  the client authenticates one way (Basic, or ``client_id``/``client_secret`` in the form);
- the client's record (:class:`ClientRecord`, from the per-process :data:`client_cache`)
  shows an active agent and organization, a live unexpired secret with this digest and the
  scopes asked for;
- admission (:func:`token_request_admit`, the one Redis call) allows it, and returns the
  organization's client-records stamp (``agentidp.stamps``): a cached record is used only
  while its stamp matches, and is read again from the database otherwise;
- ``oidc_token_issue`` (one statement in autocommit) re-checks in the database what the record
  said, records the token, appends ``token.issued`` to the audit chain and commits. Revocation
  and suspension therefore never depend on the cache: a stale record only sends the request
  down the full path.

With ``openid`` granted, the id_token is signed in memory from the cached record (the agent's
name and capabilities, the client's id_token algorithm): still one statement.

A reservation admission made is given back whenever the lean path then declines.
"""

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import cast
from urllib.parse import parse_qsl

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import ResolverMatch, resolve
from django.utils import timezone
from django_prometheus.middleware import PrometheusAfterMiddleware
from prometheus_client import Counter
from redis import RedisError

from agentidp.addresses import client_address
from agentidp.boundary import text_refusal
from agentidp.deadlines import commit_deadline, commit_deadlines
from agentidp.errors import JSONValue
from agentidp.events import events_committed
from agentidp.lru import BoundedLRU
from agentidp.middleware import unavailable_response
from agents.choices import AgentStatus
from agents.models import MAX_DELEGATION_DEPTH
from compliance.services import EventContent, SQLValue, audit_append_arguments
from credentials.records import ClientRecord
from credentials.services import client_credentials_parse, client_record_load, secret_index
from oidc.extensions import is_delegated
from oidc.keys import SigningMaterial, key_ring
from oidc.ratelimit import token_request_admit, token_request_refund
from oidc.services import token_issued_data
from oidc.status import status_index_take
from oidc.tokens import (
    ACCESS_TOKEN_TYPE,
    EXCHANGE_TOKEN_TYPES,
    TOKEN_EXCHANGE,
    Delegation,
    InvalidToken,
    VerifiedToken,
    access_token_claims,
    access_token_sign,
    access_token_verify,
    act_claim,
    chain_actors,
    chain_depth,
    delegable_scopes,
    id_token_claims,
    id_token_sign,
    lifetime_capped,
    may_act_for,
    token_leeway,
)
from oidc.validators import TOKENS_ISSUED
from oidc.views import TOKEN_LATENCY, token_response_headers
from organizations.choices import Scope

logger = logging.getLogger("agentidp.auth")

TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a path
MAX_BODY = 4096
FORM = "application/x-www-form-urlencoded"
LEAN_FIELDS = frozenset({"grant_type", "scope", "client_id", "client_secret"})
EXCHANGE_FIELDS = LEAN_FIELDS | {"subject_token", "subject_token_type", "requested_token_type"}

LEAN_REQUESTS = Counter(
    "agentidp_token_lean_total",
    "Token requests by how the lean path took them: issued, or declined to the full path "
    "with a reason.",
    ["outcome"],
)
CLIENT_CACHE = Counter(
    "agentidp_client_cache_total",
    "Client-record cache lookups on the token endpoint's lean path (hit, miss, stale).",
    ["result"],
)
# The children every issued token touches, bound once.
_ISSUED = LEAN_REQUESTS.labels(outcome="issued")
_HIT = CLIENT_CACHE.labels(result="hit")
_LATENCY_200 = TOKEN_LATENCY.labels(status="200")


# --- the per-process client cache ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CachedClient:
    record: ClientRecord
    # The organization's client-records stamp the record is valid under; None until the first
    # admission after the record was read tells it.
    stamp: str | None


# The per-process client cache: a bounded LRU by client_id, entries also expiring after their
# age limit whatever their stamp says. Only records of existing clients enter it (an unknown
# client_id is never cached), so a flood of made-up ids cannot push the working set out.
client_cache: BoundedLRU[str, CachedClient] = BoundedLRU(
    max_entries=int(settings.AGENTIDP["CLIENT_CACHE_ENTRIES"]),
    max_age=float(settings.AGENTIDP["CLIENT_CACHE_SECONDS"]),
)


def _cache(record: ClientRecord, stamp: str | None) -> CachedClient:
    entry = CachedClient(record=record, stamp=stamp)
    client_cache.put(record.client_id, entry)
    return entry


# --- the lean path ---------------------------------------------------------------------------


class Declined(Exception):
    """The lean path does not answer this request; the full path will. ``reason`` is a metric
    label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenRequest:
    client_id: str
    secret: str
    scopes: tuple[str, ...] | None  # None: the client's default (all its allowed scopes)
    # A token exchange between the organization's agents: the token exchanged.
    subject_token: str | None = None


def token_request_parse(request: HttpRequest) -> TokenRequest:
    """The request, if it is a plain ``client_credentials`` one the lean path can answer, or a
    plain token exchange between local agents (a subject access token, no actor token,
    audience or resource)."""
    meta = request.META
    if "HTTP_DPOP" in meta:
        raise Declined("dpop")  # a proof to check and a token to bind: the full path's
    if meta.get("QUERY_STRING") or meta.get("CONTENT_TYPE", "").split(";")[0].strip() != FORM:
        raise Declined("shape")
    try:
        length = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError as exc:
        raise Declined("shape") from exc
    if not 0 < length <= MAX_BODY:
        raise Declined("shape")
    try:
        pairs = parse_qsl(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Declined("shape") from exc
    form = dict(pairs)
    if len(form) != len(pairs):
        raise Declined("shape")
    subject_token = _exchange_subject(form)
    if not (EXCHANGE_FIELDS if subject_token else LEAN_FIELDS).issuperset(form):
        raise Declined("shape")
    authorization = meta.get("HTTP_AUTHORIZATION", "")
    if authorization and ("client_id" in form or "client_secret" in form):
        raise Declined("shape")  # two client authentication methods: the full path refuses
    client_id, secret = client_credentials_parse(
        authorization=authorization,
        form_client_id=form.get("client_id"),
        form_secret=form.get("client_secret"),
    )
    if not client_id or not secret:
        raise Declined("credentials")
    scope = form.get("scope")
    scopes: tuple[str, ...] | None = None
    if scope is not None:
        scopes = tuple(scope.split(" "))
        if text_refusal(scope) or "" in scopes or len(set(scopes)) != len(scopes):
            raise Declined("scope")
    return TokenRequest(
        client_id=client_id, secret=secret, scopes=scopes, subject_token=subject_token
    )


def _exchange_subject(form: dict[str, str]) -> str | None:
    """The subject token of a token exchange the lean path can answer, None for
    ``client_credentials``; anything else is declined."""
    grant_type = form.get("grant_type")
    if grant_type == "client_credentials":
        return None
    if (
        grant_type != TOKEN_EXCHANGE
        or form.get("subject_token_type") not in EXCHANGE_TOKEN_TYPES
        or form.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE
        or not form.get("subject_token")
    ):
        raise Declined("shape")
    return form["subject_token"]


def _authorized(record: ClientRecord, digest: str, scopes: tuple[str, ...] | None) -> uuid.UUID:
    """The credential the secret matches, if the record says a token may be issued."""
    if record.refusal():
        raise Declined("client")
    if record.dpop_bound_access_tokens:
        raise Declined("dpop")  # the full path refuses it without a proof
    credential_id, _ = record.secret_check(digest, timezone.now())
    if credential_id is None:
        raise Declined("secret")
    if scopes is not None and not record.scopes_allowed(scopes):
        raise Declined("scope")
    return credential_id


def _record(client_id: str) -> CachedClient:
    cached = client_cache.get(client_id)
    if cached is not None:
        return cached
    CLIENT_CACHE.labels(result="miss").inc()
    record = client_record_load(client_id=client_id)
    if record is None:
        raise Declined("unknown_client")  # never cached: see ClientCache
    return _cache(record, stamp=None)


# Every argument is sent as text and cast here: psycopg adapts a str for a fraction of what a
# UUID, a datetime or a list costs it (about 0.06 ms of CPU per token, measured).
ISSUE_SQL = (
    "SELECT oidc_token_issue(%s::bigint, %s::uuid, %s, string_to_array(%s, ' '), %s, "
    "%s::bigint, %s::integer, %s, %s::uuid, %s, to_timestamp(%s::bigint), '[]'::jsonb, "
    "%s::uuid, %s::uuid, %s::timestamptz, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, "
    "%s::bigint), "
    # the statement's transaction commits only before this (agentidp.deadlines)
    "set_config('app.commit_deadline', %s, true)"
)


def token_issue_lean(request: HttpRequest) -> bytes:
    """The token response body for a plain ``client_credentials`` request, or raise
    :class:`Declined`."""
    asked = token_request_parse(request)
    digest = secret_index(asked.secret)
    cached = _record(asked.client_id)
    credential_id = _authorized(cached.record, digest, asked.scopes)
    record = cached.record
    signing = key_ring.signing()
    if signing is None:
        raise Declined("no_key")  # the full path creates the first keys
    admission = token_request_admit(
        client_id=record.client_id,
        organization_id=record.organization_id,
        plan=record.plan,
        max_tokens_per_month=record.max_tokens_per_month,
        credential_id=credential_id,
        source_address=client_address(request),
    )
    if not admission.allowed:
        raise Declined("admission")  # the full path runs it again and answers 429
    try:
        if cached.stamp is None:
            _cache(record, stamp=admission.stamp)
            _HIT.inc()
        elif cached.stamp != admission.stamp:
            CLIENT_CACHE.labels(result="stale").inc()
            client_cache.forget(record.client_id)
            fresh = client_record_load(client_id=record.client_id)
            if fresh is None:
                raise Declined("unknown_client")
            record = _cache(fresh, stamp=admission.stamp).record
            credential_id = _authorized(record, digest, asked.scopes)
        else:
            _HIT.inc()
        if asked.subject_token is None:
            body = _issue(record, credential_id, digest, asked.scopes, signing)
        else:
            body = _exchange(record, credential_id, digest, asked, signing, admission.stamp)
    except BaseException:
        token_request_refund(admission.reserved)
        raise
    return body


def _issue(
    record: ClientRecord,
    credential_id: uuid.UUID,
    digest: str,
    scopes: tuple[str, ...] | None,
    signing: SigningMaterial,
) -> bytes:
    """Sign, then record and audit in one autocommit statement; the token once committed."""
    granted = list(scopes if scopes is not None else record.allowed_scopes)
    scope = " ".join(granted)
    id_signing: SigningMaterial | None = None
    if Scope.OPENID in granted:
        id_signing = key_ring.signing(record.id_token_signed_response_alg)
        if id_signing is None:
            raise Declined("no_key")
    lifetime = lifetime_capped(record.access_token_lifetime_seconds)
    status_idx = status_index_take()
    claims = access_token_claims(
        agent_id=record.agent_id,
        client_id=record.client_id,
        organization_id=record.organization_id,
        scope=scope,
        audiences=[],
        lifetime=lifetime,
        status_idx=status_idx,
        actors=record.delegation_actors,
    )
    token = access_token_sign(claims, signing)
    jti = str(claims["jti"])
    id_token = None
    if id_signing is not None:
        id_token = id_token_sign(
            id_token_claims(
                access_claims=claims,
                access_token=token,
                algorithm=id_signing.algorithm,
                agent_name=record.agent_name,
                agent_status=record.agent_status,
                capabilities=record.capabilities,
                did=record.agent_did,
            ),
            id_signing,
        )
    audit = audit_append_arguments(
        EventContent.new(
            organization_id=record.organization_id,
            actor_type="agent",
            actor_id=str(record.agent_id),
            action="token.issued",
            outcome="success",
            subject_type="token",
            subject_id=jti,
            data=token_issued_data(
                client_id=record.client_id,
                scope=scope,
                audiences=[],
                credential_id=credential_id,
                id_token=id_token is not None,
            ),
        )
    )
    if not _recorded(ISSUE_SQL, record, credential_id, digest, token, claims, audit, status_idx):
        # The database disagrees with the cached record: read it again next time, and let the
        # full path answer this request with the reason.
        client_cache.forget(record.client_id)
        raise Declined("recheck")
    TOKENS_ISSUED.inc()
    events_committed(record.organization_id)  # token.issued committed with the statement
    document = {
        "access_token": token,
        "expires_in": lifetime,
        "token_type": "Bearer",
        "scope": scope,
    }
    if id_token is not None:
        document["id_token"] = id_token
    return json.dumps(document).encode()


def _recorded(
    sql: str,
    record: ClientRecord,
    credential_id: uuid.UUID,
    digest: str,
    token: str,
    claims: dict[str, JSONValue],
    audit: Sequence[SQLValue],
    status_idx: int,
    delegation: Sequence[str] = (),
) -> bool:
    """Run the one statement that re-checks, records and audits a token (``oidc_token_issue``,
    or ``oidc_token_exchange`` with the delegation's arguments); whether it wrote it."""
    scope = str(claims["scope"])
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                str(record.pk), str(credential_id), digest, scope, record.plan,
                str(record.max_tokens_per_month), str(record.access_token_lifetime_seconds),
                hashlib.sha256(token.encode()).hexdigest(), str(claims["jti"]), scope,
                str(claims["exp"]), *(_text(value) for value in audit), str(status_idx),
                *delegation, _commit_deadline(),
            ],
        )  # fmt: skip
        row = cursor.fetchone()
    return bool(row) and row[0] is True


def _commit_deadline() -> str:
    deadline = commit_deadline()
    assert deadline is not None  # noqa: S101 - the middleware entered commit_deadlines()
    return deadline


def _text(value: SQLValue) -> SQLValue:
    """An audit argument as text (its SQL casts it back): times in ISO 8601 to the microsecond,
    the precision the audit chain's canonical form uses."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


# --- token exchange between the organization's agents ----------------------------------------


@dataclass(frozen=True, slots=True)
class SubjectPolicy:
    """What the lean path needs of a subject agent's delegation policy (``oidc.delegation``
    decides the same on the full path), valid while its organization's stamp is ``stamp``."""

    status: str
    actors: tuple[str, ...]
    scopes: frozenset[str]
    max_depth: int
    stamp: str


# Subject agents' policies by agent id, beside the client records and under the same stamps:
# read after the admission that told the stamp, so a change the read missed gives a new one.
policy_cache: BoundedLRU[uuid.UUID, SubjectPolicy] = BoundedLRU(
    max_entries=int(settings.AGENTIDP["CLIENT_CACHE_ENTRIES"]),
    max_age=float(settings.AGENTIDP["CLIENT_CACHE_SECONDS"]),
)

# One scalar subquery after set_config: the select list runs in order, so RLS sees the
# organization (a WHERE clause of this statement would be filtered before it is set).
POLICY_SQL = """
SELECT set_config('app.organization_id', %s, true),
       (SELECT json_build_array(a.status, a.delegation_actors, a.delegation_scopes,
                                least(%s, coalesce(nullif(a.delegation_max_depth, 0),
                                                   o.delegation_max_depth)))
          FROM agents_agent a JOIN organizations_organization o ON o.id = a.organization_id
         WHERE a.id = %s::uuid AND a.organization_id = %s::uuid)
"""

# oidc_token_issue's arguments, then the delegation's: the subject agent, the parent token, its
# iat, the chain's depth and its earlier actors.
EXCHANGE_SQL = ISSUE_SQL.replace("oidc_token_issue(", "oidc_token_exchange(").replace(
    "%s::bigint), set_config",
    "%s::bigint, %s::uuid, %s::uuid, %s::double precision, %s::integer, "
    "string_to_array(%s, ' ')::uuid[]), set_config",
)


def _policy(agent_id: uuid.UUID, organization_id: uuid.UUID, stamp: str) -> SubjectPolicy:
    cached = policy_cache.get(agent_id)
    if cached is not None and cached.stamp == stamp:
        return cached
    with connection.cursor() as cursor:
        cursor.execute(
            POLICY_SQL,
            [str(organization_id), MAX_DELEGATION_DEPTH, str(agent_id), str(organization_id)],
        )
        row = cursor.fetchone()
    found = row[1] if row else None
    if isinstance(found, str):
        found = json.loads(found)  # json may come as text
    if not isinstance(found, list) or len(found) != 4 or not isinstance(found[1], list):
        raise Declined("subject")
    status, actors, scopes, max_depth = found
    policy = SubjectPolicy(
        status=str(status), actors=tuple(str(actor) for actor in actors),
        scopes=frozenset(scopes or ()), max_depth=int(max_depth or 1), stamp=stamp,
    )  # fmt: skip
    policy_cache.put(agent_id, policy)
    return policy


def _subject(record: ClientRecord, token: str) -> tuple[VerifiedToken, uuid.UUID]:
    """The subject token and its agent, if the full path would accept them as they look here
    (the database re-checks revocation and standing)."""
    try:
        subject = access_token_verify(token, any_audience=True)
        agent_id = uuid.UUID(subject.subject)
    except (InvalidToken, ValueError) as exc:
        raise Declined("subject") from exc
    if (
        is_delegated(subject)
        or subject.organization_id != record.organization_id
        or agent_id == record.agent_id
        or subject.expires_at - subject.issued_at
        > lifetime_capped(record.access_token_lifetime_seconds) + token_leeway()
    ):
        raise Declined("subject")
    return subject, agent_id


def _exchange(
    record: ClientRecord,
    credential_id: uuid.UUID,
    digest: str,
    asked: TokenRequest,
    signing: SigningMaterial,
    stamp: str,
) -> bytes:
    """A delegated token for the subject token's agent, acting through ``record``'s: what
    ``oidc.delegation`` would issue, recorded and audited by ``oidc_token_exchange``, which
    re-checks the policy, the chain and the subject token's standing in the database."""
    subject, agent_id = _subject(record, cast(str, asked.subject_token))
    policy = _policy(agent_id, record.organization_id, stamp)
    if policy.status != AgentStatus.ACTIVE or not may_act_for(
        policy.actors, record.agent_id, across=False
    ):
        raise Declined("subject")
    allowed = delegable_scopes(subject.scopes, record.allowed_scopes, policy.scopes)
    granted = sorted(set(asked.scopes) if asked.scopes is not None else allowed)
    if not granted or not allowed.issuperset(granted):
        raise Declined("scope")
    previous = subject.claims.get("act")
    act = act_claim(
        agent_id=record.agent_id, client_id=record.client_id,
        organization_id=record.organization_id, previous=previous,
    )  # fmt: skip
    depth = chain_depth(act)
    lifetime = min(
        lifetime_capped(record.access_token_lifetime_seconds),
        subject.expires_at - int(time.time()),
    )
    if depth > policy.max_depth or lifetime <= 0:
        raise Declined("subject")
    scope = " ".join(granted)
    status_idx = status_index_take()
    claims = access_token_claims(
        agent_id=agent_id, client_id=record.client_id, organization_id=record.organization_id,
        scope=scope, audiences=[], lifetime=lifetime, status_idx=status_idx,
    )  # fmt: skip
    claims["act"] = act
    token = access_token_sign(claims, signing)
    jti = str(claims["jti"])
    data = token_issued_data(
        client_id=record.client_id, scope=scope, audiences=[], credential_id=credential_id,
        id_token=False, caller_organization_id=record.organization_id,
        delegation=Delegation(
            subject_agent_id=agent_id, act=act, parent_jti=subject.jti, depth=depth,
            expires_at=subject.expires_at, organization_id=record.organization_id,
        ),
    )  # fmt: skip
    audit = audit_append_arguments(
        EventContent.new(
            organization_id=record.organization_id, actor_type="agent",
            actor_id=str(record.agent_id), action="token.issued", outcome="success",
            subject_type="token", subject_id=jti, data=data,
        )
    )  # fmt: skip
    recorded = _recorded(
        EXCHANGE_SQL, record, credential_id, digest, token, claims, audit, status_idx,
        delegation=[str(agent_id), subject.jti, str(subject.issued_at), str(depth),
                    " ".join(chain_actors(previous))],
    )  # fmt: skip
    if not recorded:
        # The database disagrees (revoked, suspended, a policy changed): the full path says why.
        client_cache.forget(record.client_id)
        policy_cache.forget(agent_id)
        raise Declined("recheck")
    TOKENS_ISSUED.inc()
    events_committed(record.organization_id)
    return json.dumps(
        {
            "access_token": token, "expires_in": lifetime, "token_type": "Bearer",
            "scope": scope, "issued_token_type": ACCESS_TOKEN_TYPE,
        }
    ).encode()  # fmt: skip


# --- the middleware --------------------------------------------------------------------------


class LeanTokenMiddleware:
    """Answers plain token requests on the lean path; passes everything else down the chain."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # The metrics and headers the middleware the lean path skips would have added.
        self._metrics = PrometheusAfterMiddleware(get_response)
        self._headers = (SecurityMiddleware(get_response), XFrameOptionsMiddleware(get_response))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info != TOKEN_PATH or request.method != "POST":
            return self.get_response(request)
        started = time.perf_counter()
        try:
            with commit_deadlines():
                issued = token_issue_lean(request)
        except Declined as declined:
            LEAN_REQUESTS.labels(outcome=declined.reason).inc()
            return self.get_response(request)
        except (RedisError, OperationalError, InterfaceError) as exc:
            # PostgreSQL or Redis did not answer (in time: agentidp.deadlines): 503 now, in the
            # full path's OAuth format, rather than a second wait for the same outage there.
            LEAN_REQUESTS.labels(outcome="unavailable").inc()
            logger.info("lean token path unavailable: %s", type(exc).__name__)
            return self._respond_unavailable(request, started)
        except DatabaseError as exc:
            LEAN_REQUESTS.labels(outcome="database_error").inc()
            logger.info("lean token path declined on %s", type(exc).__name__)
            return self.get_response(request)
        _ISSUED.inc()
        return self._respond(request, issued, started)

    def _respond_unavailable(self, request: HttpRequest, started: float) -> HttpResponse:
        self._metrics.process_request(request)
        request.resolver_match = _token_route()
        self._metrics.process_view(request, _no_view)
        response: HttpResponse = unavailable_response(request)
        token_response_headers(response)
        for middleware in self._headers:
            response = middleware.process_response(request, response)
        response = cast(HttpResponse, self._metrics.process_response(request, response))
        TOKEN_LATENCY.labels(status="503").observe(time.perf_counter() - started)
        return response

    def _respond(self, request: HttpRequest, body: bytes, started: float) -> HttpResponse:
        self._metrics.process_request(request)
        request.resolver_match = _token_route()
        self._metrics.process_view(request, _no_view)
        response = HttpResponse(body, content_type="application/json")
        token_response_headers(response)
        for middleware in self._headers:
            response = middleware.process_response(request, response)
        response = cast(HttpResponse, self._metrics.process_response(request, response))
        _LATENCY_200.observe(time.perf_counter() - started)
        return response


def _no_view(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    raise NotImplementedError


@cache
def _token_route() -> ResolverMatch:
    return resolve(TOKEN_PATH)
