"""The one API base: principal, policy, strict input and pagination.

App viewsets declare their queryset access, serializers, filters and ``required_scopes``; the
base asks the policy before anything runs and renders errors as problem+json.
"""

import uuid
from collections.abc import Mapping
from typing import ClassVar, cast

from django.core.paginator import Paginator
from rest_framework import exceptions as drf_exceptions
from rest_framework import pagination, serializers
from rest_framework.request import Request
from rest_framework.utils.serializer_helpers import BindingDict
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from agentidp.errors import JSONValue, NotFound, ValidationFailed
from agentidp.principals import Principal

TypeErrors = list[str] | dict[int, list[str]]


def json_type_refusal(field: serializers.Field, value: object) -> TypeErrors | None:  # type: ignore[type-arg]
    """Why a JSON value is not of the type the field documents (DRF would coerce ``0`` to
    ``"0"`` and ``"12"`` to ``12``), by item for arrays; None when it is, or when null is the
    field's business."""
    if value is None:
        return None
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return ["Must be an array."]
        items: dict[int, list[str]] = {}
        for index, item in enumerate(value):
            refusal = json_type_refusal(field.child, item)
            if isinstance(refusal, list):
                items[index] = refusal
        return items or None
    expected: tuple[type, ...] | None = None
    if isinstance(field, serializers.BooleanField):
        expected, name = (bool,), "a boolean"
    elif isinstance(field, serializers.IntegerField):
        if isinstance(value, bool):
            return ["Must be an integer."]
        expected, name = (int,), "an integer"
    elif isinstance(
        field,
        serializers.CharField
        | serializers.ChoiceField
        | serializers.DateTimeField
        | serializers.UUIDField,
    ):
        expected, name = (str,), "a string"
    elif isinstance(field, serializers.DictField):
        expected, name = (dict,), "an object"
    if expected is not None and not isinstance(value, expected):
        return [f"Must be {name}."]
    return None


class StrictSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """An input serializer that rejects fields it does not declare and values not of their
    documented JSON type, naming each."""

    def to_internal_value(self, data: object) -> object:
        if isinstance(data, Mapping):
            writable = {name: f for name, f in self.fields.items() if not f.read_only}
            errors: dict[str, TypeErrors] = {
                name: ["Unknown field."] for name in sorted(set(data) - set(writable))
            }
            for name, field in writable.items():
                if name in data:
                    refusal = json_type_refusal(field, data[name])
                    if refusal:
                        errors[name] = refusal
            if errors:
                # DRF's own shape for item errors of a ListField: {index: [messages]}
                raise serializers.ValidationError(cast(dict[str, list[str]], errors))
        return super().to_internal_value(data)


class RenderSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A read-only serializer for hot reads: its fields are built and bound once per class.

    DRF deep-copies a serializer's declared fields for every instance it renders (about a
    third of a bearer-authenticated ``GET``'s CPU); fields that only render (read-only, no
    context, no per-instance arguments) can be shared. Subclasses declare read-only fields and
    are never given ``data``."""

    @property
    def fields(self) -> BindingDict:
        cls = type(self)
        bound: BindingDict | None = cls.__dict__.get("_bound_fields")
        if bound is None:
            template = serializers.Serializer.__new__(cls)
            serializers.Serializer.__init__(template)
            bound = BindingDict(template)
            for name, field in template.get_fields().items():
                if not field.read_only:
                    raise TypeError(f"{cls.__name__}.{name} must be read-only")
                bound[name] = field
            cls._bound_fields = bound  # type: ignore[attr-defined]
        return bound


class QuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Query parameters. An empty free-text filter is no filter; an empty value of a typed
    parameter (a choice, a time) is an error, not an omission (DRF's form handling would
    silently drop it)."""

    def to_internal_value(self, data: object) -> object:
        if isinstance(data, Mapping):
            typed = [
                name
                for name, field in self.fields.items()
                if isinstance(name, str)
                and (
                    isinstance(field, serializers.ChoiceField)
                    or not isinstance(field, serializers.CharField)
                )
            ]
            empty = sorted(n for n in typed if n in data and data.get(n) == "")
            if empty:
                raise serializers.ValidationError({n: ["Must not be empty."] for n in empty})
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

    @property
    def organization_id(self) -> uuid.UUID:
        """The caller's organization, which every tenant action acts in."""
        organization_id = self.principal.organization_id
        if organization_id is None:
            raise NotFound("The caller belongs to no organization.")
        return organization_id

    def lookup_uuid(self, name: str = "pk") -> uuid.UUID:
        raw = str(self.kwargs[name])
        try:
            return uuid.UUID(raw)
        except ValueError as exc:
            raise ValidationFailed(
                "The id in the path is not a valid UUID.", errors={"id": ["Must be a valid UUID."]}
            ) from exc


