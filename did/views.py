"""Public DID endpoints: no token needed, public data only, cached, with conditional requests.

- ``/.well-known/did.json`` (and ``/did.json``, for an issuer with a path): this deployment's
  DID document.
- ``/agents/{id}/did.json`` (where did:web resolvers look) and ``/agents/{id}/did``: an agent's
  DID document; 410 Gone once the agent is decommissioned (its DID is deactivated).
- ``/agents/{id}/did/resolve``: a DID Resolution result, by content negotiation.
"""

import hashlib
import json
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.http import http_date, parse_http_date_safe

from agentidp.errors import JSONValue, problem_response, standard_problem
from agentidp.middleware import safe_methods_only
from agents.choices import AgentStatus
from did.cache import Rendered, cache_put, cached
from did.cards import a2a_card, agntcy_record
from did.documents import (
    RESOLUTION_CONTEXT,
    agent_document,
    instance_document,
    last_changed,
    resolution_result,
)
from did.selectors import PublicAgent, agent_public
from oidc.services import signing_keys_published

DID_JSON = "application/did+json"
DID_LD_JSON = "application/did+ld+json"
RESOLUTION = "application/did-resolution"


def _render(body: dict[str, JSONValue], status: int, last_modified: float) -> Rendered:
    encoded = json.dumps(body, separators=(",", ":")).encode()
    etag = '"' + hashlib.sha256(encoded).hexdigest()[:32] + '"'
    return Rendered(body=encoded, etag=etag, last_modified=last_modified, status=status)


def _respond(request: HttpRequest, rendered: Rendered, content_type: str) -> HttpResponse:
    """The document with its validators; 304 when the client's copy is current."""
    headers = {
        "ETag": rendered.etag,
        "Last-Modified": http_date(rendered.last_modified),
        "Cache-Control": "public, max-age=60",
    }
    if rendered.status == 200:
        matches = request.headers.get("If-None-Match")
        since = parse_http_date_safe(request.headers.get("If-Modified-Since", ""))
        if (matches is not None and rendered.etag in {m.strip() for m in matches.split(",")}) or (
            matches is None and since is not None and int(rendered.last_modified) <= since
        ):
            return HttpResponse(status=304, headers=headers)
    return HttpResponse(
        rendered.body, status=rendered.status, content_type=content_type, headers=headers
    )


def _agent_id(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def _rendered(
    agent_id: uuid.UUID, variant: str, build: Callable[[PublicAgent], Rendered]
) -> Rendered | None:
    hit = cached(agent_id, variant)
    if hit is not None:
        return hit
    public = agent_public(agent_id)
    if public is None:
        return None
    rendered = build(public)
    cache_put(agent_id, variant, rendered)
    return rendered


def _document(public: PublicAgent) -> Rendered:
    changed = last_changed(public).timestamp()
    if public.agent.status == AgentStatus.DECOMMISSIONED:
        return _render({}, 410, changed)  # answered as a problem document per request
    return _render(agent_document(public, timezone.now()), 200, changed)


@safe_methods_only
def agent_did_document(request: HttpRequest, agent_pk: str) -> HttpResponse:
    """An agent's DID document (what a did:web resolver fetches)."""
    agent_id = _agent_id(agent_pk)
    if agent_id is None:
        return standard_problem(request, 400, detail="The id in the path is not a valid UUID.")
    rendered = _rendered(agent_id, "document", _document)
    if rendered is None:
        return standard_problem(request, 404, detail="No such agent.")
    if rendered.status == 410:
        return _gone(request)
    return _respond(request, rendered, DID_LD_JSON)


def _resolution(public: PublicAgent) -> Rendered:
    result = resolution_result(public, timezone.now(), content_type=DID_LD_JSON)
    metadata = result["didDocumentMetadata"]
    deactivated = isinstance(metadata, dict) and metadata.get("deactivated") is True
    return _render(result, 410 if deactivated else 200, last_changed(public).timestamp())


def _negotiate(accept: str) -> str | None:
    """The representation to answer with, or None (406)."""
    offered = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if not offered:
        return RESOLUTION
    for media in offered:
        if media in (RESOLUTION, "application/ld+json", "application/json", "*/*", "application/*"):
            return RESOLUTION
        if media in (DID_JSON, DID_LD_JSON):
            return media
    return None


def _resolution_error(status: int, error: str) -> HttpResponse:
    body = {
        "@context": RESOLUTION_CONTEXT,
        "didResolutionMetadata": {"error": error},
        "didDocument": None,
        "didDocumentMetadata": {},
    }
    return HttpResponse(json.dumps(body), status=status, content_type=RESOLUTION)


@safe_methods_only
def agent_did_resolve(request: HttpRequest, agent_pk: str) -> HttpResponse:
    """DID Resolution (W3C DID Resolution, HTTP binding) of the agent's DID."""
    representation = _negotiate(request.headers.get("Accept", ""))
    if representation is None:
        return _resolution_error(406, "representationNotSupported")
    agent_id = _agent_id(agent_pk)
    if agent_id is None:
        return _resolution_error(400, "invalidDid")
    rendered = _rendered(agent_id, "resolution", _resolution)
    if rendered is None:
        return _resolution_error(404, "notFound")
    if representation == RESOLUTION:
        return _respond(request, rendered, RESOLUTION)
    document = json.loads(rendered.body)["didDocument"]
    if representation == DID_JSON:
        document.pop("@context", None)
    only = Rendered(
        body=json.dumps(document, separators=(",", ":")).encode(),
        etag=rendered.etag[:-1] + "-" + representation.split("+")[1][:2] + '"',
        last_modified=rendered.last_modified,
        status=rendered.status,
    )
    return _respond(request, only, representation)


@safe_methods_only
def instance_did_document(request: HttpRequest) -> HttpResponse:
    """This deployment's DID document (its signing keys)."""
    document = instance_document(signing_keys_published())
    rendered = _render(document, 200, timezone.now().replace(microsecond=0).timestamp())
    return _respond(request, rendered, DID_LD_JSON)


CARDS = {"a2a": a2a_card, "agntcy": agntcy_record}


@safe_methods_only
def agent_card(request: HttpRequest, agent_pk: str) -> HttpResponse:
    """The agent's card: ``?format=a2a`` (default; an A2A AgentCard signed by this
    deployment) or ``?format=agntcy`` (an AGNTCY / OASF record)."""
    card_format = request.GET.get("format", "a2a")
    builder = CARDS.get(card_format)
    if builder is None:
        return standard_problem(request, 400, detail="format must be a2a or agntcy.")
    agent_id = _agent_id(agent_pk)
    if agent_id is None:
        return standard_problem(request, 400, detail="The id in the path is not a valid UUID.")

    def build(public: PublicAgent) -> Rendered:
        changed = last_changed(public).timestamp()
        if public.agent.status == AgentStatus.DECOMMISSIONED:
            return _render({}, 410, changed)
        return _render(builder(public), 200, changed)

    rendered = _rendered(agent_id, f"card-{card_format}", build)
    if rendered is None:
        return standard_problem(request, 404, detail="No such agent.")
    if rendered.status == 410:
        return _gone(request)
    return _respond(request, rendered, "application/json")


def _gone(request: HttpRequest) -> HttpResponse:
    return problem_response(
        request,
        status=410,
        title="Gone",
        detail="This agent was decommissioned; its DID is deactivated.",
        code="did_deactivated",
    )
