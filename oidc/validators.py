"""django-oauth-toolkit's validator, extended for agents (``OAUTH2_VALIDATOR_CLASS``)."""

import logging
import uuid
from collections.abc import Mapping
from typing import NoReturn, cast

from django.db import transaction
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error
from prometheus_client import Counter
from redis import RedisError

from agentidp.events import event_record_after_request
from agentidp.principals import Principal
from agentidp.tenancy import adopt_organization
from credentials.models import Client
from credentials.services import (
    AuthenticatedClient,
    ClientAuthenticationFailed,
    client_credentials_parse,
    client_load,
    client_secret_check,
)
from oidc.assertions import (
    CLIENT_ASSERTION_TYPE,
    AssertionRefused,
    client_assertion_parse,
    client_assertion_verify,
)
from oidc.dpop import INVALID_PROOF, DpopRefused, dpop_refusal_record, proof_verify
from oidc.keys import signing_key_current
from oidc.ratelimit import failed_authentication_count, token_request_admit
from oidc.resources import (
    TARGET_SYNTAX,
    TargetRefused,
    is_platform_audience,
    target_refusal_record,
    target_resolve,
)
from oidc.services import access_token_record, access_token_revoke, client_actor
from oidc.tokens import (
    TOKEN_EXCHANGE,
    InvalidToken,
    Target,
    access_token_verify,
    id_token_claims,
    id_token_sign,
    issuance,
    requested_audiences,
)
from organizations.choices import Scope

logger = logging.getLogger("agentidp.auth")

AUTH_FAILURES = Counter(
    "agentidp_auth_failures_total", "Failed client authentications by reason.", ["reason"]
)
TOKENS_ISSUED = Counter("agentidp_tokens_issued_total", "Access tokens issued.")
THROTTLED = (
    "Too many failed authentications for this client or from this address; a request with the "
    "right credentials is not refused for them."
)


def client_credentials_from(request: OAuthRequest) -> tuple[str, str]:
    """The client credentials of an oauthlib request (Basic header or form body)."""
    headers = cast(Mapping[str, str], request.headers or {})
    return client_credentials_parse(
        authorization=headers.get("Authorization", ""),
        form_client_id=request.client_id,
        form_secret=request.client_secret,
    )


