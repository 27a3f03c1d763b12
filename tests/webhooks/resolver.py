"""A resolver for the SSRF tests: names under ``.test`` answer what a test set (so a name can
rebind between two lookups); every other name goes to the system resolver."""

from collections.abc import Sequence

from agentidp.outbound import system_resolve

answers: dict[str, list[Sequence[str]]] = {}
lookups: list[str] = []


def resolve(host: str, port: int) -> Sequence[str]:
    lookups.append(host)
    if host.endswith(".test"):
        queue = answers.get(host)
        if not queue:
            raise OSError(f"no answer for {host}")
        return queue.pop(0) if len(queue) > 1 else queue[0]
    return system_resolve(host, port)
