"""Celery: a real worker consumes from Redis and runs a task against the database; beat's
schedule names registered tasks and is kept in django-celery-beat's tables."""

import secrets
import time
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from celery.utils.imports import symbol_by_name
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone
from django_celery_beat.schedulers import DatabaseScheduler

from accounts.models import AuthToken
from accounts.tasks import purge_expired_auth_tokens
from audit.models import AuditEvent
from config.celery import app
from config.connections import leave_connection_pool
from tenants.models import Tenant
from tenants.services.quotas import quota_consume, quota_states
from tenants.tasks import reset_due_quotas
from tests.factories import TenantFactory, UserFactory

WORKER_DEADLINE_SECONDS = 20


def auth_token(user, *, expires_in: timedelta) -> AuthToken:
    return AuthToken.objects.create(
        digest=secrets.token_hex(32), user=user, expires_at=timezone.now() + expires_in
    )


@pytest.mark.postgres
@pytest.mark.redis
def test_real_worker_purges_expired_tokens_through_redis(transactional_db):
    assert app.conf.broker_url.startswith("redis://"), app.conf.broker_url
    user = UserFactory()
    expired = auth_token(user, expires_in=-timedelta(minutes=1))
    valid = auth_token(user, expires_in=timedelta(hours=1))

    with start_worker(app, perform_ping_check=False):
        purge_expired_auth_tokens.delay()
        deadline = time.monotonic() + WORKER_DEADLINE_SECONDS
        while AuthToken.objects.filter(pk=expired.pk).exists():
            assert time.monotonic() < deadline, "the worker did not purge the expired token"
            time.sleep(0.1)

    assert AuthToken.objects.filter(pk=valid.pk).exists()


@pytest.mark.postgres
@pytest.mark.redis
def test_real_worker_resets_a_due_quota_through_redis(transactional_db):
    assert app.conf.broker_url.startswith("redis://"), app.conf.broker_url
    due = TenantFactory(quota_reset_at=timezone.now() - timedelta(seconds=1))
    not_due = TenantFactory()
    for tenant in (due, not_due):
        quota_consume(tenant=tenant, resource="api_calls", amount=9)

    with start_worker(app, perform_ping_check=False):
        reset_due_quotas.delay()
        deadline = time.monotonic() + WORKER_DEADLINE_SECONDS
        while Tenant.objects.get(pk=due.pk).quota_reset_at <= timezone.now():
            assert time.monotonic() < deadline, "the worker did not reset the due quota"
            time.sleep(0.1)

    live = {
        t.pk: quota_states(Tenant.objects.get(pk=t.pk))["api_calls"].current for t in (due, not_due)
    }
    assert live == {due.pk: 0, not_due.pk: 9}
    assert AuditEvent.objects.filter(tenant=due, event_type="quota.reset").count() == 1


@pytest.fixture
def pooled_connections():
    """psycopg's pool turned on in this process, as DATABASE_POOL=true does; off again after."""
    settings_dict = connections.settings["default"]
    assert connection.settings_dict is settings_dict
    connection.close()
    kept_age = settings_dict["CONN_MAX_AGE"]
    settings_dict["CONN_MAX_AGE"] = 0
    settings_dict["OPTIONS"]["pool"] = {"min_size": 1, "max_size": 4, "timeout": 10.0}
    yield
    leave_connection_pool()  # when the worker did not already
    settings_dict["CONN_MAX_AGE"] = kept_age


@pytest.mark.postgres
@pytest.mark.redis
def test_a_worker_started_with_the_pool_on_leaves_it_and_keeps_working(
    transactional_db, pooled_connections
):
    """As its solo pool (or a forked child) starts, Django's Celery fixup closes the file
    descriptor of the connection the process holds, then the connection, which a pool would
    take back with its descriptor closed: the next query given it waited for ever (or wrote to
    whatever reused the descriptor). A worker serves its connections without the pool."""
    user = UserFactory()
    expired = auth_token(user, expires_in=-timedelta(minutes=1))
    assert connection.pool is not None and connection.connection is not None

    with start_worker(app, perform_ping_check=False):
        assert connection.pool is None
        assert "default" not in type(connections["default"])._connection_pools
        purge_expired_auth_tokens.delay()
        deadline = time.monotonic() + WORKER_DEADLINE_SECONDS
        while AuthToken.objects.filter(pk=expired.pk).exists():
            assert time.monotonic() < deadline, "the worker did not purge the expired token"
            time.sleep(0.1)

    for _ in range(3):  # new connections, each working
        connection.close()
        assert AuthToken.objects.filter(user=user).count() == 0


def test_quota_reset_is_scheduled():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert reset_due_quotas.name in tasks


def test_beat_schedule_names_registered_tasks():
    app.loader.import_default_modules()

    unknown = {
        name: entry["task"]
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
        if entry["task"] not in app.tasks
    }

    assert settings.CELERY_BEAT_SCHEDULE
    assert not unknown, f"beat entries naming unregistered tasks: {unknown}"


def test_token_purge_is_scheduled():
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}

    assert purge_expired_auth_tokens.name in tasks


def test_beat_uses_the_database_scheduler():
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
    assert app.conf.beat_scheduler == settings.CELERY_BEAT_SCHEDULER
    assert symbol_by_name(app.conf.beat_scheduler) is DatabaseScheduler
