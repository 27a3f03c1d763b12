"""WSGI entry point for gunicorn: refuses to serve a configuration the security checks reject
(gunicorn runs no system checks of its own)."""

import os

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentidp.settings")

application = get_wsgi_application()

_refusals = [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.is_serious()]
if _refusals:
    raise ImproperlyConfigured("; ".join(f"{m.id}: {m.msg} {m.hint}" for m in _refusals))
