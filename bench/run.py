"""``make bench``: the hot paths measured in one run on this machine, against real PostgreSQL
and Redis, in interleaved rounds.

Scenarios (keys of ``.agentidp/bench/results.json``):

- ``bare``: a bare view (``/healthz``: the framework's floor);
- ``token``: the token endpoint, ``client_credentials`` over 100 agents in 10 organizations,
  every issuance audited;
- ``token_exchange``: RFC 8693 token exchange between two agents of an organization (each
  request: a fresh subject token of one agent, exchanged by the next), in the same rounds;
- ``stock_dot``: the peer, stock django-oauth-toolkit ``client_credentials`` (``bench/stock_dot.py``);
- ``api_get``: ``GET /agents/{id}`` with a bearer token;
- ``offline_verify``: a resource server verifying tokens offline with the JWKS and PyJWT's
  ``jwt.decode``, in one process;
- ``verifier_package``: the same with ``agentidp-verifier`` (every check, the token status
  list included, from its caches), in one process;
- ``federation_verify``: ``POST /federation/verify`` of a partner's tokens with the partner's
  JWKS cache warm (the partner is a small issuer in the bench process, ``bench/partner.py``,
  registered through ``/federation/trust``: its metadata and keys fetched over HTTP like any
  partner's);
- ``audit`` (``bench/audit.py``): chain verification events a second, an inclusion proof in
  a log of a million events, audit appends with many organizations writing at once;
- ``floor_transaction``, ``floor_drf``, ``floor_bearer``: reference floors (``bench/floors.py``)
  showing what the stack itself takes; not targets.

Both servers are gunicorn with ``bench/gunicorn.conf.py`` (the configuration the README
recommends); the load generator is wrk at 16 connections. This machine's speed drifts within a
run, so every scenario runs once per round (bare, token, stock_dot, api_get, ..., then again),
ratios are taken within a round, and medians are reported. CPU time per request is read from
``/proc`` for the serving workers, PostgreSQL (the postmaster with its backends, live and
exited) and Redis; it is steadier than throughput here.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from agentidp import devenv  # noqa: E402 - after the path is set
from bench.delegation import exchange_pairs, tree_revocation  # noqa: E402
from bench.partner import Partner  # noqa: E402
from bench.webhooks import webhook_figures  # noqa: E402

WORK = devenv.DATA_DIR / "bench"
DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNECTIONS = 16
PORT = int(os.environ.get("BENCH_PORT", "8765"))
STOCK_PORT = PORT + 1
RECEIVER_PORT = PORT + 2
PARTNER_PORT = PORT + 3
STOCK_DB = f"agentidp_bench_stock_dot_{devenv.CHECKOUT_TAG}"
TICK = os.sysconf("SC_CLK_TCK")


def environment() -> dict[str, str]:
    """Every run starts from nothing: new databases, an empty Redis database, new keys."""
    services = devenv.Services()
    # this checkout's own: the database (agentidp_bench_<tag>, dropped and created again, never
    # one another checkout made) and the Redis database numbered after it, emptied
    name = f"agentidp_bench_{devenv.CHECKOUT_TAG}"
    os.environ["AGENTIDP_DB_NAME"] = name
    devenv.DB_NAME = name
    devenv.start_database(services, prefer_local=True, recreate=True, database=name)
    devenv.start_redis(services, prefer_local=True, db=devenv.BENCH_REDIS_DB)
    redis.Redis.from_url(services.redis_url).flushdb()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    env = devenv.child_env(
        services,
        DEBUG="0",
        SECRET_KEY="bench-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        AGENTIDP_ALLOW_LOCAL_SECRETS="1",
        # wrk speaks plain HTTP to the loopback: TLS terminates in front of a deployment.
        AGENTIDP_TLS_ENFORCED="0",
        AGENTIDP_ALLOW_PLAIN_HTTP="1",
        AGENTIDP_LOCAL_SECRETS_PATH=str(WORK / "secrets.enc"),
        AGENTIDP_LOCAL_SECRETS_KEY_FILE=str(WORK / "secrets.key"),
        AGENTIDP_ISSUER=f"http://127.0.0.1:{PORT}",
        LOG_LEVEL="WARNING",
        # the local webhook receiver and the bench partner (bench/partner.py), both on loopback
        AGENTIDP_SSRF_ALLOWLIST="127.0.0.1",
        # their ports are above 1024 and they speak plain HTTP, as make run's are and do
        AGENTIDP_SSRF_ALLOWED_PORTS="443,80,1024-65535",
        AGENTIDP_WEBHOOK_ALLOW_HTTP="1",
    )
    env["STOCK_DATABASE_URL"] = _stock_database(services.owner_url)
    env["BENCH_KEEP"] = repr(services)
    return env


def _stock_database(owner_url: str) -> str:
    """A fresh database for the peer, owned by the owner role, on the same server."""
    import psycopg

    with psycopg.connect(_libpq(owner_url), autocommit=True) as conn:
        found = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            [STOCK_DB],
        ).fetchone()
        if found is not None:
            if found[0] != devenv.CREATED_BY:
                raise SystemExit(f"database {STOCK_DB!r} was not created by this checkout")
            conn.execute(f'DROP DATABASE "{STOCK_DB}" WITH (FORCE)'.encode())
        conn.execute(f'CREATE DATABASE "{STOCK_DB}"'.encode())
        conn.execute(f"COMMENT ON DATABASE \"{STOCK_DB}\" IS '{devenv.CREATED_BY}'".encode())
    parts = urlsplit(owner_url)
    return urlunsplit(parts._replace(path=f"/{STOCK_DB}"))


def _libpq(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def seed(env: dict[str, str]) -> None:
    """10 organizations x 10 agents with credentials (agents:read), and 10 x 10 more allowed
    openid and profile (the id_token scenario); 10 more organizations x 10 agents whose
    organization subscribes a webhook to token.issued; 100 stock DOT applications."""
    code = f"""
