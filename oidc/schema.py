"""The authorization server's endpoints in the OpenAPI schema.

They are django-oauth-toolkit's views and plain Django views, which drf-spectacular does not
see; :func:`oauth_endpoints_hook` (a postprocessing hook) describes them: form bodies, client
authentication, RFC 6749 error bodies, and the keys and metadata documents.
"""

from agentidp.errors import JSONValue
from agentidp.schema import JSONObject
from oidc.assertions import CLIENT_ASSERTION_TYPE
from oidc.extensions import grant_types_extra
from oidc.tokens import ACCESS_TOKEN_TYPE, EXCHANGE_TOKEN_TYPES
from organizations.choices import Scope

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
PROBLEM = "application/problem+json"
PROBLEM_REF: JSONObject = {"$ref": "#/components/schemas/Problem"}
OAUTH_ERROR_REF: JSONObject = {"$ref": "#/components/schemas/OAuthError"}
OAUTH_ERROR: JSONObject = {
    "type": "object",
    "description": "RFC 6749 section 5.2 error.",
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "invalid_request",
                "invalid_client",
                "invalid_grant",
                "unauthorized_client",
                "unsupported_grant_type",
                "invalid_scope",
                "invalid_target",
                "unsupported_token_type",
                "invalid_dpop_proof",
                "use_dpop_nonce",
                "temporarily_unavailable",
                "server_error",
            ],
        },
        "error_description": {"type": "string"},
    },
    "required": ["error"],
}
RETRY_AFTER: JSONObject = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}
}
CLIENT_AUTH: list[JSONValue] = [{"clientBasic": []}, {}]


def _oauth_error(description: str, *, retry: bool = False, challenge: bool = False) -> JSONObject:
    response: JSONObject = {
        "description": description,
        "content": {JSON: {"schema": OAUTH_ERROR_REF}},
    }
    headers: JSONObject = {}
    if retry:
        headers.update(RETRY_AFTER)
    if challenge:
        headers["WWW-Authenticate"] = {"schema": {"type": "string"}}
    if headers:
        response["headers"] = headers
    return response


def _client_errors() -> JSONObject:
    return {
        "400": _oauth_error("Malformed request (missing or invalid parameter)"),
        "401": _oauth_error("Client authentication failed (invalid_client)", challenge=True),
        "405": _oauth_error("Only POST"),
        "413": _oauth_error("The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE"),
        "429": _oauth_error(
            "Too many failed authentications, a rate limit or the monthly quota", retry=True
        ),
        "503": _oauth_error(
            "PostgreSQL or Redis unavailable (temporarily_unavailable)", retry=True
        ),
    }


def _form(properties: JSONObject, required: list[JSONValue]) -> JSONObject:
    client: JSONObject = {
        "client_id": {"type": "string", "description": "client_secret_post"},
        "client_secret": {"type": "string", "description": "client_secret_post"},
    }
    return {
        "required": True,
        "content": {
            FORM: {
                "schema": {
                    "type": "object",
                    "properties": {**properties, **client},
                    "required": required,
                }
            }
        },
    }


TOKEN_TYPES: list[JSONValue] = list(EXCHANGE_TOKEN_TYPES)


