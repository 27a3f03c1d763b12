"""Reference floors for ``make bench``: what the framework costs before any of our work.

The bench server runs the product's settings with this URLconf (``bench.settings``): every
product path is unchanged, and three views are added that do nothing of ours, each one layer
more than the bare view (a):

- ``/bench/floor/transaction``: a plain Django view inside the tenancy middleware's request
  transaction, running ``SELECT 1`` (BEGIN, one statement, COMMIT).
- ``/bench/floor/drf``: a DRF view with no authentication and no database.
- ``/bench/floor/bearer/<id>``: a DRF view behind the bearer principal (signature, revocation
  list, the caller's standing) that reads nothing.

They answer what no tuning of our code can change: the most a token or API request can reach
on this stack.
"""

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentidp.principals import Principal
from agentidp.urls import handler404, handler500
from agentidp.urls import urlpatterns as product_urlpatterns


def transaction_floor(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    return JsonResponse({"selected": row[0] if row else None})


class DrfFloorView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class BearerFloorView(APIView):
    permission_classes = (IsAuthenticated,)

    def get(self, request: Request, agent_id: str) -> Response:
        principal = request.user
        assert isinstance(principal, Principal)  # noqa: S101 - IsAuthenticated guarantees it
        return Response({"sub": principal.id, "path": agent_id})


urlpatterns = [
    *product_urlpatterns,
    path("bench/floor/transaction", transaction_floor),
    path("bench/floor/drf", DrfFloorView.as_view()),
    path("bench/floor/bearer/<str:agent_id>", BearerFloorView.as_view()),
]

__all__ = ["handler404", "handler500", "urlpatterns"]
