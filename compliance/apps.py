"""App config for compliance."""

from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    """The tamper-evident audit log, its verification, encryption at rest and the controls."""

    name = "compliance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agentidp.metrics import scrape_time_collector
        from compliance.metrics import ComplianceCollector

        scrape_time_collector(ComplianceCollector())