def bounded_parameters(
    parameters: list[dict[str, JSONValue]], bounds: dict[str, dict[str, JSONValue]]
) -> list[dict[str, JSONValue]]:
    """The paginator's query parameters in the schema, with the bounds it enforces."""
    for parameter in parameters:
        schema = parameter.get("schema")
        if isinstance(schema, dict):
            schema.update(bounds.get(str(parameter.get("name")), {}))
    return parameters


def page_size_checked(
    request: Request, paginator: "PageNumberPagination | CursorPagination"
) -> int | None:
    """``?page_size=`` as documented: a whole number from 1 to the paginator's maximum."""
    name = paginator.page_size_query_param
    raw = request.query_params.get(name) if name else None
    if raw is None:
        return paginator.page_size
    limit = paginator.max_page_size or paginator.page_size or 1
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= limit):
        raise ValidationFailed(
            "The page size is not valid.",
            errors={str(name): [f"A whole number from 1 to {limit}."]},
        )
    return int(raw)


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=`` and ``?page_size=`` (at most 200); a malformed page number is a 400, a page
    past the last one a 404."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, JSONValue]]:
        return bounded_parameters(
            super().get_schema_operation_parameters(view),
            {
                self.page_query_param: {"minimum": 1},
                str(self.page_size_query_param): {"minimum": 1, "maximum": self.max_page_size},
            },
        )

    def get_page_size(self, request: Request) -> int | None:
        return page_size_checked(request, self)

    def get_page_number(self, request: Request, paginator: Paginator[object]) -> int | str:
        number = super().get_page_number(request, paginator)
        if request.query_params.get(self.page_query_param) == "":
            number = ""  # DRF would read an empty page number as page 1
        if isinstance(number, str) and not (
            number.isascii() and number.isdigit() and int(number) > 0
        ):
            raise ValidationFailed(
                "The page number is not valid.",
                errors={"page": ["A whole number from 1, or 'last'."]},
            )
        return number


class CursorPagination(pagination.CursorPagination):
    """Cursor pagination whose malformed cursors and page sizes are a 400 naming them."""

    def position_read(self, position: str) -> object:
        """A cursor's position as the ordering field's type (a sequence number here; override
        for another ordering); ValueError for one this API never made."""
        return int(position)

    def get_page_size(self, request: Request) -> int | None:
        return page_size_checked(request, self)

    def get_schema_operation_parameters(self, view: APIView) -> list[dict[str, JSONValue]]:
        return bounded_parameters(
            super().get_schema_operation_parameters(view),
            {str(self.page_size_query_param): {"minimum": 1, "maximum": self.max_page_size}},
        )

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        invalid = ValidationFailed(
            "The cursor is not valid.",
            errors={"cursor": ["Use a cursor this API returned."]},
        )
        try:
            cursor = super().decode_cursor(request)
        except drf_exceptions.NotFound as exc:
            raise invalid from exc
        if cursor is not None and cursor.position is not None:
            try:
                self.position_read(str(cursor.position))
            except ValueError as exc:
                raise invalid from exc
        return cursor
