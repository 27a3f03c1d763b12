"""A whole ``make run`` stack for the tests that must see what a user sees.

``python -m agentidp.devenv run`` exactly as ``make run`` starts it (embedded PostgreSQL and
Redis, migrations, the demo seed, web + worker + beat under the supervisor) in a data directory
of its own, on a free port, with none of the test suite's environment: no DATABASE_URL or
REDIS_URL, so it starts its embedded servers as on a fresh machine.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import redis
import requests
from django.conf import settings

from agentidp.devenv import ROOT, free_port

# The test run's own settings must not leak into the stack.
_STRIPPED = (
    "DATABASE_URL",
    "DATABASE_OWNER_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "SECRET_KEY",
    "DEBUG",
    "AGENTIDP_STRICT_TENANCY",
    "AGENTIDP_LOCAL_SECRETS_PATH",
    "AGENTIDP_LOCAL_SECRETS_KEY_FILE",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "DJANGO_SETTINGS_MODULE",
    "PYTEST_ADDOPTS",
    "COV_CORE_SOURCE",
    "COV_CORE_CONFIG",
    "COV_CORE_DATAFILE",
)


def stack_environment(
    data_dir: Path, port: int, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED}
    env.update(AGENTIDP_DATA_DIR=str(data_dir), PORT=str(port))
    env.update(extra or {})
    return env


@dataclass
class Stack:
    """A running ``make run``: its URL, data directory and supervisor process."""

    base: str
    port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes]
    extra_env: dict[str, str] | None = None

    @property
    def environment(self) -> dict[str, str]:
        return stack_environment(self.data_dir, self.port, self.extra_env)

    def credentials(self) -> dict[str, str]:
        stored: dict[str, str] = json.loads((self.data_dir / "demo-credentials.json").read_text())
        return stored

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``make manage ARGS=...`` against this stack."""
        return subprocess.run(  # noqa: S603 - our own launcher
            [sys.executable, "-m", "agentidp.devenv", "manage", *args],
            env=self.environment,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def admin_session(self, username: str, password: str) -> requests.Session:
        """A browser-like session logged in to the admin (cookies: sessionid, csrftoken)."""
        session = requests.Session()
        login = f"{self.base}/admin/login/"
        session.get(login, timeout=10)
        response = session.post(
            login,
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": login},
            timeout=10,
        )
        assert response.url.endswith("/admin/"), f"login as {username} failed: {response.url}"
        assert username in response.text
        return session

    def as_demo_agent(self, path: str, **data: str) -> requests.Response:
        """POST to an OAuth endpoint as the demo agent's client (client_secret_basic)."""
        credentials = self.credentials()
        return requests.post(
            f"{self.base}{path}",
            data=data,
            auth=(credentials["agent_client_id"], credentials["agent_client_secret"]),
            timeout=10,
        )

    def redis_port(self) -> int:
        url = (self.data_dir / "redis.url").read_text().strip()
        return int(url.rsplit(":", 1)[1].split("/", 1)[0])

    def redis_pid(self) -> int:
        info = cast(dict[str, Any], redis.Redis(port=self.redis_port()).info("server"))
        return int(info["process_id"])

    def web_pid(self) -> int:
        """The supervisor's web process (``runserver``)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == self.process.pid and b"runserver" in command:
                return int(entry.name)
        raise RuntimeError("the stack has no web process")

    def services_environment(self) -> dict[str, str]:
        """What ``make run`` gives its own processes (its embedded PostgreSQL by socket, its
        Redis, its secret key and local secret store), for another server of this stack."""
        socket_dir = (self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[4]
        where = quote(socket_dir, safe="")
        return {
            **self.environment,
            "DJANGO_SETTINGS_MODULE": "agentidp.settings",
            "DATABASE_URL": f"postgres://agentidp_app@{where}/agentidp",
            "DATABASE_OWNER_URL": f"postgres://agentidp_owner@{where}/agentidp",
            "REDIS_URL": (self.data_dir / "redis.url").read_text().strip(),
            "SECRET_KEY": (self.data_dir / "secret_key").read_text().strip(),
            "DEBUG": "1",
            "AGENTIDP_ISSUER": self.base,
            "AGENTIDP_LOCAL_SECRETS_PATH": str(self.data_dir / "secrets.enc"),
            "AGENTIDP_LOCAL_SECRETS_KEY_FILE": str(self.data_dir / "secrets.key"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.data_dir / "metrics"),
            "LOG_LEVEL": "WARNING",
        }

    def postgres_pid(self) -> int:
        return int((self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"make run exited:\n{self.log.read_text()[-4000:]}")
            try:
                if requests.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"make run not ready:\n{self.log.read_text()[-4000:]}")

    def supervisor_said(self, text: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text():
                return True
            time.sleep(0.2)
        return False

    def processes_using_data(self) -> list[str]:
        """Processes whose command line, working directory or open files are in the data
        directory: ``pid command``."""
        root = str(self.data_dir.resolve())
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                command = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                places = [os.readlink(entry / "cwd")]
                places += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            except OSError:
                continue
            if root in command or any(p.startswith(root) for p in places):
                found.append(f"{entry.name} {command[:200]}")
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def stack_start(
    *,
    demo_passwords: tuple[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    relative_data_dir: bool = False,
) -> Stack:
    """Start ``make run`` in a fresh data directory whose parents do not exist yet
    (``extra_env``: settings of this instance, beside what ``make run`` sets;
    ``relative_data_dir``: ``AGENTIDP_DATA_DIR`` given relative to the checkout, as the README's
    second-instance line gives it)."""
    base_dir = Path(tempfile.mkdtemp(prefix="agentidp-stack-"))
    base_dir.chmod(0o755)  # the embedded PostgreSQL runs as an unprivileged user under root
    data_dir = base_dir / "fresh-clone" / ".agentidp"
    if demo_passwords is not None:
        data_dir.mkdir(parents=True)
        data_dir.chmod(0o755)
        (data_dir / "demo-credentials.json").write_text(
            json.dumps(
                {
                    "staff_username": "demo-admin",
                    "staff_password": demo_passwords[0],
                    "platform_username": "platform-admin",
                    "platform_password": demo_passwords[1],
                }
            )
        )
    port = free_port()
    log = base_dir / "make-run.log"
    if relative_data_dir:
        extra_env = {**(extra_env or {}), "AGENTIDP_DATA_DIR": os.path.relpath(data_dir, ROOT)}
    with log.open("wb") as out:
        # a process group of its own, as a terminal gives `make run`: stopping that group must
        # stop everything the stack started, and nothing of the test run's
        process = subprocess.Popen(  # noqa: S603 - our own launcher
            [sys.executable, "-m", "agentidp.devenv", "run"],
            env=stack_environment(data_dir, port, extra_env),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack = Stack(
        base=f"http://localhost:{port}", port=port, data_dir=data_dir, log=log, process=process,
        extra_env=extra_env,
    )  # fmt: skip
    stack.wait_ready()
    return stack


def _database_url(alias: str) -> str:
    db = settings.DATABASES[alias]
    host = str(db["HOST"])
    where = quote(host, safe="") if host.startswith("/") else f"{host}:{db['PORT']}"
    return f"postgres://{db['USER']}@{where}/{db['NAME']}"


def process_environment() -> dict[str, str]:
    """The test run's database, Redis and secret store, for a process of our own (a gunicorn,
    a Celery worker) that must see what the test committed."""
    vault = settings.AGENTIDP["VAULT"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(
        DJANGO_SETTINGS_MODULE="agentidp.settings",
        DATABASE_URL=_database_url("default"),
        DATABASE_OWNER_URL=_database_url("owner"),
        REDIS_URL=settings.REDIS_URL,
        SECRET_KEY=settings.SECRET_KEY,
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        AGENTIDP_ISSUER=settings.AGENTIDP["ISSUER"],
        VAULT_ADDR=vault["ADDR"],
        VAULT_TOKEN=vault["TOKEN"],
        VAULT_MOUNT=vault["MOUNT"],
        VAULT_PREFIX=vault["PREFIX"],
        LOG_LEVEL="WARNING",
    )
    return env
