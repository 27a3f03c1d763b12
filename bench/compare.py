"""``.venv/bin/python bench/compare.py REF``: the token endpoint of this checkout against the
same endpoint at git ``REF``, measured the way ``make bench`` measures it.

``REF`` is checked out into a temporary worktree; each tree then runs ``make bench``'s
``bare`` and ``token`` scenarios in a fresh database of its own (``bench/run.py``'s
``prepare``, server and ``measure``), in passes that alternate REF, here, here, REF, ... so
that drift of this machine's speed falls on both alike. Printed: medians over every round of
requests per second, the ratio to ``bare`` within the round, p99 and CPU milliseconds per
request (workers, PostgreSQL, Redis). ``BENCH_COMPARE_PASSES`` (default 4),
``BENCH_ROUNDS`` (rounds a pass, default 2 here) and ``BENCH_SECONDS`` set the length.

Issue 14 used it for the cost of encryption at rest: ``bench/compare.py ae07d91``.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
MARK = "COMPARE "


def measure_tree(tree: Path) -> list[dict[str, dict[str, float]]]:
    """In a process started in ``tree``: its bench module, its server, its database."""
    sys.path.insert(0, str(tree))
    from bench import run

    env = run.prepare()
    base = f"http://127.0.0.1:{run.PORT}"
    server = run._start_server(env, "bench.settings", run.PORT)
    try:
        run._wait(f"{base}/readyz")
        scenarios = [
            run.Scenario("bare", "bare view /healthz", "product", f"{base}/healthz"),
            run.Scenario("token", "POST /oauth2/token", "product", f"{base}/oauth2/token",
                         "token.lua", str(run.WORK / "credentials.txt")),
        ]  # fmt: skip
        procs = run.processes(env, {"product": server.pid})
        for scenario in scenarios:
            run.measure(scenario, procs, 3)  # warm up
        rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
        return [
            {s.key: run.measure(s, procs, run.DURATION) for s in scenarios} for _ in range(rounds)
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def _pass(tree: Path) -> list[dict[str, dict[str, float]]]:
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(Path(__file__).resolve()), "--tree", str(tree)],
        cwd=tree, check=True, capture_output=True, text=True,
    )  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith(MARK))
    rounds: list[dict[str, dict[str, float]]] = json.loads(line[len(MARK) :])
    return rounds


def summary(rounds: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    token = [r["token"] for r in rounds]
    cpu = [t["cpu_product"] + t["cpu_postgresql"] + t["cpu_redis"] for t in token]
    return {
        "rounds": len(rounds),
        "token_rps": round(statistics.median(t["rps"] for t in token), 1),
        "bare_rps": round(statistics.median(r["bare"]["rps"] for r in rounds), 1),
        "ratio_to_bare": round(statistics.median(r["token"]["rps"] / r["bare"]["rps"] for r in rounds), 3),
        "p99_ms": round(statistics.median(t["p99_ms"] for t in token), 2),
        "cpu_ms_per_request": round(statistics.median(cpu), 3),
        "cpu_ms_workers": round(statistics.median(t["cpu_product"] for t in token), 3),
        "cpu_ms_postgresql": round(statistics.median(t["cpu_postgresql"] for t in token), 3),
    }  # fmt: skip


def main(ref: str) -> int:
    passes = int(os.environ.get("BENCH_COMPARE_PASSES", "4"))
    with tempfile.TemporaryDirectory(prefix="agentidp-compare-") as scratch:
        other = Path(scratch) / "ref"
        subprocess.run(  # noqa: S603
            ["git", "worktree", "add", "--detach", "-q", str(other), ref],  # noqa: S607
            cwd=HERE, check=True,
        )  # fmt: skip
        try:
            results: dict[str, list[dict[str, dict[str, float]]]] = {ref: [], "here": []}
            order = [(ref, other), ("here", HERE), ("here", HERE), (ref, other)]
            for number in range(passes):
                name, tree = order[number % len(order)]
                print(f"[compare] pass {number + 1} of {passes}: {name}", flush=True)
                results[name].extend(_pass(tree))
        finally:
            subprocess.run(  # noqa: S603
                ["git", "worktree", "remove", "--force", str(other)],  # noqa: S607
                cwd=HERE, check=False,
            )  # fmt: skip
    document = {name: summary(rounds) for name, rounds in results.items() if rounds}
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--tree"]:
        print(MARK + json.dumps(measure_tree(Path(sys.argv[2]))), flush=True)
    elif len(sys.argv) == 2:
        sys.exit(main(sys.argv[1]))
    else:
        sys.exit(__doc__)
