"""The one API base: principal, policy, strict input, pagination, problem responses.

App viewsets declare their queryset access, serializers, filters and ``required_scopes``; the
base asks the policy before anything runs and renders errors as problem+json.
"""

import uuid
from collections.abc import Mapping
from typing import ClassVar

from django.core.paginator import Paginator
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import exceptions as drf_exceptions
from rest_framework import pagination, serializers
from rest_framework.request import Request
from rest_framework.viewsets import GenericViewSet

from agentidp.errors import ValidationFailed
from agentidp.principals import Principal


class StrictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """An input serializer that rejects fields it does not declare, naming each."""

    def to_internal_value(self, data: object) -> object:
        if isinstance(data, Mapping):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class TenantViewSet(GenericViewSet):  # type: ignore[type-arg]
    """Base for every API viewset: the principal, UUID lookups and the policy check."""

    resource_type: ClassVar[str] = "unknown"
    required_scopes: ClassVar[Mapping[str, str]] = {}
    lookup_value_regex = "[^/]+"

    @property
    def principal(self) -> Principal:
        principal = self.request.user
        assert isinstance(principal, Principal)  # noqa: S101 - PolicyPermission guarantees it
        return principal

    def lookup_uuid(self, name: str = "pk") -> uuid.UUID:
        raw = str(self.kwargs[name])
        try:
            return uuid.UUID(raw)
        except ValueError as exc:
            raise ValidationFailed(
                "The id in the path is not a valid UUID.", errors={"id": ["Must be a valid UUID."]}
            ) from exc


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=`` and ``?page_size=`` (at most 200); a malformed page number is a 400, a page
    past the last one a 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_number(self, request: Request, paginator: Paginator[object]) -> int | str:
        number = super().get_page_number(request, paginator)
        if isinstance(number, str) and not (
            number.isascii() and number.isdigit() and 0 < int(number) < 2**31
        ):
            raise ValidationFailed(
                "The page number is not valid.",
                errors={"page": ["A whole number from 1, or 'last'."]},
            )
        return number


class CursorPagination(pagination.CursorPagination):
    """Cursor pagination whose malformed cursors are a 400 naming the parameter."""

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        invalid = ValidationFailed(
            "The cursor is not valid.", errors={"cursor": ["Use a cursor this API returned."]}
        )
        try:
            cursor = super().decode_cursor(request)
        except drf_exceptions.NotFound as exc:
            raise invalid from exc
        if cursor is not None and cursor.position is not None:
            try:
                int(cursor.position)
            except ValueError as exc:
                raise invalid from exc
        return cursor


def problem_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """OpenAPI descriptions of the problem+json error responses an endpoint may return."""
    problem = inline_serializer(
        name="Problem",
        fields={
            "type": serializers.CharField(),
            "title": serializers.CharField(),
            "status": serializers.IntegerField(),
            "detail": serializers.CharField(),
            "instance": serializers.CharField(),
            "errors": serializers.DictField(
                child=serializers.ListField(child=serializers.CharField()), required=False
            ),
        },
    )
    descriptions = {
        400: "Invalid input (problem+json naming the fields)",
        401: "Authentication required",
        403: "Forbidden by policy",
        404: "Not found (or owned by another organization)",
        409: "Conflicts with the current state or a quota",
    }
    return {
        status: OpenApiResponse(response=problem, description=descriptions.get(status, "Error"))
        for status in statuses
    }
