"""Accept AgentIdP access tokens in a resource server.

>>> verifier = Verifier("https://idp.example.com", "https://mcp.example.com/mcp")
>>> token = verifier.verify_request(request.headers.get("Authorization"), required_scopes=["tools:call"])

The core (:mod:`agentidp_verifier.verifier`) needs PyJWT only. Adapters:
:mod:`agentidp_verifier.asgi` (any ASGI app: Starlette, FastAPI), :mod:`agentidp_verifier.django`
and :mod:`agentidp_verifier.mcp` (the official MCP SDK's ``TokenVerifier``).
"""

from agentidp_verifier.errors import (
    InsufficientScope,
    MalformedRequest,
    TokenMissing,
    TokenRejected,
    VerifierUnavailable,
)
from agentidp_verifier.fetch import Fetch, Fetched, FetchFailed, fetch_url
from agentidp_verifier.verifier import (
    ALGORITHMS,
    Actor,
    DpopContext,
    MemoryReplayCache,
    ReplayCache,
    VerifiedToken,
    Verifier,
    jwk_thumbprint,
)

__all__ = [
    "ALGORITHMS",
    "Actor",
    "DpopContext",
    "Fetch",
    "FetchFailed",
    "Fetched",
    "InsufficientScope",
    "MalformedRequest",
    "MemoryReplayCache",
    "ReplayCache",
    "TokenMissing",
    "TokenRejected",
    "VerifiedToken",
    "Verifier",
    "VerifierUnavailable",
    "fetch_url",
    "jwk_thumbprint",
]
