"""Lookalike names: NFKC first, then no invisible or bidi control characters and no mixed
scripts, so a name shown in the admin or an audit log is the name it looks like."""

from typing import Any

import pytest
from rest_framework.test import APIClient

from agents.models import Agent


def create(api: APIClient, name: str) -> Any:
    return api.post("/agents", {"name": name}, format="json")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("p\u0430ypal", "mixes the scripts CYRILLIC, LATIN"),
        ("pay\u200bpal", "U+200B"),
        ("pay\u200dpal", "U+200D"),
        ("\u202egnp.exe", "U+202E"),
        ("admin\u2066x\u2069", "U+2066"),
        ("\ufeffbot", "U+FEFF"),
        ("line\u2028break", "U+2028"),
        ("bell\x07", "U+0007"),
        ("private\ue000", "U+E000"),
        ("\u0391lpha", "mixes the scripts GREEK, LATIN"),
        ("   ", "blank"),
    ],
)
def test_lookalike_agent_names_are_refused(api: APIClient, name: str, why: str) -> None:
    response = create(api, name)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert why in " ".join(response.json()["errors"]["name"])


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("\uff50\uff41\uff59\uff50\uff41\uff4c", "paypal"),  # fullwidth
        ("cafe\u0301", "caf\u00e9"),  # decomposed accent, composed
        ("\ufb01nder", "finder"),  # the fi ligature
        ("東京 agent", "東京 agent"),
        ("エージェント-7", "エージェント-7"),
        ("Ελληνικά", "Ελληνικά"),
        ("  spaced  ", "spaced"),
    ],
)
def test_names_are_stored_nfkc_normalized(api: APIClient, name: str, stored: str) -> None:
    response = create(api, name)
    assert response.status_code == 201, response.content
    assert response.json()["name"] == stored


def test_a_normalized_twin_collides_with_the_original(api: APIClient) -> None:
    assert create(api, "paypal").status_code == 201
    response = create(api, "\uff50\uff41\uff59\uff50\uff41\uff4c")
    assert response.status_code == 409, response.content


def test_renaming_goes_through_the_same_rule(api: APIClient, agent: Agent) -> None:
    response = api.patch(f"/agents/{agent.id}", {"name": "a\u200bb"}, format="json")
    assert response.status_code == 400
    response = api.patch(f"/agents/{agent.id}", {"name": "\uff41\uff42"}, format="json")
    assert response.status_code == 200 and response.json()["name"] == "ab"


@pytest.mark.parametrize(
    ("field", "value"),
    [("slug", "Acme_Corp"), ("slug", "аcme"), ("slug", "-acme"), ("name", "Acme\u202e")],
)
def test_organization_slugs_and_names(platform_api: APIClient, field: str, value: str) -> None:
    body = {"slug": "acme-lookalike", "name": "Acme", field: value}
    response = platform_api.post("/organizations", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
