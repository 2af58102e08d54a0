"""Concurrent writers against the quick start's embedded SQLite database.

The ASGI server runs each sync request on a thread of its own, and the Celery worker and beat
write to the same file; without WAL, IMMEDIATE transactions and a busy timeout, SQLite answered
such bursts with `database is locked` (500).
"""

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings

from .client import call, token_for

pytestmark = pytest.mark.live

THEME_PATCHES = 24
CONCURRENT_REQUESTS = 12
TENANT_WRITERS = 20


def _theme_updates(url: str, token: str) -> int:
    answer = call(
        url,
        "GET",
        "/api/v1/audit/events/?event_type=theme.updated&page_size=100",
        token=token,
        organization="acme",
    )
    assert answer.status == 200, answer
    assert answer.body["next"] is None, "more theme.updated events than one page holds"
    return len(answer.body["results"])


def test_concurrent_theme_patches_all_succeed(quick_start):
    url = quick_start.url
    token = token_for(url, "owner@acme.example.com")
    events_before = _theme_updates(url, token)
    colors = [f"#1122{index:02x}" for index in range(THEME_PATCHES)]

    def patch(color):
        return call(
            url,
            "PATCH",
            "/api/v1/organizations/theme/",
            token=token,
            organization="acme",
            body={"primary_color": color},
        )

    with ThreadPoolExecutor(max_workers=CONCURRENT_REQUESTS) as pool:
        answers = list(pool.map(patch, colors))

    failures = [answer for answer in answers if answer.status != 200]
    assert failures == []
    assert len(answers) == THEME_PATCHES
    assert [answer.body["primary_color"] for answer in answers] == colors
    final = call(url, "GET", "/api/v1/organizations/theme/", token=token, organization="acme")
    assert final.status == 200
    assert final.body["primary_color"] in colors
    # Each PATCH committed exactly once, with its audit event.
    assert _theme_updates(url, token) == events_before + THEME_PATCHES
    quick_start.assert_healthy()


def test_concurrent_tenant_creation_answers_each_and_keeps_the_ceiling(quick_start):
    """More creations at once than one user may own: each answers (201, or 409 past the
    ceiling, never a locked database), and exactly as many are made as the ceiling leaves."""
    url = quick_start.url
    # Not the acme owner, whom the README test needs to be a member of acme only.
    token = token_for(url, "owner@globex.example.com")
    owned_before = 1  # globex, from the demo data
    room = settings.ORGANIZATIONS_PER_USER - owned_before
    assert 0 < room < TENANT_WRITERS
    run = uuid.uuid4().hex[:8]
    names = [f"Live {run} {index:02d}" for index in range(TENANT_WRITERS)]
    start_together = threading.Barrier(TENANT_WRITERS)

    def create(name):
        start_together.wait()
        return call(url, "POST", "/api/v1/tenants/", token=token, body={"name": name})

    with ThreadPoolExecutor(max_workers=TENANT_WRITERS) as pool:
        answers = list(pool.map(create, names))

    created = [answer for answer in answers if answer.status == 201]
    refused = [answer for answer in answers if answer.status != 201]
    assert len(created) == room
    assert {answer.status for answer in refused} == {409}
    assert {answer.body["error"]["code"] for answer in refused} == {"CONFLICT"}
    assert len({answer.body["slug"] for answer in created}) == room

    listed = call(url, "GET", "/api/v1/tenants/?page_size=100", token=token)
    assert listed.status == 200
    listed_names = [tenant["name"] for tenant in listed.body["results"]]
    # globex and the ones created here, each once: the ceiling.
    assert listed.body["count"] == settings.ORGANIZATIONS_PER_USER
    assert sorted(name for name in listed_names if name.startswith(f"Live {run} ")) == sorted(
        answer.body["name"] for answer in created
    )
    quick_start.assert_healthy()
