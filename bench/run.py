"""``make bench``: four figures from one run on this machine, against real PostgreSQL and Redis.

(a) a bare view (``/healthz``: the framework's floor), (b) the token endpoint with
client_credentials over 100 agents in 10 organizations, every issuance audited,
(c) ``GET /agents/{id}`` with a bearer token, (d) offline verification of tokens with the
JWKS in one process. The web server is gunicorn with ``bench/gunicorn.conf.py`` (the
configuration the README recommends), the same for every figure; the load generator is wrk
at 16 connections.

After the four figures come the reference floors (``bench/floors.py``, served by the same
server): a request transaction with one statement, a bare DRF view, and a DRF view behind the
bearer principal. They are not targets; they show how much of (b) and (c) the stack itself takes.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from agentidp import devenv  # noqa: E402 - after the path is set

WORK = devenv.DATA_DIR / "bench"
DURATION = int(os.environ.get("BENCH_SECONDS", "15"))
CONNECTIONS = 16
PORT = int(os.environ.get("BENCH_PORT", "8765"))


def environment() -> dict[str, str]:
    """Every run starts from nothing: a new database, an empty Redis database, new keys."""
    services = devenv.Services()
    os.environ["AGENTIDP_DB_NAME"] = "agentidp_bench"
    devenv.DB_NAME = "agentidp_bench"
    devenv.start_database(services, prefer_local=True, recreate=True)
    devenv.start_redis(services, prefer_local=True, db=8)
    redis.Redis.from_url(services.redis_url).flushdb()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    env = devenv.child_env(
        services,
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        AGENTIDP_ALLOW_LOCAL_SECRETS="1",
        AGENTIDP_LOCAL_SECRETS_PATH=str(WORK / "secrets.enc"),
        AGENTIDP_LOCAL_SECRETS_KEY_FILE=str(WORK / "secrets.key"),
        AGENTIDP_ISSUER=f"http://127.0.0.1:{PORT}",
        LOG_LEVEL="WARNING",
    )
    env["BENCH_KEEP"] = repr(services)
    return env


def seed(env: dict[str, str]) -> None:
    """10 organizations x 10 agents with credentials; bearer tokens for scenario (c)."""
    code = f"""
import base64, json, django
django.setup()
from django.test import Client
from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from agents.services import agent_register
from credentials.services import client_scopes_set, credential_generate
from organizations.services import organization_create
from oidc.services import signing_key_ensure
actor = Principal.system("bench")
creds, tokens = [], []
with platform_context(reason="bench"):
    signing_key_ensure()
for o in range(10):
    with platform_context(reason="bench"):
        org = organization_create(actor=actor, slug=f"bench-{{o}}-{{__import__('uuid').uuid4().hex[:6]}}", name="bench", plan="pro")
    for a in range(10):
        with tenant_context(org.id):
            agent = agent_register(actor=actor, organization_id=org.id, name=f"agent-{{a}}")
            issued = credential_generate(actor=actor, organization_id=org.id, agent_id=agent.id)
            client_scopes_set(actor=actor, organization_id=org.id, agent_id=agent.id, scopes=["agents:read"])
        creds.append((issued.client_id, issued.secret, str(agent.id)))
open({str(WORK / "credentials.txt")!r}, "w").write("\\n".join(
    base64.b64encode(f"{{c}}:{{s}}".encode()).decode() for c, s, _ in creds) + "\\n")
