"""`manage.py gateway_status`: how each model is served, cooldowns, and clearing one."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from playground import cooldown
from playground.models import LanguageModel
from tests.playground.factories import ProviderFactory

pytestmark = pytest.mark.django_db


def status() -> dict[str, str]:
    out = StringIO()
    call_command("gateway_status", stdout=out)
    return {line.split()[0]: line for line in out.getvalue().splitlines()}


def test_models_without_a_configured_upstream_are_served_locally():
    lines = status()

    assert set(lines) >= {"gpt-4", "claude-3-haiku", "o1-mini"}
    assert lines["gpt-4"].split()[2] == "local"


def test_a_configured_provider_serves_its_models_upstream(settings):
    provider = ProviderFactory(name="vllm", base_url="http://vllm.internal:8000/v1")
    LanguageModel.objects.filter(name="gpt-4").update(provider=provider)

    assert "vllm (openai) as gpt-4" in status()["gpt-4"]


def test_cooling_down_models_are_flagged_and_clear_ends_it(settings):
    settings.GATEWAY_COOLDOWN_FAILURES = 1
    cooldown.record_failures(["gpt-4"])
    assert "COOLING DOWN" in status()["gpt-4"]

    call_command("gateway_status", clear="gpt-4", stdout=StringIO())

    assert "COOLING DOWN" not in status()["gpt-4"]
    assert cooldown.cooling_down(["gpt-4"]).names == set()


def test_clearing_an_unknown_model_is_an_error():
    with pytest.raises(CommandError, match="No model named"):
        call_command("gateway_status", clear="gpt-9")


# The per-process catalogue cache ------------------------------------------------------------


def test_the_catalogue_is_kept_for_its_ttl_and_a_service_change_clears_it(
    settings, django_capture_on_commit_callbacks
):
    from playground.services import catalogue
    from playground.services.gateway import catalogue_cache

    settings.GATEWAY_CATALOGUE_CACHE_SECONDS = 60
    catalogue_cache.clear()
    assert catalogue_cache.models()["gpt-4"].input_price_micros == 30_000_000

    LanguageModel.objects.filter(name="gpt-4").update(input_price_micros=1)  # behind its back
    assert catalogue_cache.models()["gpt-4"].input_price_micros == 30_000_000

    with django_capture_on_commit_callbacks(execute=True):
        catalogue.language_model_update(
            model=LanguageModel.objects.get(name="gpt-4"), actor=None, input_price_micros=2
        )
    assert catalogue_cache.models()["gpt-4"].input_price_micros == 2
    catalogue_cache.clear()


def test_a_models_provider_change_is_audited_by_name():
    from audit.models import AuditEvent
    from playground.services import catalogue

    provider = ProviderFactory(name="vllm")
    catalogue.language_model_update(
        model=LanguageModel.objects.get(name="gpt-4"), actor=None, provider=provider
    )

    event = AuditEvent.objects.filter(event_type="gateway.model.updated").latest("created_at")
    assert event.payload["changes"]["provider"] == {"from": "openai", "to": "vllm"}
    assert event.payload["provider"] == "vllm"
