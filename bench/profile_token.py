"""``make profile``: where the token endpoint's time goes, by function, in one process.

Seeds the same database as ``make bench`` (through its own functions), then sends token
requests through the WSGI application in-process (no network, no server): first unprofiled
(CPU and wall time per request), then under cProfile counting CPU time only, and prints the
functions by own and by cumulative CPU time. Run with ``BENCH_PROFILE_REQUESTS``
to change the count (default 3000, after 300 warm-up requests).
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import WORK, prepare  # noqa: E402

PROFILED = """
import base64, cProfile, io, os, pstats, sys, time, django
django.setup()
from django.core.wsgi import get_wsgi_application
app = get_wsgi_application()
lines = open(sys.argv[1]).read().split()
body = b"grant_type=client_credentials"

def call(n):
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/oauth2/token", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8765", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8765", "HTTP_AUTHORIZATION": "Basic " + lines[n % len(lines)],
    }
    status = []
    out = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200"), (status, out)

for n in range(300):
    call(n)
count = int(os.environ.get("BENCH_PROFILE_REQUESTS", "3000"))
cpu, wall = time.process_time(), time.perf_counter()
for n in range(count):
    call(n)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(f"{count} token requests in-process, unprofiled: {cpu / count * 1000:.3f} ms of CPU "
      f"and {wall / count * 1000:.3f} ms of wall time each (the rest is PostgreSQL and Redis)")
# CPU time only: waiting for PostgreSQL and Redis is not this process's cost.
profile = cProfile.Profile(time.process_time)
profile.enable()
for n in range(count):
    call(n)
profile.disable()
stats = pstats.Stats(profile)
print(f"profiled: {stats.total_tt / count * 1000:.3f} ms of CPU each (cProfile's own cost included)")
stats.sort_stats("tottime").print_stats(25)
stats.sort_stats("cumulative").print_stats(40)
"""


def main() -> int:
    env = {**prepare(), "DJANGO_SETTINGS_MODULE": "agentidp.settings", "DEBUG": "0"}
    return subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROFILED, str(WORK / "credentials.txt")],
        env={**env, **{k: v for k, v in os.environ.items() if k.startswith("BENCH_")}},
        cwd=ROOT,
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