import base64, json, django
django.setup()
from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from agents.services import agent_register
from credentials.services import client_scopes_set, credential_generate
from organizations.services import organization_create, staff_create
from oidc.keys import signing_keys_ensure
from webhooks.services import subscription_create
actor = Principal.system("bench")
def organization_new(slug):
    # an organization with an owner, who sponsors its agents
    org = organization_create(actor=actor, slug=slug, name="bench", plan="pro")
    staff_create(actor=actor, organization_id=org.id, username=f"owner-{{slug}}",
                 password=__import__('uuid').uuid4().hex, role="owner")
    return org
creds, oidc, subscribed = [], [], []
with platform_context(reason="bench"):
    signing_keys_ensure()
for o in range(10):
    with platform_context(reason="bench"):
        org = organization_new(f"bench-{{o}}-{{__import__('uuid').uuid4().hex[:6]}}")
    for a in range(10):
        with tenant_context(org.id):
            agent = agent_register(actor=actor, organization_id=org.id, name=f"agent-{{a}}")
            issued = credential_generate(actor=actor, organization_id=org.id, agent_id=agent.id)
            client_scopes_set(actor=actor, organization_id=org.id, agent_id=agent.id, scopes=["agents:read"])
        creds.append((issued.client_id, issued.secret, str(agent.id)))
        with tenant_context(org.id):
            agent = agent_register(actor=actor, organization_id=org.id, name=f"oidc-agent-{{a}}",
                                   capabilities=["search", "summarize"])
            issued = credential_generate(actor=actor, organization_id=org.id, agent_id=agent.id)
            client_scopes_set(actor=actor, organization_id=org.id, agent_id=agent.id,
                              scopes=["agents:read", "openid", "profile"])
        oidc.append((issued.client_id, issued.secret))
for o in range(10):
    with platform_context(reason="bench"):
        org = organization_new(f"bench-hook-{{o}}-{{__import__('uuid').uuid4().hex[:6]}}")
    with tenant_context(org.id):
        subscription_create(actor=actor, organization_id=org.id,
                            url="http://127.0.0.1:{RECEIVER_PORT}/hook", event_types=["token.issued"])
    for a in range(10):
        with tenant_context(org.id):
            agent = agent_register(actor=actor, organization_id=org.id, name=f"agent-{{a}}")
            issued = credential_generate(actor=actor, organization_id=org.id, agent_id=agent.id)
            client_scopes_set(actor=actor, organization_id=org.id, agent_id=agent.id, scopes=["agents:read"])
        subscribed.append((issued.client_id, issued.secret))
