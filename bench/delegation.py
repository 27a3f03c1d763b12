"""``make bench``'s delegation figures: the exchange scenario's subject tokens, and the time to
revoke a delegation tree of 10,000 tokens and see every one of them in the token status list.

The tree: one agent's token, exchanged by a second agent 100 times, each of those exchanged
99 times by eight more agents (100 + 9,900 derived tokens, two levels below the root), issued over
HTTP by the running server. Then ``POST /oauth2/revoke`` of the root, and ``GET`` of the
status lists until every derived token's bit is set: the figure is from the revocation's
request to the first list showing all 10,000.
"""

import base64
import json
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
FANOUT = (100, 99)  # children of the root, grandchildren of each child


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    loaded: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return loaded


def _token(base: str, session: requests.Session, basic: str, **form: str) -> str:
    """A token, waiting out the client's rate limit (429 with Retry-After) when it says so."""
    for _ in range(100):
        response = session.post(
            f"{base}/oauth2/token", data=form, headers={"Authorization": f"Basic {basic}"},
            timeout=30,
        )  # fmt: skip
        if response.status_code != 429:
            break
        time.sleep(float(response.headers.get("Retry-After", "1")))
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def exchange_pairs(base: str, work: Path) -> Callable[[], None]:
    """Before each exchange round: fresh subject tokens (the exchanged token never outlives its
    subject), one per seeded agent, each to be exchanged by the next agent of its organization."""

    def refresh() -> None:
        creds = json.loads((work / "credentials.json").read_text())
        basics = [base64.b64encode(f"{c}:{s}".encode()).decode() for c, s, _ in creds]
        session = requests.Session()
        lines = []
        for index, basic in enumerate(basics):
            organization_start = index - index % 10  # ten agents per organization, in order
            actor = basics[organization_start + (index + 1) % 10]
            subject = _token(base, session, basic, grant_type="client_credentials")
            lines.append(f"{actor} {subject}")
        (work / "exchange.txt").write_text("\n".join(lines) + "\n")

    return refresh


def _bits(base: str, session: requests.Session, uri: str) -> bytes:
    path = "/" + uri.split("://", 1)[1].split("/", 1)[1]
    response = session.get(f"{base}{path}", timeout=30)
    response.raise_for_status()
    payload = response.text.split(".")[1]
    document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    lst = document["status_list"]["lst"]
    return zlib.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)))


def tree_revocation(base: str, work: Path) -> dict[str, object]:
    """Build the 10,000-token tree, revoke its root, time until the status list shows it all."""
    creds = json.loads((work / "credentials.json").read_text())
    # agents of the first organization: the root's, the children's, and eight sharing the
    # grandchildren (each client has its own rate limit)
    basics = [base64.b64encode(f"{c}:{s}".encode()).decode() for c, s, _ in creds[:10]]
    root_agent, child_agent, grandchild_agents = basics[0], basics[1], basics[2:]
    session = requests.Session()
    root = _token(base, session, root_agent, grant_type="client_credentials")
    exchange = {"grant_type": EXCHANGE, "subject_token_type": ACCESS}
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        children = list(pool.map(
            lambda _: _token(base, requests.Session(), child_agent, subject_token=root, **exchange),
            range(FANOUT[0]),
        ))  # fmt: skip
        grandchildren = list(pool.map(
            lambda n_subject: _token(
                base, requests.Session(), grandchild_agents[n_subject[0] % len(grandchild_agents)],
                subject_token=n_subject[1], **exchange,
            ),
            enumerate(child for child in children for _ in range(FANOUT[1])),
        ))  # fmt: skip
    built = time.perf_counter() - started
    tree = children + grandchildren
    places: dict[str, list[int]] = {}
    for token in tree:
        status = _claims(token)["status"]
        assert isinstance(status, dict)  # noqa: S101
        reference = status["status_list"]
        places.setdefault(reference["uri"], []).append(int(reference["idx"]))
    revoke_started = time.perf_counter()
    revoked = session.post(
        f"{base}/oauth2/revoke", data={"token": root},
        headers={"Authorization": f"Basic {root_agent}"}, timeout=60,
    )  # fmt: skip
    revoked.raise_for_status()
    answered = time.perf_counter() - revoke_started
    polls = 0
    while True:
        polls += 1
        if all(
            all((bits[i >> 3] >> (i & 7)) & 1 for i in indexes)
            for bits, indexes in ((_bits(base, session, uri), ix) for uri, ix in places.items())
        ):
            break
        if time.perf_counter() - revoke_started > 60:
            raise SystemExit("the status list did not show the revoked tree within 60 s")
        time.sleep(0.05)
    visible = time.perf_counter() - revoke_started
    return {
        "tree_tokens": len(tree),
        "tree_build_seconds": round(built, 1),
        "revoke_response_ms": round(answered * 1000, 1),
        "revoked_to_status_list_ms": round(visible * 1000, 1),
        "status_list_polls": polls,
    }
