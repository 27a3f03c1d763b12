"""The token status lists served at ``GET /oauth2/status/{L}`` (draft-ietf-oauth-status-list).

Each answer is a signed status-list token (``typ: statuslist+jwt``): one bit per token of list
``L`` (:mod:`oidc.status`), set while the database holds the token's revocation
(``oidc_revokedtoken``), the bit string zlib-compressed. It is built from the database at most
:data:`MEMO_SECONDS` before it is served, so a revocation shows within a second of its commit;
relying parties may cache it for ``AGENTIDP_STATUS_LIST_TTL`` seconds (the token's ``ttl``, and
the response's max-age).
"""

import base64
import threading
import time
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from agentidp.conf import agentidp_settings
from agentidp.errors import JSONValue
from oidc.keys import signing_key_current
from oidc.status import BLOCK, LIST_SIZE, status_list_uri
from oidc.tokens import jws_sign

STATUS_LIST_TYPE = "statuslist+jwt"
MEDIA_TYPE = "application/statuslist+jwt"
MEMO_SECONDS = 0.5
# bits per status (the draft's 1: VALID 0, INVALID 1)
BITS = 1


def status_lists_count() -> int:
    """How many lists exist (every index handed out so far is in one of them)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT last_value, is_called FROM oidc_status_block")
        row = cursor.fetchone()
    assert row is not None  # noqa: S101 - a sequence has one row
    blocks = int(row[0]) if row[1] else 0
    return (blocks * BLOCK + LIST_SIZE - 1) // LIST_SIZE


def revoked_indexes(list_number: int) -> list[int]:
    """The positions in list ``list_number`` of tokens revoked and not yet expired."""
    first = list_number * LIST_SIZE
    with connection.cursor() as cursor:
        cursor.execute("SELECT oidc_status_revoked(%s, %s)", [first, first + LIST_SIZE])
        return [int(index) - first for (index,) in cursor.fetchall()]


def bit_string(positions: list[int]) -> bytes:
    """The draft's byte array: bit ``i`` is bit ``i % 8`` (least significant first) of byte
    ``i // 8``."""
    bits = bytearray(LIST_SIZE * BITS // 8)
    for position in positions:
        bits[position >> 3] |= 1 << (position & 7)
    return bytes(bits)


def status_list_ttl() -> int:
    return int(settings.AGENTIDP["STATUS_LIST_TTL"])


def status_list_token(list_number: int) -> str:
    """The signed status-list token of one list, as of now."""
    now = int(time.time())
    ttl = status_list_ttl()
    compressed = zlib.compress(bit_string(revoked_indexes(list_number)), 9)
    claims: dict[str, JSONValue] = {
        "iss": agentidp_settings().issuer,
        "sub": status_list_uri(list_number),
        "iat": now,
        "exp": now + 2 * ttl,
        "ttl": ttl,
        "status_list": {
            "bits": BITS,
            "lst": base64.urlsafe_b64encode(compressed).rstrip(b"=").decode(),
        },
    }
    return jws_sign(claims, signing_key_current(), typ=STATUS_LIST_TYPE)


@dataclass(frozen=True)
class _Served:
    token: str
    built: float


_memo: dict[int, _Served] = {}
_memo_lock = threading.Lock()


def status_list_served(list_number: int) -> str | None:
    """The token ``GET /oauth2/status/{list_number}`` answers (built at most
    :data:`MEMO_SECONDS` ago), or None for a list that does not exist."""
    now = time.monotonic()
    with _memo_lock:
        served = _memo.get(list_number)
    if served is not None and now - served.built < MEMO_SECONDS:
        return served.token
    if list_number >= status_lists_count():
        return None
    token = status_list_token(list_number)
    with _memo_lock:
        _memo[list_number] = _Served(token=token, built=now)
    return token
