"""config.middleware.client_ip: the address audit events and rate limits see."""

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address
from django.test import RequestFactory, override_settings

from config.middleware import _is_ip_address, client_ip

ADDRESSES = [
    "127.0.0.1",
    "10.0.0.255",
    "256.1.1.1",
    "1.2.3",
    "::1",
    "fe80::1",
    "::ffff:1.2.3.4",
    "2001:db8:85a3:0:0:8a2e:370:7334",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",  # 39 characters, the longest Django takes
    "2001:0db8:85a3:0000:0000:8a2e:0370:73340",
    "0000:0000:0000:0000:0000:ffff:255.255.255.255",
    "fe80::1%eth0",
    "",
    "unknown",
    "1.2.3.4 ",
    "x" * 10_000,
]


def _django_says(address: str) -> bool:
    try:
        validate_ipv46_address(address)
    except ValidationError:
        return False
    return True


def _request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


@pytest.mark.parametrize("address", ADDRESSES, ids=lambda a: a[:45] or "empty")
def test_an_address_is_taken_exactly_when_django_s_validator_takes_it(address):
    expected = address if _django_says(address) else None

    assert client_ip(_request(address)) == expected
    assert client_ip(_request(address)) == expected  # the kept answer, the same


@override_settings(TRUSTED_PROXY_COUNT=2)
def test_behind_proxies_the_address_is_the_one_they_saw():
    assert client_ip(_request("10.0.0.9", "203.0.113.7, 198.51.100.2")) == "203.0.113.7"
    assert client_ip(_request("10.0.0.9", "198.51.100.2")) == "10.0.0.9"
    assert client_ip(_request("10.0.0.9", "not-an-address, 198.51.100.2")) is None


def test_answers_kept_are_bounded_and_long_values_never_reach_them():
    _is_ip_address.cache_clear()

    for n in range(5000):
        client_ip(_request(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}"))
    asked = _is_ip_address.cache_info()
    assert asked.currsize == asked.maxsize == 4096

    assert client_ip(_request("y" * 100_000)) is None
    assert client_ip(_request("1" * 40)) is None
    after = _is_ip_address.cache_info()
    assert (after.hits, after.misses) == (asked.hits, asked.misses)