def _token_request() -> JSONObject:
    """The token request, one form per grant (``grant_type`` tells them apart): the client's
    own token with its credentials; a partner's token, with no client credentials at all (it
    authenticates itself)."""
    audience: JSONObject = {
        "scope": {"type": "string", "description": "Space-separated scopes"},
        "resource": {
            "type": "string",
            "format": "uri",
            "description": "RFC 8707: the platform API's audience ({issuer}/api, the default) "
            "or one resource registered by the token's organization (POST /resources); "
            "anything else, or several, is invalid_target. For a registered resource, scope "
            "names its scopes, within what the agent (or its role) is granted; none asks for "
            "all of those.",
        },
        "audience": {
            "type": "string",
            "format": "uri",
            "description": "RFC 8693: read like resource. A partner's token is exchanged for "
            "the platform API only.",
        },
    }
    trusting: JSONObject = {
        "organization_id": {
            "type": "string",
            "format": "uuid",
            "description": "The trusting organization, when several trust the partner",
        }
    }
    partner_token: JSONObject = {
        "type": "string",
        "minLength": 1,
        "description": "A partner's token",
    }
    variants: list[JSONValue] = [
        {
            "type": "object",
            "title": "client_credentials",
            "properties": {
                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                **audience,
                "client_id": {"type": "string", "description": "client_secret_post"},
                "client_secret": {"type": "string", "description": "client_secret_post"},
            },
            "required": ["grant_type"],
            "additionalProperties": False,
        },
    ]
    extra = grant_types_extra()
    jwt_bearer = [g for g in extra if g.endswith(":jwt-bearer")]
    exchange = [g for g in extra if g.endswith(":token-exchange")]
    if jwt_bearer:
        variants.append({
            "type": "object",
            "title": "jwt-bearer (a partner's token; no client credentials)",
            "properties": {
                "grant_type": {"type": "string", "enum": list[JSONValue](jwt_bearer)},
                "assertion": partner_token, **audience, **trusting,
            },
            "required": ["grant_type", "assertion"],
            "additionalProperties": False,
        })  # fmt: skip
    if exchange:
        variants.append({
            "type": "object",
            "title": "token-exchange (a partner's token; no client credentials)",
            "properties": {
                "grant_type": {"type": "string", "enum": list[JSONValue](exchange)},
                "subject_token": partner_token,
                "subject_token_type": {"type": "string", "enum": TOKEN_TYPES},
                "requested_token_type": {
                    "type": "string", "enum": [ACCESS_TOKEN_TYPE]
                },
                **audience, **trusting,
            },
            "required": ["grant_type", "subject_token", "subject_token_type"],
            "additionalProperties": False,
        })  # fmt: skip
        local_token: JSONObject = {
            "type": "string", "minLength": 1,
            "description": "An access token this deployment issued (to an agent of the caller's"
            " organization or of one that trusts it to act for its agents, or already"
            " delegated)",
        }  # fmt: skip
        variants.append({
            "type": "object",
            "title": "token-exchange by an authenticated agent (delegation; client_secret_post"
            " shown, HTTP Basic works too)",
            "description": "RFC 8693 between the organization's agents: the issued token keeps the"
            " subject token's sub, its act names the caller with the earlier chain nested, and"
            " its scopes and lifetime only narrow (the subject agent's delegation policy decides"
            " who may act, which scopes and how deep). Another organization's subject token"
            " only where that organization trusts the caller's (a federation partner for this"
            " deployment with allow_delegation) and its agent's policy names the caller; the"
            " token is then that organization's, its act naming the caller's. Errors:"
            " invalid_grant (the subject or actor token expired, revoked, of an organization"
            " that does not trust the caller's: foreign_subject, or the caller not allowed to"
            " act), invalid_scope, invalid_request (a chain too deep).",
            "properties": {
                "grant_type": {"type": "string", "enum": list[JSONValue](exchange)},
                "subject_token": local_token,
                "subject_token_type": {"type": "string", "enum": TOKEN_TYPES},
                "actor_token": {**local_token, "description": "The caller's own token"},
                "actor_token_type": {"type": "string", "enum": TOKEN_TYPES},
                "requested_token_type": {
                    "type": "string", "enum": [ACCESS_TOKEN_TYPE]
                },
                **audience,
                "client_id": {"type": "string", "description": "client_secret_post"},
                "client_secret": {"type": "string", "description": "client_secret_post"},
            },
            "required": [
                "grant_type", "subject_token", "subject_token_type", "client_id", "client_secret"
            ],
            "additionalProperties": False,
        })  # fmt: skip
    variants.append(
        {
            "type": "object",
            "title": "client_credentials with private_key_jwt (RFC 7523 2.2; no secret)",
            "description": "The client signs an assertion with a key it registered (POST "
            "/agents/{id}/keys; ES256, EdDSA, PS256 or RS256): iss and sub its client_id, aud "
            "the issuer identifier (the token endpoint's URL where the organization allows "
            "it), exp at most 5 minutes ahead, a jti used once. Also accepted for token "
            "exchange, revocation and introspection. A refused assertion is invalid_client.",
            "properties": {
                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                **audience,
                "client_id": {"type": "string", "description": "Optional; the assertion's iss"},
                "client_assertion_type": {"type": "string", "enum": [CLIENT_ASSERTION_TYPE]},
                "client_assertion": {"type": "string", "minLength": 1},
            },
            "required": ["grant_type", "client_assertion_type", "client_assertion"],
            "additionalProperties": False,
        }
    )  # fmt: skip
    return {"required": True, "content": {FORM: {"schema": {"oneOf": variants}}}}