open({str(WORK / "subscribed_credentials.txt")!r}, "w").write("\\n".join(
    base64.b64encode(f"{{c}}:{{s}}".encode()).decode() for c, s in subscribed) + "\\n")
open({str(WORK / "credentials.txt")!r}, "w").write("\\n".join(
    base64.b64encode(f"{{c}}:{{s}}".encode()).decode() for c, s, _ in creds) + "\\n")
json.dump(creds, open({str(WORK / "credentials.json")!r}, "w"))
with platform_context(reason="bench"):
    org = organization_new(f"bench-federation-{{__import__('uuid').uuid4().hex[:6]}}")
with tenant_context(org.id):
    agent = agent_register(actor=actor, organization_id=org.id, name="verifier")
    issued = credential_generate(actor=actor, organization_id=org.id, agent_id=agent.id)
    client_scopes_set(actor=actor, organization_id=org.id, agent_id=agent.id,
                      scopes=["federation:manage", "federation:verify"])
open({str(WORK / "verifier.txt")!r}, "w").write(f"{{issued.client_id}} {{issued.secret}}\\n")
open({str(WORK / "oidc_credentials.txt")!r}, "w").write("\\n".join(
    base64.b64encode(f"{{c}}:{{s}}".encode()).decode() for c, s in oidc) + "\\n")
"""
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)  # noqa: S603
    stock = {**env, "DJANGO_SETTINGS_MODULE": "bench.stock_dot"}
    subprocess.run(  # noqa: S603
        [sys.executable, "-m", "django", "migrate", "-v", "0"], env=stock, cwd=ROOT, check=True
    )
    from bench.stock_dot import SEED

    out = f"OUT = {str(WORK / 'stock_credentials.txt')!r}\n"
    subprocess.run([sys.executable, "-c", out + SEED], env=stock, cwd=ROOT, check=True)  # noqa: S603


def federation_tokens(base: str, partner: Partner) -> None:
    """A verifier (an agent with federation:verify) whose organization trusts ``partner``, and
    100 of the partner's tokens meant for this deployment (``aud`` its issuer)."""
    import requests

    client_id, secret = (WORK / "verifier.txt").read_text().split()
    verifier = requests.post(
        f"{base}/oauth2/token", auth=(client_id, secret), timeout=10,
        data={"grant_type": "client_credentials", "scope": "federation:manage federation:verify"},
    )  # fmt: skip
    verifier.raise_for_status()
    bearer = verifier.json()["access_token"]
    trusted = requests.post(
        f"{base}/federation/trust",
        json={"issuer": partner.issuer, "allowed_scopes": ["agents:read"]},
        headers={"Authorization": f"Bearer {bearer}"}, timeout=30,
    )  # fmt: skip
    if trusted.status_code != 201:
        raise SystemExit(f"the bench partner was not registered: {trusted.text}")
    lines = [f"{bearer} {partner.token(base, f'partner-agent-{n}')}" for n in range(100)]
    (WORK / "federation.txt").write_text("\n".join(lines) + "\n")


def audit_figures(env: dict[str, str]) -> dict[str, object]:
    """``bench/audit.py`` in a process of its own (it sets Django up)."""
    # A million events checked and put in the Merkle tree in one go: the request path's
    # statement and idle-in-transaction limits (5 s, 60 s) are raised for this process only.
    long = {**env, "DB_STATEMENT_TIMEOUT": "600000", "DB_IDLE_IN_TRANSACTION_TIMEOUT": "600000"}
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "bench" / "audit.py")], env=long, cwd=ROOT,
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench/audit.py failed:\n{done.stderr[-3000:]}")
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


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


# --- CPU time by process, from /proc ---------------------------------------------------------


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _ticks(pid: int, *, with_children: bool) -> int:
    """utime + stime (and the CPU of its exited, reaped children)."""
    try:
        fields = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if with_children else 0)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return found


