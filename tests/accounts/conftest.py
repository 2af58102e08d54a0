import pytest
from rest_framework.test import APIClient

from accounts.usage import usage_store


@pytest.fixture(autouse=True)
def _fresh_usage_counters():
    """API-key usage counters (Redis hashes, or this process's table) start empty each test."""
    usage_store().reset()
    yield
    usage_store().reset()


def key_client(raw_key: str, *, header: str = "x-api-key", **extra) -> APIClient:
    """A client sending `raw_key` as `X-API-Key` (or `Authorization: Api-Key` with header=...)."""
    client = APIClient()
    if header == "x-api-key":
        client.credentials(HTTP_X_API_KEY=raw_key, **extra)
    else:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}", **extra)
    return client