def _json(description: str, schema: JSONObject) -> JSONObject:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _token_operation(
    operation_id: str, summary: str, description: str, success: JSONObject
) -> JSONObject:
    """A client-authenticated POST about one token (revocation, introspection)."""
    return {
        "post": {
            "operationId": operation_id,
            "tags": ["oauth2"],
            "summary": summary,
            "description": description,
            "security": CLIENT_AUTH,
            "requestBody": _form(
                {
                    "token": {"type": "string", "minLength": 1},
                    "token_type_hint": {"type": "string"},
                },
                ["token"],
            ),
            "responses": {"200": success, **_client_errors()},
        }
    }


_STRINGS: JSONObject = {"type": "array", "items": {"type": "string"}}
PROTECTED_RESOURCE_METADATA: JSONObject = {
    "type": "object",
    "properties": {
        "resource": {"type": "string", "format": "uri"},
        "authorization_servers": _STRINGS,
        "scopes_supported": _STRINGS,
        "bearer_methods_supported": _STRINGS,
        "resource_name": {"type": "string"},
        "resource_documentation": {"type": "string", "format": "uri"},
        "dpop_signing_alg_values_supported": _STRINGS,
        "dpop_bound_access_tokens_required": {"type": "boolean"},
    },
    "required": ["resource", "authorization_servers"],
}
"""RFC 9728 2: the platform API's document and the ones hosted for registered resources."""


