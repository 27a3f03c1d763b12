"""Factories that create data through the services, in the context a real caller would use."""

import uuid
from typing import Any

import factory
from django.contrib.auth.models import User

from agentidp.principals import Principal
from agentidp.tenancy import platform_context, tenant_context
from agents.models import Agent
from agents.services import agent_register
from organizations.choices import MemberRole, Plan
from organizations.models import Organization, StaffMembership
from organizations.services import organization_create, staff_create

TEST_ACTOR = Principal.system("tests")


class OrganizationFactory(factory.Factory):
    class Meta:
        model = Organization

    slug = factory.LazyFunction(lambda: f"org-{uuid.uuid4().hex[:10]}")
    name = factory.LazyAttribute(lambda o: f"Organization {o.slug}")
    plan = Plan.PRO
    max_agents = None
    max_tokens_per_month = None

    @classmethod
    def _create(cls, model_class: type[Organization], **kwargs: Any) -> Organization:
        with platform_context(reason="tests"):
            return organization_create(actor=TEST_ACTOR, **kwargs)


class AgentFactory(factory.Factory):
    class Meta:
        model = Agent

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"agent-{n}")
    description = "An agent under test"
    capabilities = factory.LazyFunction(lambda: ["search"])
    metadata = factory.LazyFunction(dict)

    @classmethod
    def _create(cls, model_class: type[Agent], **kwargs: Any) -> Agent:
        organization: Organization = kwargs.pop("organization")
        if "sponsor" not in kwargs:
            kwargs["sponsor"] = sponsor_for(organization)
        with tenant_context(organization.id):
            return agent_register(actor=TEST_ACTOR, organization_id=organization.id, **kwargs)


def sponsor_for(organization: Organization) -> str | None:
    """Who sponsors the agents the factory registers: the organization's longest-standing owner
    (None: the service finds them), else its longest-standing person, else a person of the
    organization made for it, ``sponsor-<slug>``, a member set up in rows only (no audit
    event, no owner), so tests count the events, people and owners of what they do."""
    with platform_context(reason="tests"):
        people = StaffMembership.objects.filter(
            organization_id=organization.id, user__is_active=True
        ).order_by("created_at", "id")
        if people.filter(role=MemberRole.OWNER).exists():
            return None
        person = people.select_related("user").first()
        if person is not None:
            return str(person.user.username)
        slug = Organization.objects.get(id=organization.id).slug
        user, created = User.objects.get_or_create(
            username=f"sponsor-{slug}", defaults={"is_staff": True}
        )
        if created:
            user.set_unusable_password()
            user.save()
            StaffMembership.objects.create(
                user=user, organization_id=organization.id, role=MemberRole.MEMBER
            )
        return str(user.username)


class StaffFactory(factory.Factory):
    class Meta:
        model = User

    organization = factory.SubFactory(OrganizationFactory)
    username = factory.LazyFunction(lambda: f"staff-{uuid.uuid4().hex[:10]}")
    password = "correct-horse-battery"  # noqa: S105 - a test login
    role = MemberRole.ADMIN
    superuser = False

    @classmethod
    def _create(cls, model_class: type[User], **kwargs: Any) -> User:
        organization: Organization = kwargs.pop("organization")
        with platform_context(reason="tests"):
            return staff_create(actor=TEST_ACTOR, organization_id=organization.id, **kwargs)