def tree_seconds(root: int) -> float:
    """CPU seconds of a process tree: the root (with reaped children) and its live children."""
    total = _ticks(root, with_children=True)
    total += sum(_ticks(child, with_children=True) for child in _children(root))
    return total / TICK


@dataclass
class Processes:
    postgres: int
    redis: int
    servers: dict[str, int] = field(default_factory=dict)

    def sample(self) -> dict[str, float]:
        taken = {name: tree_seconds(pid) for name, pid in self.servers.items()}
        taken["postgresql"] = tree_seconds(self.postgres)
        taken["redis"] = tree_seconds(self.redis)
        taken["self"] = time.process_time()
        return taken


def processes(env: dict[str, str], servers: dict[str, int]) -> Processes:
    import psycopg

    with psycopg.connect(_libpq(env["DATABASE_URL"])) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None  # noqa: S101
    postmaster = int(_stat(int(row[0]))[1])
    info = cast(dict[str, object], redis.Redis.from_url(env["REDIS_URL"]).info("server"))
    redis_pid = int(str(info["process_id"]))
    return Processes(postgres=postmaster, redis=redis_pid, servers=servers)


# --- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    server: str  # whose workers serve it ("product", "stock_dot"; "self" for offline)
    url: str = ""
    script: str | None = None
    data: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    floor: bool = False
    run: Callable[[int], dict[str, float]] | None = None
    # what the scenario needs fresh before each run (not measured)
    before: Callable[[], None] | None = None


def wrk(scenario: Scenario, seconds: int) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", scenario.url]
    if scenario.script:
        command[1:1] = ["-s", str(ROOT / "bench" / scenario.script)]
        command += ["--", scenario.data or ""]
    out = subprocess.run(  # noqa: S603
        command, capture_output=True, text=True, check=True, env={**os.environ, **scenario.env}
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def offline_verification(base: str, issued: list[str]) -> Callable[[int], dict[str, float]]:
    """A resource server's view: fetch the JWKS over HTTP once, then verify tokens locally
    with PyJWT's ``jwt.decode`` (what a hand-rolled resource server does)."""
    import jwt
    import requests

    jwks = jwt.PyJWKSet.from_dict(requests.get(f"{base}/.well-known/jwks.json", timeout=5).json())
    keys = {key.key_id: key for key in jwks.keys}

    def verify(token: str) -> None:
        kid = jwt.get_unverified_header(token)["kid"]
        jwt.decode(
            token, keys[kid], algorithms=["ES256", "RS256", "EdDSA"],
            audience=f"{base}/api", issuer=base, options={"require": ["exp", "iat", "jti"]},
        )  # fmt: skip

    return _one_core(verify, issued)


def verifier_package(base: str, issued: list[str]) -> Callable[[int], dict[str, float]]:
    """``agentidp-verifier`` as a resource server uses it: discovery, the JWKS and the token
    status list fetched over HTTP (then cached), every check of ``Verifier.verify_request``."""
    from agentidp_verifier import Verifier

    verifier = Verifier(base, f"{base}/api")
    headers = [f"Bearer {token}" for token in issued]
    for header in headers:
        verifier.verify_request(header)  # warm: metadata, keys, status lists
    return _one_core(verifier.verify_request, headers)


def _one_core(
    verify: Callable[[str], object], issued: list[str]
) -> Callable[[int], dict[str, float]]:
    """Verifications a second on one core: ``verify`` over ``issued`` in a loop."""

    def run(seconds: int) -> dict[str, float]:
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        index = 0
        while time.perf_counter() < deadline:
            token = issued[index % len(issued)]
            started = time.perf_counter()
            verify(token)
            latencies.append((time.perf_counter() - started) * 1000)
            index += 1
        latencies.sort()
        return {
            "rps": len(latencies) / (sum(latencies) / 1000),
            "requests": float(len(latencies)),
            "p50_ms": statistics.median(latencies),
            "p99_ms": latencies[int(len(latencies) * 0.99)],
            "non_2xx": 0.0,
        }

    return run


def measure(scenario: Scenario, procs: Processes, seconds: int) -> dict[str, float]:
    if scenario.before is not None:
        scenario.before()
    before = procs.sample()
    figures = scenario.run(seconds) if scenario.run else wrk(scenario, seconds)
    after = procs.sample()
    count = max(figures["requests"], 1.0)
    for part in (scenario.server, "postgresql", "redis"):
        figures[f"cpu_{part}"] = (after[part] - before[part]) * 1000 / count
    return figures


def _start_server(env: dict[str, str], settings: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "bench" / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{port}",
         "agentidp.wsgi" if settings != "bench.stock_dot" else "django.core.wsgi:get_wsgi_application()"],
        env={**env, "DJANGO_SETTINGS_MODULE": settings}, cwd=ROOT,
    )  # fmt: skip


