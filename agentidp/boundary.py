"""The input boundary: one parser and one check for every body, form and query string.

PostgreSQL refuses a NUL character in any text and a lone UTF-16 surrogate cannot be encoded
at all; Python's JSON parser recurses once per nesting level and turns ``1e400`` into
infinity. Every text that reaches the application passes through here first, so none of these
becomes a 500 (or a half-applied change) deep inside a service:

* :func:`json_parse` parses a JSON body with a nesting limit, refusing ``NaN``/``Infinity`` and
  numbers that overflow, NUL and lone surrogates in any string or key, and duplicate keys;
* :class:`StrictJSONParser` is that parser for DRF;
* :func:`text_refusal` is the one check for a single text (query values, form fields, paths),
  used by :class:`agentidp.middleware.InputBoundaryMiddleware` for every request.
"""

import json
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import IO, cast

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

from agentidp.errors import JSONValue, ValidationFailed
from agentidp.names import SLUG, name_problem

MAX_JSON_DEPTH = 32
_FORBIDDEN_TEXT = re.compile("[\x00\ud800-\udfff]")
# Strings (with their escapes) removed, what is left shows the nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


class InputRejected(ValueError):
    """Input that cannot be accepted as it is; ``detail`` says why, for the caller."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def text_refusal(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    found = _FORBIDDEN_TEXT.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character"
    return "contains a lone UTF-16 surrogate"


def texts_check(named: Iterable[tuple[str, str]], *, where: str) -> None:
    """Raise :class:`InputRejected` for the first text that :func:`text_refusal` refuses."""
    for name, value in named:
        for part, label in ((name, "name"), (value, "value")):
            reason = text_refusal(part)
            if reason:
                raise InputRejected(f"A {where} {label} {reason}.")


def _depth(raw: bytes) -> int:
    deepest = depth = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub(b"", raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> float:
    raise InputRejected(f"{name} is not a JSON number.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InputRejected(f"The number {text[:40]} is out of range.")
    return value


def _pairs(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise InputRejected("An object has a duplicate key.")
    return result


def _check_strings(value: JSONValue) -> None:
    """Every key and string in a parsed document (its depth is already bounded)."""
    pending: list[JSONValue] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            reason = text_refusal(item)
            if reason:
                raise InputRejected(f"A string {reason}.")
        elif isinstance(item, dict):
            for key, child in item.items():
                reason = text_refusal(key)
                if reason:
                    raise InputRejected(f"An object key {reason}.")
                pending.append(child)
        elif isinstance(item, list):
            pending.extend(item)


def json_parse(raw: bytes) -> JSONValue:
    """Parse a JSON document under the boundary's rules; raise :class:`InputRejected`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRejected("The body is not UTF-8.") from exc
    if _depth(raw) > MAX_JSON_DEPTH:
        raise InputRejected(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.")
    try:
        value = cast(
            JSONValue,
            json.loads(
                text,
                parse_constant=_refuse_constant,
                parse_float=_finite,
                object_pairs_hook=_pairs,
            ),
        )
    except InputRejected:
        raise
    except RecursionError as exc:  # the depth scan makes this unreachable; belt and braces
        raise InputRejected(f"JSON nested deeper than {MAX_JSON_DEPTH} levels.") from exc
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise InputRejected(f"Malformed JSON: {str(exc)[:200]}") from exc
    _check_strings(value)
    return value


class StrictJSONParser(JSONParser):
    """DRF's JSON parser, parsing through :func:`json_parse`."""

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, object] | None = None,
    ) -> dict[str, JSONValue]:
        try:
            document = json_parse(stream.read())
        except InputRejected as exc:
            raise ParseError(exc.detail) from exc
        if not isinstance(document, dict):
            raise ValidationError({"body": ["Expected a JSON object."]})
        return document


# --- names people read (the rules: agentidp.names) ---------------------------------------


def name_normalize(value: str) -> str:
    """NFKC-normalize and trim a name; raise :class:`InputRejected` if it is not acceptable."""
    normalized = unicodedata.normalize("NFKC", value).strip()
    reason = name_problem(normalized)
    if reason:
        raise InputRejected(reason)
    return normalized


def slug_refusal(value: str) -> str | None:
    """Slugs are lowercase ASCII letters, digits and inner hyphens, at most 63 characters."""
    if SLUG.fullmatch(value):
        return None
    return "use lowercase ASCII letters, digits and inner hyphens (at most 63 characters)"


def name_checked(value: str, *, field: str) -> str:
    """:func:`name_normalize` for a service: a refusal is a 400 naming ``field``."""
    try:
        return name_normalize(value)
    except InputRejected as exc:
        raise ValidationFailed(
            f"The {field} is not acceptable.", errors={field: [exc.detail]}
        ) from exc


def slug_checked(value: str, *, field: str = "slug") -> str:
    reason = slug_refusal(value)
    if reason:
        raise ValidationFailed(f"The {field} is not acceptable.", errors={field: [reason]})
    return value
