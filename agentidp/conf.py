"""The project's own options, read from the one ``AGENTIDP`` settings namespace."""

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class AgentIdPSettings:
    """Typed view of ``settings.AGENTIDP``; read it through :func:`agentidp_settings`."""

    issuer: str
    platform_db_role: str
    strict_tenancy: bool
    agent_metadata_max_bytes: int


def agentidp_settings() -> AgentIdPSettings:
    """Return the current options (re-read each call so tests may override settings)."""
    raw: dict[str, object] = settings.AGENTIDP
    return AgentIdPSettings(
        issuer=str(raw["ISSUER"]).rstrip("/"),
        platform_db_role=str(raw["PLATFORM_DB_ROLE"]),
        strict_tenancy=bool(raw["STRICT_TENANCY"]),
        agent_metadata_max_bytes=int(str(raw["AGENT_METADATA_MAX_BYTES"])),
    )