def _wait(url: str) -> None:
    import requests

    for _ in range(150):
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def summarize(
    rounds: list[dict[str, dict[str, float]]], scenarios: list[Scenario]
) -> dict[str, dict[str, object]]:
    """Medians over rounds; ratios are taken within each round, then their median."""
    summary: dict[str, dict[str, object]] = {}
    for scenario in scenarios:
        runs = [r[scenario.key] for r in rounds]
        cpu_parts = {"workers" if scenario.server in ("product", "stock_dot") else "process": scenario.server,
                     "postgresql": "postgresql", "redis": "redis"}  # fmt: skip
        cpu = {name: round(statistics.median(run[f"cpu_{part}"] for run in runs), 3)
               for name, part in cpu_parts.items()}  # fmt: skip
        cpu["total"] = round(sum(cpu.values()), 3)
        entry: dict[str, object] = {
            "label": scenario.label,
            "rps": round(statistics.median(run["rps"] for run in runs), 1),
            "p50_ms": round(statistics.median(run["p50_ms"] for run in runs), 2),
            "p99_ms": round(statistics.median(run["p99_ms"] for run in runs), 2),
            "ratio_to_bare": round(
                statistics.median(r[scenario.key]["rps"] / r["bare"]["rps"] for r in rounds), 3
            ),  # fmt: skip
            "cpu_ms_per_request": cpu,
            "non_2xx": int(sum(run["non_2xx"] for run in runs)),
            "floor": scenario.floor,
        }
        if scenario.key in ("token_openid", "token_subscribed", "token_exchange"):
            entry["ratio_to_token"] = round(statistics.median(
                r[scenario.key]["rps"] / r["token"]["rps"] for r in rounds), 3)  # fmt: skip
        if scenario.key in ("token", "stock_dot"):
            entry["ratio_to_stock_dot"] = round(statistics.median(
                r[scenario.key]["rps"] / r["stock_dot"]["rps"] for r in rounds), 3)  # fmt: skip
        summary[scenario.key] = entry
    return summary


def print_table(summary: dict[str, dict[str, object]]) -> None:
    head = (f"{'scenario':34} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} "
            f"{'/bare':>6} {'/DOT':>6}   CPU ms/request: serving  PG  Redis  total")  # fmt: skip
    print(head)
    floors_said = False
    for entry in summary.values():
        if entry["floor"] and not floors_said:
            print(
                "\nreference floors (same server; the stack before any of our work, not targets):"
            )
            floors_said = True
        cpu = entry["cpu_ms_per_request"]
        assert isinstance(cpu, dict)  # noqa: S101
        serving = cpu.get("workers", cpu.get("process", 0.0))
        dot = entry.get("ratio_to_stock_dot")
        print(f"{entry['label']:34} {entry['rps']:8.0f} {entry['p50_ms']:7.2f} {entry['p99_ms']:7.2f} "
              f"{entry['non_2xx']:7d} {entry['ratio_to_bare']:6.2f} "
              f"{'' if dot is None else f'{dot:.2f}':>6}   {serving:21.2f} {cpu['postgresql']:4.2f} "
              f"{cpu['redis']:6.2f} {cpu['total']:6.2f}")  # fmt: skip


def prepare() -> dict[str, str]:
    """A fresh database, migrated and seeded; the environment the servers run with."""
    env = environment()
    subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", "migrate", "--database", "owner", "-v", "0"],
        env=env, cwd=ROOT, check=True,
    )  # fmt: skip
    seed(env)
    return env


