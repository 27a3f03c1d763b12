"""App config for compliance."""

from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    """The tamper-evident audit log and its verification."""

    name = "compliance"
    default_auto_field = "django.db.models.BigAutoField"
