"""The OpenAPI schema describes what the API really answers (drf-spectacular extensions).

* :class:`PrincipalAuthenticationScheme`: bearer tokens and staff sessions as security schemes.
* :func:`problem_responses_hook` (a postprocessing hook): every error response of every
  operation is ``application/problem+json`` with the ``Problem`` schema, and each operation
  lists the errors the stack itself can answer (401, 403, 406, 503; 400 where it takes input;
  404 where its path names an object; 413 and 415 where it takes a body).
"""

from collections.abc import Mapping

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse

from agentidp.api import StrictSerializer
from agentidp.errors import PROBLEM_CONTENT_TYPE, JSONValue

JSONObject = dict[str, JSONValue]
PROBLEM_REF: JSONObject = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: JSONObject = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string", "description": "urn:agentidp:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "Messages by field name.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["type", "title", "status", "detail", "instance"],
}
ERROR_DESCRIPTIONS = {
    "400": "Invalid input: a problem naming the fields (or a malformed body, query or cursor)",
    "401": "Authentication required, or the bearer token is invalid",
    "403": "Forbidden by policy (missing scope, suspended principal, CSRF failure)",
    "404": "Not found, or owned by another organization",
    "405": "Method not allowed",
    "406": "Only application/json responses are available",
    "409": "Conflicts with the current state or a quota",
    "413": "The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE",
    "415": "The body must be application/json",
    "429": "Rate limited; see Retry-After",
    "500": "Unexpected error",
    "503": "PostgreSQL or Redis unavailable; retry after Retry-After seconds",
}
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


class StrictSerializerSchema(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """A :class:`agentidp.api.StrictSerializer` refuses fields it does not declare: say so."""

    target_class = "agentidp.api.StrictSerializer"
    match_subclasses = True

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> JSONObject:
        # drf-spectacular's own mapping of the declared fields (its public extension hook)
        schema: JSONObject = auto_schema._map_basic_serializer(self.target, direction)  # type: ignore[no-untyped-call]
        if direction == "request":
            schema["additionalProperties"] = False
        if schema.get("description") == (StrictSerializer.__doc__ or "").strip():
            del schema["description"]  # inherited from the base class, says nothing here
        return schema


class PrincipalAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The tenancy middleware accepts a bearer access token or a staff session cookie."""

    target_class = "agentidp.authentication.PrincipalAuthentication"
    name = ["bearerAuth", "sessionAuth"]

    def get_security_definition(self, auto_schema: AutoSchema) -> list[JSONObject]:
        return [
            {"type": "http", "scheme": "bearer", "bearerFormat": "JWT (RFC 9068 access token)"},
            {"type": "apiKey", "in": "cookie", "name": "sessionid"},
        ]


def problem_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """For ``extend_schema(responses=...)``: the errors an operation answers beyond the
    standard ones :func:`problem_responses_hook` adds; the hook gives them the Problem body."""
    return {
        status: OpenApiResponse(description=ERROR_DESCRIPTIONS.get(str(status), "Error"))
        for status in statuses
    }


def _problem(status: str, description: str | None = None) -> JSONObject:
    content: JSONObject = {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REF}}
    return {
        "description": description or ERROR_DESCRIPTIONS.get(status, "Error"),
        "content": content,
    }


def _standard_errors(path: str, operation: Mapping[str, JSONValue]) -> set[str]:
    statuses = {"401", "403", "406", "503"}
    parameters = operation.get("parameters")
    if parameters or "requestBody" in operation:
        statuses.add("400")
    if isinstance(parameters, list) and any(
        isinstance(p, dict) and p.get("name") == "page" for p in parameters
    ):
        statuses.add("404")  # a page past the last one
    if "{" in path:
        statuses |= {"400", "404"}
    if "requestBody" in operation:
        statuses |= {"413", "415"}
    return statuses


def _alternative_security(operation: JSONObject) -> None:
    """A bearer token *or* a staff session: drf-spectacular lists the two schemes of one
    authentication class as one requirement (both at once); they are alternatives."""
    security = operation.get("security")
    if not isinstance(security, list):
        return
    alternatives: list[JSONValue] = []
    for requirement in security:
        if isinstance(requirement, dict) and len(requirement) > 1:
            alternatives.extend({name: scopes} for name, scopes in requirement.items())
        else:
            alternatives.append(requirement)
    operation["security"] = alternatives


def _uuid_path_parameters(operation: JSONObject) -> None:
    """Objects are named by UUID in every path (``id``, ``agent_pk``, ...): a path that is
    not one is a 400 (TenantViewSet.lookup_uuid), so the schema says ``format: uuid``."""
    parameters = operation.get("parameters")
    if not isinstance(parameters, list):
        return
    for parameter in parameters:
        if not isinstance(parameter, dict) or parameter.get("in") != "path":
            continue
        name = str(parameter.get("name"))
        if name == "id" or name.endswith("_pk"):
            parameter["schema"] = {"type": "string", "format": "uuid"}


def problem_responses_hook(
    result: JSONObject, generator: object, request: object, public: bool
) -> JSONObject:
    """``POSTPROCESSING_HOOKS`` entry: document every error response as problem+json."""
    components = result.setdefault("components", {})
    assert isinstance(components, dict)  # noqa: S101 - drf-spectacular's document shape
    schemas = components.setdefault("schemas", {})
    assert isinstance(schemas, dict)  # noqa: S101
    schemas["Problem"] = PROBLEM_SCHEMA
    paths = result.get("paths", {})
    assert isinstance(paths, dict)  # noqa: S101
    for path, item in paths.items():
        assert isinstance(item, dict)  # noqa: S101
        for method, operation in item.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            _uuid_path_parameters(operation)
            _alternative_security(operation)
            responses = operation.setdefault("responses", {})
            assert isinstance(responses, dict)  # noqa: S101
            for status in _standard_errors(path, operation):
                responses.setdefault(status, _problem(status))
            for status in list(responses):
                if status.isdigit() and int(status) >= 400:
                    described = responses[status]
                    description = (
                        described.get("description") if isinstance(described, dict) else None
                    )
                    responses[status] = _problem(status, str(description or "") or None)
    return result


# What the input boundary refuses in every text (agentidp.boundary): no NUL character.
NO_NUL_PATTERN = "^[^\\x00]*$"


def _forbid_nul(node: JSONValue) -> None:
    if isinstance(node, list):
        for item in node:
            _forbid_nul(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not ({"enum", "format", "pattern"} & node.keys()):
        node["pattern"] = NO_NUL_PATTERN
    for value in node.values():
        _forbid_nul(value)


def text_rules_hook(
    result: JSONObject, generator: object, request: object, public: bool
) -> JSONObject:
    """``POSTPROCESSING_HOOKS`` entry, last: every free-form string parameter and field says
    what the input boundary enforces (no NUL), so a client reading the schema knows."""
    _forbid_nul(result.get("paths"))
    components = result.get("components")
    if isinstance(components, dict):
        _forbid_nul(components.get("schemas"))
    return result