def _paths() -> JSONObject:
    token_errors = _client_errors()
    keys_and_metadata_errors: JSONObject = {
        "405": {"description": "Only GET and HEAD"},
        "503": {"description": "PostgreSQL unavailable", "headers": RETRY_AFTER},
    }
    return {
        "/oauth2/token": {
            "post": {
                "operationId": "oauth2_token",
                "tags": ["oauth2"],
                "summary": "Issue an access token (client_credentials, RFC 6749 4.4; or for "
                "a partner's token: JWT bearer, RFC 7523, or token exchange, RFC 8693)",
                "description": "RFC 9068 JWT access tokens. `resource` (RFC 8707) or `audience` "
                "sets `aud`: this API's own (the default), or one resource the organization "
                "registered, with that resource's scopes, lifetime and signing algorithm "
                "(anything else is `invalid_target`). With `openid` "
                "granted, an id_token too. The JWT bearer grant (`assertion`) and token "
                "exchange (`subject_token`, `subject_token_type`) take a token issued by a "
                "partner an organization here trusts, and no client credentials: the answer "
                "is a short-lived token of that organization for the partner's agent "
                "(`organization_id` names the organization when several trust the issuer). "
                'Every access token carries `status: {"status_list": {"idx": N, "uri": '
                '"..."}}` (draft-ietf-oauth-status-list; the URI is `GET '
                "/oauth2/status/{list_number}`, public). A token whose agent restricts who may "
                'act for it carries `may_act` (RFC 8693 4.4: `{"sub": agent id}`, or an array '
                "of those when several may). A token exchanged between agents keeps the "
                "subject's `sub` and carries `act`, the latest actor outermost (RFC 8693 4.1). "
                "With a `DPoP` proof (RFC 9449) the token is bound to the proof's key "
                '(`cnf: {"jkt": ...}`, `token_type: DPoP`); proofs carry the server\'s nonce '
                "(`use_dpop_nonce` answers with one in `DPoP-Nonce`). A resource with "
                "`dpop_required`, or an agent whose client sets `dpop_bound_access_tokens`, "
                "gets DPoP-bound tokens only.",
                "security": CLIENT_AUTH,
                "parameters": [
                    {
                        "name": "DPoP",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "A DPoP proof JWT (RFC 9449 4.2): typ dpop+jwt, the "
                        "public key as jwk, htm POST, htu this endpoint's URL, iat, jti, nonce",
                    }
                ],
                "requestBody": _token_request(),
                "responses": {
                    "200": _json(
                        "The token (never cached)",
                        {
                            "type": "object",
                            "properties": {
                                "access_token": {"type": "string"},
                                "token_type": {"type": "string", "enum": ["Bearer", "DPoP"]},
                                "expires_in": {"type": "integer"},
                                "scope": {"type": "string"},
                                "issued_token_type": {
                                    "type": "string",
                                    "description": "Token exchange only (RFC 8693 2.2.1)",
                                },
                                "id_token": {
                                    "type": "string",
                                    "description": "With the openid scope: an OpenID Connect "
                                    "id_token (typ JWT) signed with the client's "
                                    "id_token_signed_response_alg",
                                },
                            },
                            "required": ["access_token", "token_type", "expires_in", "scope"],
                        },
                    ),
                    **token_errors,
                },
            }
        },
        "/oauth2/revoke": _token_operation(
            "oauth2_revoke",
            "Revoke one of the caller's tokens (RFC 7009)",
            "200 whether or not the token was known or the caller's.",
            _json("Revoked (or nothing to do)", {"type": "object"}),
        ),
        "/oauth2/introspect": _token_operation(
            "oauth2_introspect",
            "Introspect a token (RFC 7662)",
            "Active only for a token of the caller's organization that the API would accept "
            'now; otherwise `{"active": false}`.',
            _json(
                "The token's state and, when active, its claims",
                {
                    "type": "object",
                    "properties": {"active": {"type": "boolean"}},
                    "required": ["active"],
                },
            ),
        ),
        "/agent-info": {
            method: {
                "operationId": f"agent_info_{method}",
                "tags": ["oidc"],
                "summary": "The calling agent's identity claims (OpenID Connect UserInfo)",
                "description": "Needs a bearer access token granted `openid`; `profile` adds "
                "the agent's name, status, capabilities and last change. JSON, or a JWT signed "
                "with the client's `userinfo_signed_response_alg`. POST may carry the token as "
                "the form's `access_token` (RFC 6750 2.2).",
                "security": [{"bearerAuth": []}],
                **(
                    {
                        "requestBody": {
                            "required": False,
                            "content": {
                                FORM: {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"access_token": {"type": "string"}},
                                    }
                                }
                            },
                        }
                    }
                    if method == "post"
                    else {}
                ),
                "responses": {
                    "200": {
                        "description": "The claims (never cached)",
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "sub": {"type": "string", "format": "uuid"},
                                        "organization_id": {"type": "string", "format": "uuid"},
                                        "agent_name": {"type": "string"},
                                        "agent_status": {"type": "string"},
                                        "capabilities": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                        "updated_at": {"type": "integer"},
                                    },
                                    "required": ["sub", "organization_id"],
                                }
                            },
                            "application/jwt": {"schema": {"type": "string"}},
                        },
                    },
                    **{
                        status: {
                            "description": description,
                            "content": {PROBLEM: {"schema": PROBLEM_REF}},
                            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                        }
                        for status, description in (
                            ("400", "The token in the URI, or sent two ways (invalid_request)"),
                            ("401", "No token, or an invalid one (invalid_token)"),
                            ("403", "The token lacks openid (insufficient_scope)"),
                        )
                    },
                    "405": {
                        "description": "Only GET and POST",
                        "content": {PROBLEM: {"schema": PROBLEM_REF}},
                    },
                    "503": {
                        "description": "PostgreSQL or Redis unavailable",
                        "content": {PROBLEM: {"schema": PROBLEM_REF}},
                        "headers": RETRY_AFTER,
                    },
                },
            }
            for method in ("get", "post")
        },
        "/oauth2/status/{list_number}": {
            "get": {
                "operationId": "oauth2_status_list",
                "tags": ["oauth2"],
                "summary": "A token status list (draft-ietf-oauth-status-list)",
                "description": (
                    'Every access token carries `status: {"status_list": {"idx": N, '
                    '"uri": "..."}}`. This URI answers with the signed status-list token '
                    "(`typ: statuslist+jwt`, signed by a key in the JWKS): its "
                    "`status_list.lst` is the base64url, zlib-compressed bit string, one bit "
                    "per token (`bits: 1`), bit `idx` set once that token is revoked, by itself "
                    "or with its delegation tree. Updated within a second of a revocation; "
                    "cacheable for its `ttl` (also the response's max-age). No authentication."
                ),
                "security": [{}],
                "parameters": [
                    {
                        "name": "list_number",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The status-list token (a compact JWS)",
                        "content": {"application/statuslist+jwt": {"schema": {"type": "string"}}},
                    },
                    "404": {
                        "description": "No such list",
                        "content": {PROBLEM: {"schema": PROBLEM_REF}},
                    },
                    **keys_and_metadata_errors,
                },
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "operationId": "jwks",
                "tags": ["discovery"],
                "summary": "Public keys that verify live tokens (next, current, retired)",
                "security": [{}],
                "responses": {
                    "200": _json(
                        "A JWK Set",
                        {
                            "type": "object",
                            "properties": {"keys": {"type": "array", "items": {"type": "object"}}},
                            "required": ["keys"],
                        },
                    ),
                    **keys_and_metadata_errors,
                },
            }
        },
        **{
            path: {
                "get": {
                    "operationId": operation_id,
                    "tags": ["discovery"],
                    "summary": summary,
                    "security": [{}],
                    "responses": {
                        "200": _json(
                            "Metadata",
                            {
                                "type": "object",
                                "properties": {"issuer": {"type": "string"}},
                                "required": ["issuer", "token_endpoint", "jwks_uri"],
                            },
                        ),
                        **keys_and_metadata_errors,
                    },
                }
            }
            for path, operation_id, summary in (
                (
                    "/.well-known/oauth-authorization-server",
                    "oauth_authorization_server",
                    "RFC 8414 authorization server metadata",
                ),
                (
                    "/.well-known/openid-configuration",
                    "openid_configuration",
                    "OpenID Connect discovery (the same document)",
                ),
            )
        },
        **{
            path: {
                "get": {
                    "operationId": operation_id,
                    "tags": ["discovery"],
                    "summary": "RFC 9728 protected resource metadata of this API (the resource "
                    "{issuer}/api; named by resource_metadata in every 401's WWW-Authenticate)",
                    "security": [{}],
                    "responses": {
                        "200": _json("Metadata", PROTECTED_RESOURCE_METADATA),
                    },
                }
            }
            for path, operation_id in (
                ("/.well-known/oauth-protected-resource/api", "oauth_protected_resource_api"),
                ("/.well-known/oauth-protected-resource", "oauth_protected_resource"),
            )
        },
        "/resources/{resource_id}/oauth-protected-resource": {
            "get": {
                "operationId": "resource_hosted_metadata",
                "tags": ["discovery"],
                "summary": "RFC 9728 metadata hosted for a registered resource",
                "description": (
                    "The protected-resource metadata of a resource registered with "
                    "`metadata_hosted: true` (its `metadata_url`), for a server that does not "
                    "serve its own: its 401s name this URL as `resource_metadata`. `resource` is "
                    "the registered identifier, `authorization_servers` this deployment, "
                    "`scopes_supported` the resource's scopes, `dpop_bound_access_tokens_required` "
                    "its `dpop_required`. No authentication; any other id is a 404."
                ),
                "security": [{}],
                "parameters": [
                    {
                        "name": "resource_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {
                    "200": _json("Metadata", PROTECTED_RESOURCE_METADATA),
                    **{
                        status: {
                            "description": description,
                            "content": {PROBLEM: {"schema": PROBLEM_REF}},
                        }
                        for status, description in (
                            ("404", "No hosted metadata for this id"),
                            ("405", "Only GET and HEAD"),
                            ("503", "PostgreSQL unavailable"),
                        )
                    },
                },
            }
        },
    }


