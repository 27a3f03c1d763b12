"""The partner deployment of the ``federation_verify`` scenario: an issuer served from the bench
process (its RFC 8414 metadata and JWKS over HTTP, on loopback) whose ES256 tokens name the
benchmarked deployment as their audience.

The deployment cannot be its own partner: a token for it would need its issuer registered as
a resource, and a deployment's own origin is reserved (no organization mints tokens another's
server accepts). So the partner is this small issuer, fetched by ``/federation/trust`` like any.
"""

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

KID = "bench-partner-1"


class Partner:
    def __init__(self, port: int) -> None:
        self.issuer = f"http://127.0.0.1:{port}"
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key()))
        documents = {
            "/.well-known/openid-configuration": {
                "issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks.json",
                "token_endpoint": f"{self.issuer}/token",
                "id_token_signing_alg_values_supported": ["ES256"],
            },
            "/jwks.json": {"keys": [{**public, "kid": KID, "alg": "ES256", "use": "sig"}]},
        }  # fmt: skip
        documents["/.well-known/oauth-authorization-server"] = documents[
            "/.well-known/openid-configuration"
        ]

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                document = documents.get(self.path)
                body = json.dumps(document).encode() if document else b"{}"
                self.send_response(200 if document else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def token(self, audience: str, subject: str) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": audience, "iat": now, "nbf": now,
                  "exp": now + 3600, "jti": str(uuid.uuid4()), "scope": "agents:read",
                  "client_id": subject}  # fmt: skip
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": KID, "typ": "at+jwt"})  # fmt: skip

    def stop(self) -> None:
        self._server.shutdown()
