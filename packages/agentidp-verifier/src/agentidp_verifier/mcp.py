"""The official MCP Python SDK's ``TokenVerifier`` backed by AgentIdP.

>>> from mcp.server.auth.settings import AuthSettings
>>> from mcp.server.mcpserver import MCPServer
>>> verifier = Verifier(ISSUER, "https://mcp.example.com/mcp")
>>> server = MCPServer("tools", token_verifier=AgentIdPTokenVerifier(verifier),
...     auth=AuthSettings(issuer_url=ISSUER, resource_server_url="https://mcp.example.com/mcp",
...                       required_scopes=["tools:call"]))

The SDK serves the RFC 9728 metadata and answers refusals; this class says whether a token is
good. The SDK hands over the bearer token only, so a DPoP-bound token (``cnf.jkt``) is refused
here: its proof cannot be checked.
"""

from mcp.server.auth.provider import AccessToken

from agentidp_verifier.errors import TokenRejected, VerifierUnavailable
from agentidp_verifier.verifier import Verifier


class AgentIdPTokenVerifier:
    def __init__(self, verifier: Verifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            verified = await self.verifier.averify_request(f"Bearer {token}")
        except (TokenRejected, VerifierUnavailable):
            return None
        resource = self.verifier.audience if self.verifier.audience in verified.audiences else None
        return AccessToken(
            token=token,
            client_id=verified.client_id,
            scopes=sorted(verified.scopes),
            expires_at=verified.expires_at,
            resource=resource,
            subject=verified.subject,
            claims=dict(verified.claims),
        )
