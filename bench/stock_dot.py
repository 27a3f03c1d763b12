"""The peer ``make bench`` compares the token endpoint with: stock django-oauth-toolkit.

Settings (``DJANGO_SETTINGS_MODULE=bench.stock_dot``; URLs in ``bench.stock_dot_urls``): Django's
default middleware, DOT's own ``TokenView`` at ``/o/token/``, its stock (unswapped) application
and token models, ``client_credentials`` with a plain (unhashed) secret and DOT's default opaque
tokens, in a database of its own on the same PostgreSQL server, with the same connection
settings as the product (persistent connections, server-side binding).

It is served by a second gunicorn master running the same ``bench/gunicorn.conf.py`` as the
product, up for the whole run and measured in the same interleaved rounds. One process cannot
serve both: Django has one settings module per process, and DOT's application and token models
are swapped globally (the product swaps them for its own), so stock DOT needs its own process.
"""

import os

import environ

env = environ.Env()

SECRET_KEY = os.environ.get("SECRET_KEY", "bench-stock-dot-" + "x" * 40)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "oauth2_provider",
]
# Django's startproject middleware (less the messages app, which DOT does not use).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "bench.stock_dot_urls"
DATABASES = {
    "default": {
        **env.db_url_config(os.environ.get("STOCK_DATABASE_URL", "postgres:///stock_dot")),
        "CONN_MAX_AGE": 60,
        "OPTIONS": {"server_side_binding": True},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
OAUTH2_PROVIDER = {"ACCESS_TOKEN_EXPIRE_SECONDS": 900, "SCOPES": {"read": "Read"}}

SEED = """
import base64, django
django.setup()
from oauth2_provider.models import Application
lines = []
for n in range(100):
    secret = f"stock-secret-{n:03d}-" + "s" * 32
    app = Application.objects.create(
        name=f"stock-{n}", client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret, hash_client_secret=False,
    )
    lines.append(base64.b64encode(f"{app.client_id}:{secret}".encode()).decode())
open(OUT, "w").write("\\n".join(lines) + "\\n")
"""
