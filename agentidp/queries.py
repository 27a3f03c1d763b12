"""Query filters every listing shares: an event type or a family of them, and a time window."""

from datetime import datetime
from typing import TypeVar

from django.db.models import Model, QuerySet

M = TypeVar("M", bound=Model)


def type_filtered(queryset: QuerySet[M], field: str, value: str | None) -> QuerySet[M]:
    """Rows whose ``field`` is ``value``, or in its family when it ends in ``.*``
    (``agent.*``: every ``agent.`` type); no filter when ``value`` is empty."""
    if not value:
        return queryset
    if value.endswith(".*"):
        return queryset.filter(**{f"{field}__startswith": value[:-1]})
    return queryset.filter(**{field: value})


def time_windowed(
    queryset: QuerySet[M], field: str, since: datetime | None, until: datetime | None
) -> QuerySet[M]:
    """Rows with ``since <= field < until`` (either bound may be absent)."""
    if since:
        queryset = queryset.filter(**{f"{field}__gte": since})
    if until:
        queryset = queryset.filter(**{f"{field}__lt": until})
    return queryset
