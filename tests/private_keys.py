"""A test-only middleware that reads every response the suite produces (test clients and live
servers alike) and notes any JSON object that looks like a JWK and carries a private member.
``tests/conftest.py`` installs it and fails the test during which one was served."""

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
JSON_TYPES = ("application/json", "application/did", "application/problem+json", "application/ld")

violations: list[str] = []


def _walk(value: object, path: str) -> None:
    if isinstance(value, dict):
        if "kty" in value and PRIVATE_MEMBERS & set(value):
            violations.append(f"{path}: a JWK with {sorted(PRIVATE_MEMBERS & set(value))}")
        for key, child in value.items():
            _walk(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            _walk(child, f"{path}[{index}]")


class PrivateKeyScan:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if isinstance(response, StreamingHttpResponse) or not content_type.startswith(JSON_TYPES):
            return response
        try:
            document = json.loads(response.content)
        except ValueError:
            return response
        _walk(document, f"{request.method} {request.path}")
        return response