json.dump(creds, open({str(WORK / "credentials.json")!r}, "w"))
"""
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)  # noqa: S603


def tokens(base: str) -> list[str]:
    import requests

    creds = json.loads((WORK / "credentials.json").read_text())
    issued, lines = [], []
    for client_id, secret, agent_id in creds:
        response = requests.post(
            f"{base}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, secret),
            timeout=10,
        )
        response.raise_for_status()
        token = response.json()["access_token"]
        issued.append(token)
        lines.append(f"{agent_id} {token}")
    (WORK / "bearer.txt").write_text("\n".join(lines) + "\n")
    return issued


Scenario = tuple[str, str, str | None, str | None, dict[str, str]]


def wrk(scenario: Scenario, seconds: int) -> dict[str, float]:
    _, url, script, data, script_env = scenario
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", url]
    if script:
        command[1:1] = ["-s", str(ROOT / "bench" / script)]
        command += ["--", data or ""]
    out = subprocess.run(  # noqa: S603
        command, capture_output=True, text=True, check=True, env={**os.environ, **script_env}
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def offline_verification(base: str, issued: list[str], seconds: int) -> dict[str, float]:
    """A resource server's view: fetch the JWKS over HTTP once, then verify tokens locally."""
    import jwt
    import requests

    jwks = jwt.PyJWKSet.from_dict(requests.get(f"{base}/.well-known/jwks.json", timeout=5).json())
    keys = {key.key_id: key for key in jwks.keys}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < deadline:
        token = issued[index % len(issued)]
        started = time.perf_counter()
        kid = jwt.get_unverified_header(token)["kid"]
        jwt.decode(
            token, keys[kid], algorithms=["ES256", "RS256", "EdDSA"],
            audience=f"{base}/api", issuer=base, options={"require": ["exp", "iat", "jti"]},
        )  # fmt: skip
        latencies.append((time.perf_counter() - started) * 1000)
        index += 1
    latencies.sort()
    total = sum(latencies) / 1000
    return {
        "rps": len(latencies) / total,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99)],
        "errors": 0.0,
    }


def _table(results: dict[str, dict[str, float]], bare: float) -> None:
    for name, figures in results.items():
        ratio = figures["rps"] / bare
        print(f"{name:36} {figures['rps']:9.0f} {figures['p50']:8.2f} {figures['p99']:8.2f} "
              f"{figures['errors']:8.0f} {ratio:7.2f}")  # fmt: skip


def main() -> int:
    env = environment()
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "migrate", "--database", "owner", "-v", "0"],
        env=env, cwd=ROOT, check=True,
    )  # fmt: skip
    seed(env)
    base = f"http://127.0.0.1:{PORT}"
    server = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "bench" / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{PORT}", "agentidp.wsgi"],
        env={**env, "DJANGO_SETTINGS_MODULE": "bench.settings"}, cwd=ROOT,
    )  # fmt: skip
    try:
        import requests

        for _ in range(100):
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        issued = tokens(base)
        results: dict[str, dict[str, float]] = {}
        floors: dict[str, dict[str, float]] = {}
        bearer = str(WORK / "bearer.txt")
        scenarios: list[Scenario] = [
            ("(a) bare view /healthz", f"{base}/healthz", None, None, {}),
            ("(b) POST /oauth2/token", f"{base}/oauth2/token", "token.lua", str(WORK / "credentials.txt"), {}),
            ("(c) GET /agents/{id} bearer", base, "agent.lua", bearer, {}),
        ]  # fmt: skip
        references: list[Scenario] = [
            ("transaction + SELECT 1", f"{base}/bench/floor/transaction", None, None, {}),
            ("bare DRF view", f"{base}/bench/floor/drf", None, None, {}),
            ("DRF + bearer principal, no read", base, "agent.lua", bearer,
             {"BENCH_PATH_PREFIX": "/bench/floor/bearer/"}),
        ]  # fmt: skip
        for table, runs in ((results, scenarios), (floors, references)):
            for scenario in runs:
                wrk(scenario, 3)  # warm up
                table[scenario[0]] = wrk(scenario, DURATION)
            if table is results:
                results["(d) offline JWKS verification"] = offline_verification(
                    base, issued, DURATION
                )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    bare = results["(a) bare view /healthz"]["rps"]
    print(f"\nmake bench: gunicorn {Path('bench/gunicorn.conf.py')} ({os.cpu_count()} cores), "
          f"wrk {CONNECTIONS} connections, {DURATION}s per figure\n")  # fmt: skip
    print(f"{'scenario':36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'vs (a)':>7}")
    _table(results, bare)
    print("\nreference floors (same server; the stack before any of our work, not targets):")
    _table(floors, bare)
    token_ratio = results["(b) POST /oauth2/token"]["rps"] / bare
    api_ratio = results["(c) GET /agents/{id} bearer"]["rps"] / bare
    print(f"\ntargets: (b) >= 0.40 of (a): {token_ratio:.2f}; "
          f"(b) p99 < 50 ms: {results['(b) POST /oauth2/token']['p99']:.1f}; "
          f"(c) >= 0.50 of (a): {api_ratio:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