class AgentRequestValidator(OAuth2Validator):
    """Client authentication by HMAC-hashed secrets, agent scopes, JWT tokens, audit."""

    def client_authentication_required(
        self, request: OAuthRequest, *args: object, **kwargs: object
    ) -> bool:
        return True

    def authenticate_client_id(
        self, client_id: str, request: OAuthRequest, *args: object, **kwargs: object
    ) -> bool:
        return False  # every agent is a confidential client

    def authenticate_client(self, request: OAuthRequest, *args: object, **kwargs: object) -> bool:
        authenticated = self._authenticate(request)
        if authenticated and request.grant_type:
            self._dpop_bind(request, cast(Client, request.client))
        return authenticated

    def _dpop_bind(self, request: OAuthRequest, client: Client) -> None:
        """Check the token request's DPoP proof (RFC 9449 5), if it sent one: the token is
        then bound to its key. Whether one was needed is known with the target
        (:meth:`validate_scopes`)."""
        state = issuance(request)
        if state.dpop_proof is None:
            return
        try:
            proof = proof_verify(state.dpop_proof, method="POST", urls=state.dpop_urls)
        except DpopRefused as refused:
            self._dpop_refuse(request, client, refused)
        state.dpop_jkt = proof.jkt

    def _dpop_refuse(self, request: OAuthRequest, client: Client, refused: DpopRefused) -> NoReturn:
        """Refuse with the proof's error; a wrong proof is audited, a nonce challenge (part of
        the protocol) is not."""
        issuance(request).dpop_refused = True
        if refused.error == INVALID_PROOF:
            dpop_refusal_record(client, refused)
        raise CustomOAuth2Error(
            error=refused.error, description=refused.description, status_code=400,
            request=request,
        )  # fmt: skip

    def _authenticate(self, request: OAuthRequest) -> bool:
        form = dict(getattr(request, "decoded_body", None) or [])
        if "client_assertion" in form or "client_assertion_type" in form:
            return self._authenticate_by_assertion(request, form)
        client_id, secret = client_credentials_from(request)
        if not client_id or not secret:
            self._failed(request, client_id, None, "missing_credentials")
            return False
        try:
            client = client_load(client_id=client_id)
        except ClientAuthenticationFailed as failure:
            self._failed(request, client_id, failure.organization_id, failure.reason)
            return False
        adopt_organization(client.organization_id)
        # The secret is checked in memory first; admission (one Redis call) then throttles,
        # counts a failure or reserves the token, whichever applies.
        try:
            authenticated: AuthenticatedClient | None = client_secret_check(
                client=client, secret=secret
            )
            rejection = None
        except ClientAuthenticationFailed as failure:
            authenticated, rejection = None, failure
        self._admit(client, request, authenticated)
        if authenticated is None:
            assert rejection is not None  # noqa: S101 - set whenever the check failed
            self._failed(
                request, client_id, rejection.organization_id, rejection.reason, counted=True
            )
            return False
        request.client = authenticated.client
        request.client_id = client_id
        issuance(request).credential_id = authenticated.credential_id
        return True

    def _authenticate_by_assertion(self, request: OAuthRequest, form: Mapping[str, str]) -> bool:
        """``private_key_jwt`` (RFC 7523 2.2): the client signed an assertion with a key it
        registered; no secret is involved, and none need exist."""
        headers = cast(Mapping[str, str], request.headers or {})
        named = str(form.get("client_id") or "")
        if headers.get("Authorization") or "client_secret" in form:
            self._failed(request, named, None, "two_methods")
            return False
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            self._failed(request, named, None, "assertion_type")
            return False
        try:
            parsed = client_assertion_parse(str(form.get("client_assertion") or ""))
        except AssertionRefused as refused:
            self._failed(request, named, None, f"assertion_{refused.reason}")
            return False
        if named and named != parsed.client_id:
            self._failed(request, named, None, "assertion_iss_sub")
            return False
        try:
            client = client_load(client_id=parsed.client_id)
        except ClientAuthenticationFailed as failure:
            self._failed(request, parsed.client_id, failure.organization_id, failure.reason)
            return False
        adopt_organization(client.organization_id)
        try:
            key_id = client_assertion_verify(
                parsed, organization_id=client.organization_id, agent_id=client.agent_id
            )
            authenticated: AuthenticatedClient | None = AuthenticatedClient(
                client=client, credential_id=key_id
            )
            reason = ""
        except AssertionRefused as refused:
            authenticated, reason = None, f"assertion_{refused.reason}"
        self._admit(client, request, authenticated)
        if authenticated is None:
            self._failed(request, parsed.client_id, client.organization_id, reason, counted=True)
            return False
        request.client = client
        request.client_id = parsed.client_id
        issuance(request).credential_id = authenticated.credential_id
        return True

    def _admit(
        self, client: Client, request: OAuthRequest, authenticated: AuthenticatedClient | None
    ) -> None:
        organization = client.organization
        try:
            admission = token_request_admit(
                client_id=client.client_id,
                organization_id=organization.id,
                plan=organization.plan,
                max_tokens_per_month=organization.max_tokens_per_month,
                credential_id=authenticated.credential_id if authenticated else None,
                source_address=issuance(request).source_address,
                # only a token request (it has a grant_type) is metered
                reserve=bool(request.grant_type),
            )
        except RedisError as exc:
            # Limits and quotas cannot be checked: refuse rather than issue unmetered tokens.
            logger.warning("token admission unavailable: %s", type(exc).__name__)
            issuance(request).retry_after = 5
            raise CustomOAuth2Error(
                error="temporarily_unavailable",
                description="The service cannot issue tokens right now; retry shortly.",
                status_code=503,
                request=request,
            ) from exc
        if admission.allowed:
            if admission.reserved:
                issuance(request).reserved = admission.reserved
            return
        if not admission.limit:
            return  # a wrong secret, counted by the admission itself
        issuance(request).retry_after = admission.retry_after
        description = {
            "quota": "The organization's monthly token quota is exhausted.",
            "failed_auth": THROTTLED,
        }.get(admission.limit, "Too many token requests; slow down.")
        raise CustomOAuth2Error(
            error="temporarily_unavailable",
            description=description,
            status_code=429,
            request=request,
        )

    def _failed(
        self,
        request: OAuthRequest,
        client_id: str,
        organization_id: object,
        reason: str,
        *,
        counted: bool = False,
    ) -> None:
        """Count, audit and (past the throttle: 429, unaudited) refuse a failed
        authentication; ``counted``: the admission already counted it."""
        AUTH_FAILURES.labels(reason=reason).inc()
        if client_id and not counted:
            state = issuance(request)
            try:
                wait = failed_authentication_count(client_id, state.source_address)
            except RedisError:  # the request is refused either way
                logger.warning("could not count a failed authentication")
                wait = 0
            if wait:
                state.retry_after = wait
                raise CustomOAuth2Error(
                    error="temporarily_unavailable",
                    description=THROTTLED,
                    status_code=429,
                    request=request,
                )
        if organization_id is not None:
            assert isinstance(organization_id, uuid.UUID)  # noqa: S101 - set by the service
            event_record_after_request(
                organization_id=organization_id,
                actor=Principal(kind="agent", id=client_id[:200], organization_id=organization_id),
                action="auth.failed",
                subject_type="client",
                subject_id=client_id[:200],
                data={"reason": reason},
            )

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Client, request: OAuthRequest,
        *args: object, **kwargs: object,
    ) -> bool:  # fmt: skip
        return grant_type in ("client_credentials", TOKEN_EXCHANGE)

    def validate_scopes(
        self, client_id: str, scopes: list[str], client: Client, request: OAuthRequest,
        *args: object, **kwargs: object,
    ) -> bool:  # fmt: skip
        target = self.target(request, client)
        required = client.dpop_bound_access_tokens or (target is not None and target.dpop_required)
        if required and issuance(request).dpop_jkt is None:
            self._dpop_refuse(request, client, DpopRefused("missing"))
        if target is None:
            return client.record.scopes_allowed(scopes)
        if not scopes:
            raise CustomOAuth2Error(
                error="invalid_scope",
                description="The agent holds no scope on this resource.",
                status_code=400,
                request=request,
            )
        return set(scopes) <= target.granted

    def get_default_scopes(
        self, client_id: str, request: OAuthRequest, *args: object, **kwargs: object
    ) -> list[str]:
        client = cast(Client, request.client)
        target = self.target(request, client)
        if target is not None:
            return sorted(target.granted)
        return list(client.allowed_scopes)

    def target(self, request: OAuthRequest, client: Client) -> Target | None:
        """The registered resource the request names (resolved once per request), or None
        for the platform API; ``invalid_target`` (RFC 8707), audited, for anything else."""
        state = issuance(request)
        if state.target_resolved:
            return state.target
        try:
            state.audiences = requested_audiences(request)
            if not is_platform_audience(state.audiences):
                state.target = target_resolve(
                    organization_id=client.organization_id,
                    audiences=state.audiences,
                    agent_id=client.agent_id,
                )
        except ValueError as exc:
            target_refusal_record(client, TargetRefused("not_a_uri", TARGET_SYNTAX))
            raise CustomOAuth2Error(
                error="invalid_target", description=TARGET_SYNTAX, status_code=400,
                request=request,
            ) from exc  # fmt: skip
        except TargetRefused as refused:
            target_refusal_record(client, refused, state.audiences)
            raise CustomOAuth2Error(
                error="invalid_target", description=refused.description, status_code=400,
                request=request,
            ) from refused  # fmt: skip
        state.target_resolved = True
        return state.target

    def save_bearer_token(
        self, token: dict[str, object], request: OAuthRequest, *args: object, **kwargs: object
    ) -> None:
        """Already inside the request's transaction: no savepoint of DOT's own around it."""
        self._save_bearer_token(token, request, *args, **kwargs)

    def _save_bearer_token(
        self, token: dict[str, object], request: OAuthRequest, *args: object, **kwargs: object
    ) -> None:
        """Record the token; with ``openid`` granted, add the id_token to the response (oauthlib
        serializes ``token`` after this hook: its client_credentials grant has no OpenID
        Connect counterpart of its own)."""
        client = cast(Client, request.client)
        state = issuance(request)
        # An id_token tells the client how it authenticated; a delegated token is not that.
        if Scope.OPENID in (request.scopes or []) and state.delegation is None:
            algorithm = client.id_token_signed_response_alg
            token["id_token"] = id_token_sign(
                id_token_claims(
                    access_claims=state.claims,
                    access_token=str(token["access_token"]),
                    algorithm=algorithm,
                    agent_name=client.agent.name,
                    agent_status=client.agent.status,
                    capabilities=client.agent.capabilities,
                    did=client.agent.did,
                ),
                signing_key_current(algorithm),
            )
        state.issued = access_token_record(
            client=client,
            token=str(token["access_token"]),
            jti=str(state.claims["jti"]),
            scope=" ".join(request.scopes or []),
            expires_in=int(str(token["expires_in"])),
            audiences=list(state.audiences),
            credential_id=state.credential_id,
            id_token="id_token" in token,
            status_idx=state.status_idx,
            delegation=state.delegation,
        )
        if state.dpop_jkt is not None:
            token["token_type"] = "DPoP"  # noqa: S105 - RFC 9449 5.1, a token type
        # Counted against the quota at admission; the metric follows the commit.
        transaction.on_commit(TOKENS_ISSUED.inc)

    def revoke_token(
        self, token: str, token_type_hint: str | None, request: OAuthRequest,
        *args: object, **kwargs: object,
    ) -> None:  # fmt: skip
        """RFC 7009: a client revokes its own tokens; anything else answers 200 and does nothing."""
        client = cast(Client, request.client)
        try:
            verified = access_token_verify(
                token, audience=None, check_times=False, any_audience=True
            )
        except InvalidToken:
            return
        if verified.claims.get("client_id") != client.client_id:
            return
        access_token_revoke(
            actor=client_actor(client),
            client=client,
            jti=verified.jti,
            expires_at=verified.expires_at,
        )
