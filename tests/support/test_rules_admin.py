"""The decision rules' admin "evaluate" action: the selected rules tried on a payload, enabled
or not, with why each holds or not; nothing changes."""

import pytest
from django.test import Client

from audit.models import AuditEvent
from support.models import DecisionRule
from tests.factories import UserFactory

from .factories import DecisionRuleFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/support/decisionrule/"


@pytest.fixture
def admin_client():
    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def _evaluate(admin_client, rules, payload: str, apply: bool = True):
    body = {"action": "evaluate_payload", "_selected_action": [str(rule.pk) for rule in rules]}
    if apply:
        body.update(apply="1", payload=payload)
    return admin_client.post(CHANGELIST, body, follow=True)


def test_the_form_is_shown_first(admin_client):
    rule = DecisionRuleFactory()

    response = _evaluate(admin_client, [rule], "", apply=False)

    assert response.status_code == 200
    assert 'name="payload"' in response.content.decode()


def test_each_selected_rule_says_whether_it_holds_and_why_not(admin_client):
    holds = DecisionRuleFactory(
        name="Confident",
        enabled=False,
        conditions=[{"field": "confidence", "operator": "gt", "value": 0.9}],
        action="AUTO_RESOLVE",
        action_params={},
    )
    fails = DecisionRuleFactory(
        name="Unhappy",
        conditions=[{"field": "sentiment", "operator": "lt", "value": -0.5}],
    )
    events = AuditEvent.objects.count()

    response = _evaluate(admin_client, [holds, fails], '{"confidence": 0.97}')

    messages = [str(message) for message in response.context["messages"]]
    assert any(m.startswith("Confident: holds, so AUTO_RESOLVE") for m in messages)
    assert any("Unhappy: does not hold: sentiment lt -0.5 (missing)" in m for m in messages)
    # A test only: nothing recorded, nothing changed.
    assert AuditEvent.objects.count() == events
    assert DecisionRule.objects.get(pk=holds.pk).enabled is False


@pytest.mark.parametrize("payload", ["[1, 2]", "not json", '"text"'])
def test_a_payload_that_is_not_an_object_is_asked_again(admin_client, payload):
    rule = DecisionRuleFactory()

    response = _evaluate(admin_client, [rule], payload)

    assert response.status_code == 200
    assert 'name="payload"' in response.content.decode()
    assert not [str(message) for message in response.context["messages"]]
