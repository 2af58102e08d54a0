"""Liveness (/health/) and readiness (/ready/) probes."""

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from kombu import Connection
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from .exceptions import ServiceUnavailable

HealthSerializer = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(),
        "timestamp": serializers.DateTimeField(),
        "service": serializers.CharField(),
        "version": serializers.CharField(),
    },
)
ReadySerializer = inline_serializer(
    "Ready",
    {
        "status": serializers.CharField(),
        "checks": serializers.DictField(child=serializers.CharField()),
    },
)


class ProbeView(APIView):
    authentication_classes = ()
    permission_classes = ()
    throttle_classes = ()


class HealthView(ProbeView):
    """Liveness: the process answers with `status`, `timestamp`, `service` and `version`."""

    @extend_schema(responses={200: HealthSerializer}, auth=[], tags=["platform"])
    def get(self, request):
        return Response(
            {
                "status": "ok",
                "timestamp": timezone.now(),
                "service": settings.SERVICE_NAME,
                "version": settings.SERVICE_VERSION,
            }
        )


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_cache() -> None:
    cache.set("ready-probe", "1", timeout=5)
    if cache.get("ready-probe") != "1":
        raise RuntimeError("cache did not return the value it was given")


def _check_broker() -> None:
    with Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=2,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


READINESS_CHECKS = {"database": _check_database, "cache": _check_cache, "broker": _check_broker}


class ReadyView(ProbeView):
    """Readiness: database, cache and broker reachable; 503 naming each part that is not."""

    @extend_schema(responses={200: ReadySerializer}, auth=[], tags=["platform"])
    def get(self, request):
        checks = {}
        for name, check in READINESS_CHECKS.items():
            try:
                check()
            except Exception as exc:  # any failure of a dependency means "not ready"
                checks[name] = f"error: {exc.__class__.__name__}"
            else:
                checks[name] = "ok"
        failing = [name for name, result in checks.items() if result != "ok"]
        if failing:
            raise ServiceUnavailable(
                f"Not ready: {', '.join(failing)} unreachable.", details={"checks": checks}
            )
        return Response({"status": "ok", "checks": checks})
