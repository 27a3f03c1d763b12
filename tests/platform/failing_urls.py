"""The product's URLs plus two views that fail, to see how failures leave the stack."""

from django.db import OperationalError
from django.http import HttpRequest, HttpResponse
from django.urls import path

from agentidp.urls import urlpatterns as product_urlpatterns


def raises(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("secret internals")


def database_gone(request: HttpRequest) -> HttpResponse:
    raise OperationalError("connection to server at 127.0.0.1 failed")


urlpatterns = [
    path("test/raises", raises),
    path("test/database-gone", database_gone),
    *product_urlpatterns,
]
