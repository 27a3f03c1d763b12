"""The DID endpoints in the OpenAPI schema (plain Django views drf-spectacular does not see)."""

from agentidp.errors import JSONValue
from agentidp.schema import JSONObject

PROBLEM: JSONObject = {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
}
DOCUMENT: JSONObject = {"type": "object", "required": ["@context", "id"]}
RESOLUTION: JSONObject = {
    "type": "object",
    "required": ["didResolutionMetadata", "didDocument", "didDocumentMetadata"],
}
VALIDATORS: JSONObject = {
    "ETag": {"schema": {"type": "string"}},
    "Last-Modified": {"schema": {"type": "string"}},
    "Cache-Control": {"schema": {"type": "string"}},
}
AGENT_ID: list[JSONValue] = [
    {
        "name": "agent_pk",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    }
]


def _problem(description: str) -> JSONObject:
    return {"description": description, "content": dict(PROBLEM)}


def _document_operation(operation_id: str, summary: str, agent: bool) -> JSONObject:
    responses: JSONObject = {
        "200": {
            "description": "The DID document (public; cached)",
            "headers": dict(VALIDATORS),
            "content": {"application/did+ld+json": {"schema": dict(DOCUMENT)}},
        },
        "304": {"description": "Not modified (If-None-Match / If-Modified-Since)"},
        "405": _problem("Only GET and HEAD"),
        "503": _problem("PostgreSQL unavailable"),
    }
    if agent:
        responses["400"] = _problem("The id is not a UUID")
        responses["404"] = _problem("No such agent")
        responses["410"] = _problem("The agent was decommissioned: its DID is deactivated")
    operation: JSONObject = {
        "operationId": operation_id,
        "tags": ["did"],
        "summary": summary,
        "security": [{}],
        "responses": responses,
    }
    if agent:
        operation["parameters"] = list(AGENT_ID)
    return {"get": operation}


def _paths() -> JSONObject:
    resolution_error: JSONObject = {"application/did-resolution": {"schema": dict(RESOLUTION)}}
    return {
        "/.well-known/did.json": _document_operation(
            "did_instance", "This deployment's DID document (its signing keys)", agent=False
        ),
        "/agents/{agent_pk}/did.json": _document_operation(
            "agent_did_json", "An agent's DID document, where did:web resolvers look", agent=True
        ),
        "/agents/{agent_pk}/did": _document_operation(
            "agent_did", "An agent's DID document", agent=True
        ),
        "/agents/{agent_pk}/did/card": {
            "get": {
                "operationId": "agent_did_card",
                "tags": ["did"],
                "summary": "The agent's card: A2A AgentCard (signed, JCS + detached JWS) or AGNTCY",
                "security": [{}],
                "parameters": [
                    *AGENT_ID,
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["a2a", "agntcy"], "default": "a2a"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The card (public; cached)",
                        "headers": dict(VALIDATORS),
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "304": {"description": "Not modified"},
                    "400": _problem("Unknown format, or the id is not a UUID"),
                    "404": _problem("No such agent"),
                    "405": _problem("Only GET and HEAD"),
                    "410": _problem("The agent was decommissioned"),
                    "503": _problem("PostgreSQL unavailable"),
                },
            }
        },
        "/agents/{agent_pk}/did/resolve": {
            "get": {
                "operationId": "agent_did_resolve",
                "tags": ["did"],
                "summary": "Resolve an agent's DID (W3C DID Resolution)",
                "description": "Accept: application/did-resolution (default) for the result, "
                "application/did+ld+json or application/did+json for the document alone.",
                "security": [{}],
                "parameters": list(AGENT_ID),
                "responses": {
                    **{
                        status: {"description": description, "content": resolution_error}
                        for status, description in (
                            ("200", "The resolution result"),
                            ("400", "invalidDid"),
                            ("404", "notFound"),
                            ("406", "representationNotSupported"),
                            ("410", "The DID is deactivated (the result says so)"),
                        )
                    },
                    "304": {"description": "Not modified"},
                    "405": _problem("Only GET and HEAD"),
                    "503": _problem("PostgreSQL unavailable"),
                },
            }
        },
    }


def did_endpoints_hook(
    result: JSONObject, generator: object, request: object, public: bool
) -> JSONObject:
    """``POSTPROCESSING_HOOKS`` entry: add the public DID endpoints."""
    paths = result.setdefault("paths", {})
    assert isinstance(paths, dict)  # noqa: S101 - drf-spectacular's document shape
    paths.update(_paths())
    return result