def oauth_endpoints_hook(
    result: JSONObject, generator: object, request: object, public: bool
) -> JSONObject:
    """``POSTPROCESSING_HOOKS`` entry, after the problem hook: add the OAuth endpoints."""
    paths = result.setdefault("paths", {})
    assert isinstance(paths, dict)  # noqa: S101 - drf-spectacular's document shape
    paths.update(_paths())
    components = result.setdefault("components", {})
    assert isinstance(components, dict)  # noqa: S101
    schemas = components.setdefault("schemas", {})
    security = components.setdefault("securitySchemes", {})
    assert isinstance(schemas, dict) and isinstance(security, dict)  # noqa: S101
    schemas["OAuthError"] = OAUTH_ERROR
    security["clientBasic"] = {
        "type": "http",
        "scheme": "basic",
        "description": "client_secret_basic: the client_id and secret, form-encoded (RFC 6749)",
    }
    # How an agent gets the bearer token the API takes: the client credentials grant at the
    # token endpoint (what OAuth-aware clients and Swagger UI read; it also tells API fuzzers
    # that the token endpoint's 400s for bad assertions are credential refusals).
    security["agentClientCredentials"] = {
        "type": "oauth2",
        "description": "An agent's access token (RFC 9068 JWT) from the token endpoint.",
        "flows": {
            "clientCredentials": {
                "tokenUrl": "/oauth2/token",
                "scopes": {scope.value: str(scope.label) for scope in Scope},
            }
        },
    }
    return result
