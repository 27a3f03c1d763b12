"""A standard did:web resolver (the DIF's did-resolver with web-did-resolver, on Node.js), given
only an agent's DID, fetches and accepts its document over HTTPS: the live server sits behind a
TLS-terminating proxy whose certificate a test certificate authority signed, and only the
resolver's process trusts that authority."""

import asyncio
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.test import override_settings

from agentidp.devenv import ROOT, free_port
from tests.factories import AgentFactory, OrganizationFactory

RESOLVER_DIR = ROOT / ".agentidp" / "did-resolver"
RESOLVER_PACKAGES = ["did-resolver@4", "web-did-resolver@2"]
RESOLVE_JS = """
const { Resolver } = require('did-resolver');
const { getResolver } = require('web-did-resolver');
new Resolver(getResolver()).resolve(process.argv[2]).then(
  (result) => console.log(JSON.stringify(result)),
  (error) => { console.error(String(error)); process.exit(1); },
);
"""


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test certificate authority and a leaf certificate for localhost that it signed."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AgentIdP test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, cert_pem, key_pem


class TLSProxy:
    """Terminates TLS on ``port`` and relays the plain bytes to ``upstream``."""

    def __init__(self, port: int, upstream: int, context: ssl.SSLContext) -> None:
        self.port, self.upstream, self.context = port, upstream, context
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self.context)
        )
        self.ready.set()
        self.loop.run_forever()
        server.close()

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        try:
            upstream_in, upstream_out = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            client_out.close()
            return

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_in, upstream_out), pipe(upstream_in, client_out))

    def __enter__(self) -> "TLSProxy":
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="session")
def node_resolver() -> Path:
    """did-resolver and web-did-resolver from the npm registry, installed once per checkout."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js and npm are needed (Debian: nodejs, npm)"
    script = RESOLVER_DIR / "resolve.js"
    if not (RESOLVER_DIR / "node_modules" / "web-did-resolver").exists():
        RESOLVER_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(  # noqa: S603 - npm from PATH, fixed arguments
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(RESOLVER_DIR),
             *RESOLVER_PACKAGES],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    script.write_text(RESOLVE_JS)
    return script


@pytest.fixture
def https_issuer(live_server: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    ca_pem, cert_pem, key_pem = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_pem, key_pem)
    port = free_port()
    upstream = int(live_server.url.rsplit(":", 1)[1])
    with TLSProxy(port, upstream, context):
        issuer = f"https://localhost:{port}"
        with override_settings(AGENTIDP={**settings.AGENTIDP, "ISSUER": issuer}):
            yield issuer, ca_pem


def _resolve(script: Path, did: str, ca_pem: Path | None) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ["PATH"], "NODE_PATH": str(RESOLVER_DIR / "node_modules")}
    if ca_pem is not None:
        environment["NODE_EXTRA_CA_CERTS"] = str(ca_pem)
    return subprocess.run(  # noqa: S603 - node from PATH on our own script
        [shutil.which("node") or "node", str(script), did],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_standard_did_web_resolver_accepts_an_agents_document_over_https(
    node_resolver: Path, https_issuer: tuple[str, Path], run_in_threads: Callable[..., list[Any]]
) -> None:
    issuer, ca_pem = https_issuer
    (agent,) = run_in_threads(lambda: AgentFactory(organization=OrganizationFactory()))
    host = issuer.split("//")[1].replace(":", "%3A")
    assert agent.did == f"did:web:{host}:agents:{agent.id}"
    done = _resolve(node_resolver, agent.did, ca_pem)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert not result["didResolutionMetadata"].get("error"), result
    document = result["didDocument"]
    assert document["id"] == agent.did
    (method,) = document["verificationMethod"]
    assert method["type"] == "JsonWebKey2020" and "d" not in method["publicKeyJwk"]
    assert document["authentication"] == [method["id"]]
    instance = _resolve(node_resolver, f"did:web:{host}", ca_pem)
    assert instance.returncode == 0, instance.stderr
    assert json.loads(instance.stdout)["didDocument"]["id"] == f"did:web:{host}"
    # Without the test authority the resolver refuses the certificate: TLS was really checked.
    untrusted = json.loads(_resolve(node_resolver, agent.did, None).stdout or "{}")
    assert untrusted.get("didResolutionMetadata", {}).get("error") == "notFound"
    assert socket.gethostbyname("localhost")  # the DID names localhost; it must resolve here