def main() -> int:
    env = prepare()
    base, stock = f"http://127.0.0.1:{PORT}", f"http://127.0.0.1:{STOCK_PORT}"
    server = _start_server(env, "bench.settings", PORT)
    stock_server = _start_server(env, "bench.stock_dot", STOCK_PORT)
    try:
        _wait(f"{base}/readyz")
        _wait(f"{stock}/o/token/")
        issued = tokens(base)
        partner = Partner(PARTNER_PORT)
        federation_tokens(base, partner)
        bearer = str(WORK / "bearer.txt")
        scenarios = [
            Scenario("bare", "bare view /healthz", "product", f"{base}/healthz"),
            Scenario("token", "POST /oauth2/token", "product", f"{base}/oauth2/token",
                     "token.lua", str(WORK / "credentials.txt")),
            Scenario("token_exchange", "POST /oauth2/token, token exchange", "product",
                     f"{base}/oauth2/token", "exchange.lua", str(WORK / "exchange.txt"),
                     before=exchange_pairs(base, WORK)),
            Scenario("token_subscribed", "POST /oauth2/token, token.issued hook", "product",
                     f"{base}/oauth2/token", "token.lua", str(WORK / "subscribed_credentials.txt")),
            Scenario("token_openid", "POST /oauth2/token scope=openid", "product",
                     f"{base}/oauth2/token", "token.lua", str(WORK / "oidc_credentials.txt"),
                     {"BENCH_TOKEN_SCOPE": "openid profile agents:read"}),
            Scenario("stock_dot", "stock DOT POST /o/token/", "stock_dot", f"{stock}/o/token/",
                     "token.lua", str(WORK / "stock_credentials.txt"),
                     {"BENCH_TOKEN_PATH": "/o/token/"}),
            Scenario("api_get", "GET /agents/{id} bearer", "product", base, "agent.lua", bearer),
            Scenario("did_document", "GET /agents/{id}/did.json (cached)", "product", base,
                     "agent.lua", bearer,
                     {"BENCH_PATH_SUFFIX": "/did.json", "BENCH_ANONYMOUS": "1"}),
            Scenario("offline_verify", "offline JWKS verification", "self",
                     run=offline_verification(base, issued)),
            Scenario("verifier_package", "agentidp-verifier, offline", "self",
                     run=verifier_package(base, issued)),
            Scenario("federation_verify", "POST /federation/verify (warm JWKS)", "product",
                     base, "verify.lua", str(WORK / "federation.txt")),
            Scenario("floor_transaction", "transaction + SELECT 1", "product",
                     f"{base}/bench/floor/transaction", floor=True),
            Scenario("floor_drf", "bare DRF view", "product", f"{base}/bench/floor/drf", floor=True),
            Scenario("floor_bearer", "DRF + bearer principal, no read", "product", base,
                     "agent.lua", bearer, {"BENCH_PATH_PREFIX": "/bench/floor/bearer/"},
                     floor=True),
        ]  # fmt: skip
        procs = processes(env, {"product": server.pid, "stock_dot": stock_server.pid})
        for scenario in scenarios:
            measure(scenario, procs, 3)  # warm up
        rounds: list[dict[str, dict[str, float]]] = []
        for number in range(ROUNDS):
            print(f"[bench] round {number + 1} of {ROUNDS}", flush=True)
            rounds.append({s.key: measure(s, procs, DURATION) for s in scenarios})
        print("[bench] webhook delivery", flush=True)
        hooks = webhook_figures(env, RECEIVER_PORT, tree_seconds)
        print("[bench] audit chain, proofs and appends", flush=True)
        audit = audit_figures(env)
        print("[bench] a 10,000-token delegation tree revoked", flush=True)
        delegation = tree_revocation(base, WORK)
    finally:
        for process in (server, stock_server):
            process.send_signal(signal.SIGTERM)
        for process in (server, stock_server):
            process.wait(timeout=30)
    summary = summarize(rounds, scenarios)
    document = {
        "machine": {"cores": os.cpu_count(), "server": "gunicorn bench/gunicorn.conf.py",
                    "connections": CONNECTIONS, "seconds": DURATION, "rounds": ROUNDS},
        "scenarios": summary,
        "webhooks": hooks,
        "audit": audit,
        "delegation": delegation,
        "rounds": rounds,
    }  # fmt: skip
    (WORK / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nmake bench: gunicorn bench/gunicorn.conf.py ({os.cpu_count()} cores), wrk "
          f"{CONNECTIONS} connections, {ROUNDS} interleaved rounds of {DURATION}s, medians\n")  # fmt: skip
    print_table(summary)
    token, api = summary["token"], summary["api_get"]
    cpu = token["cpu_ms_per_request"]
    assert isinstance(cpu, dict)  # noqa: S101
    print(f"\ntargets: token >= 2x stock DOT: {token['ratio_to_stock_dot']}; token >= 0.25 of bare: "
          f"{token['ratio_to_bare']}; token p99 < 50 ms: {token['p99_ms']}; token CPU <= 2.5 ms: "
          f"{cpu['total']}; GET /agents/{{id}} >= 0.25 of bare: {api['ratio_to_bare']}; "
          f"its p99 < 40 ms: {api['p99_ms']}")  # fmt: skip
    did = summary["did_document"]
    print(f"GET /agents/{{id}}/did.json from cache: {did['rps']} req/s, {did['ratio_to_bare']} of "
          f"bare, p99 {did['p99_ms']} ms")  # fmt: skip
    federated = summary["federation_verify"]
    federated_cpu = federated["cpu_ms_per_request"]
    assert isinstance(federated_cpu, dict)  # noqa: S101
    print(f"federation: POST /federation/verify with a warm JWKS cache: {federated['rps']} req/s, "
          f"p99 {federated['p99_ms']} ms, {federated_cpu['total']} ms CPU each (audited)")  # fmt: skip
    print(f"an id_token too (scope openid): {summary['token_openid']['ratio_to_token']} of the "
          "plain token's throughput")  # fmt: skip
    exchanged = summary["token_exchange"]
    print(f"token exchange between agents: {exchanged['rps']} req/s, {exchanged['ratio_to_token']}"
          f" of client_credentials (target >= 0.8), p99 {exchanged['p99_ms']} ms; a"
          f" {delegation['tree_tokens']}-token delegation tree revoked: answered in"
          f" {delegation['revoke_response_ms']} ms, every token in the status list"
          f" {delegation['revoked_to_status_list_ms']} ms after the request (target < 1000)")  # fmt: skip
    subscribed = summary["token_subscribed"]
    print(f"with a token.issued webhook subscription: {subscribed['rps']} req/s, "
          f"{subscribed['ratio_to_token']} of the plain token's (no worker running: the request "
          f"path's own cost)")  # fmt: skip
    print(f"webhooks: {hooks['deliveries_per_second_per_worker']} deliveries/s per worker process "
          f"(target >= 300; {hooks['worker_cpu_ms_per_delivery']} ms CPU each), event to delivery "
          f"p50 {hooks['latency_p50_ms']} ms, p95 {hooks['latency_p95_ms']} ms (target < 1000)")  # fmt: skip
    appends = audit["append"]
    assert isinstance(appends, dict)  # noqa: S101
    print(f"audit: chain verification {audit['chain_verify_events_per_second']} events/s over "
          f"{audit['events']} events (target >= 100000), the whole integrity check (chain, Merkle "
          f"roots against the signed checkpoints, their copies) "
          f"{audit['integrity_verify_events_per_second']} events/s; inclusion proof in that log's Merkle tree "
          f"p50 {audit['proof_p50_ms']} ms, p99 {audit['proof_p99_ms']} ms (target < 10; tree built "
          f"in {audit['merkle_tree_build_seconds']} s); appends with {appends['writers']} "
          f"organizations writing at once: {appends['events_per_second']} events/s")  # fmt: skip
    package, pyjwt = summary["verifier_package"], summary["offline_verify"]
    print(f"agentidp-verifier: {package['rps']} ES256 verifications/s on one core, every check "
          f"and the status list included (target >= 8000); PyJWT's jwt.decode alone: "
          f"{pyjwt['rps']}/s")  # fmt: skip
    print(f"figures in {WORK / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
