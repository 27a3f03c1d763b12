"""The agent page, with its DID: the identifier, its keys and their status, and a rotate-key
action through the DID service (the agents app cannot know about DIDs: this one extends it)."""

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from agentidp.admin import run_service_action
from agents.admin import AgentAdmin
from agents.models import Agent
from did.models import AgentDidKey
from did.services import did_key_rotate


class AgentWithDidAdmin(AgentAdmin):
    readonly_fields = [*AgentAdmin.readonly_fields, "did", "did_created_at", "did_keys"]
    actions = [*AgentAdmin.actions, "rotate_did_key"]

    @admin.display(description="DID keys")
    def did_keys(self, obj: Agent) -> str:
        keys = AgentDidKey.objects.filter(
            organization_id=obj.organization_id, agent_id=obj.id
        ).order_by("created_at")
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    key.kid,
                    key.algorithm,
                    key.status,
                    "ours (secret store)" if key.custodial else "the agent's",
                    key.retired_at or key.created_at,
                )
                for key in keys
            ),
        )
        if not rows:
            return "none"
        return format_html(
            '<table class="agentidp-detail"><thead><tr><th>kid</th><th>algorithm</th>'
            "<th>status</th><th>private key</th><th>since</th></tr></thead><tbody>{}</tbody>"
            "</table>",
            rows,
        )

    @admin.action(permissions=["write"], description="Rotate the DID key of selected agents")
    def rotate_did_key(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        run_service_action(
            self,
            request,
            queryset,
            lambda actor, agent: did_key_rotate(
                actor=actor, organization_id=agent.organization_id, agent_id=agent.id
            ),
            "Rotated the DID key of",
        )


admin.site.unregister(Agent)
admin.site.register(Agent, AgentWithDidAdmin)
