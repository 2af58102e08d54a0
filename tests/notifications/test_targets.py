"""The SSRF guard (notifications.targets) and how the sender uses it: no spelling of a loopback,
private, link-local or otherwise non-public address gets a webhook, neither when the endpoint
is created through the API nor when a delivery is sent (the check that is the guarantee); the
request goes to the address that was checked; redirects are not followed; time and answer size
are bounded.

DNS is played by `FakeDNS` (the machine is offline and no test may depend on real DNS): IP
literals in every spelling the system resolver accepts and `localhost` resolve as usual, the
test names below resolve to what the table says, and any other name does not resolve.
"""

import json
import socket
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from notifications import targets
from notifications.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from notifications.services import endpoints, webhook_deliveries_send
from tests.conftest import assert_envelope

from .factories import WebhookDeliveryFactory
from .receiver import Answer, Receiver

pytestmark = pytest.mark.django_db

_SYSTEM_RESOLVE = targets._resolve  # the real resolver, for IP literals and localhost only

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:4700::1111"
# A port for URLs that are never connected to (the API tests: creation does not send).
UNUSED_PORT = 9

TEST_NAMES = {
    "internal.example.test": ["10.0.0.5"],
    "rebind.example.test": [PUBLIC_V4, "127.0.0.1"],  # one public answer, one loopback one
    "metadata.example.test": ["169.254.169.254"],
    "v6-loopback.example.test": ["::1"],
    "mapped-private.example.test": ["::ffff:192.168.0.1"],
    "public.example.test": [PUBLIC_V4],
}


class FakeDNS:
    """A stand-in for targets.resolver that records every lookup and never asks a DNS server.

    `answers[name]` is a list of addresses, or a callable returning one (to answer differently
    from one lookup to the next)."""

    def __init__(self, answers):
        self.answers = dict(answers)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host in self.answers:
            answer = self.answers[host]
            return list(answer() if callable(answer) else answer)
        try:
            infos = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            if host.encode("idna") == b"localhost":  # also ⓛocalhost and the like
                return _SYSTEM_RESOLVE(host, port)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return list(dict.fromkeys(info[4][0] for info in infos))


@pytest.fixture(autouse=True)
def dns(monkeypatch):
    fake = FakeDNS(TEST_NAMES)
    monkeypatch.setattr(targets, "resolver", fake)
    return fake


@pytest.fixture
def hostile(settings):
    """Production rules, except that plain http is allowed (so the http corpus reaches the
    address checks; the https rule has tests of its own)."""
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    settings.WEBHOOKS_ALLOW_HTTP = True
    return settings


# A Receiver takes half a second to stop (its serve loop polls twice a second): the tests of a
# module share two, reset before each test.
@pytest.fixture(scope="module")
def _receivers():
    with Receiver() as first, Receiver() as second:
        yield first, second


def _reset(live: Receiver) -> Receiver:
    with live.lock:
        live.requests.clear()
        live.scripted.clear()
        live.default = Answer()
    return live


@pytest.fixture
def receiver(_receivers):
    return _reset(_receivers[0])


@pytest.fixture
def other_receiver(_receivers):
    return _reset(_receivers[1])


# (id, URL with {port} standing for the live receiver's port, words the refusal must contain)
HOSTILE_URLS = [
    # Loopback, however it is spelled.
    ("decimal-ipv4", "http://2130706433:{port}/", "loopback"),
    ("octal-ipv4", "http://0177.0.0.1:{port}/", "loopback"),
    ("octal-single-number", "http://017700000001:{port}/", "loopback"),
    ("hex-ipv4", "http://0x7f000001:{port}/", "loopback"),
    ("hex-dotted-ipv4", "http://0x7f.0x0.0x0.0x1:{port}/", "loopback"),
    ("short-ipv4", "http://127.1:{port}/", "loopback"),
    ("loopback-not-dot-1", "http://127.0.0.2:{port}/", "loopback"),
    ("trailing-dot-ipv4", "http://127.0.0.1.:{port}/", "loopback"),
    ("upper-case-scheme", "HTTP://127.0.0.1:{port}/", "loopback"),
    ("ipv6-loopback", "http://[::1]:{port}/", "loopback"),
    ("ipv4-mapped-ipv6", "http://[::ffff:127.0.0.1]:{port}/", "loopback"),
    ("ipv4-mapped-ipv6-hex", "http://[::ffff:7f00:1]:{port}/", "loopback"),
    ("ipv4-compatible-ipv6", "http://[::127.0.0.1]:{port}/", "loopback"),
    ("6to4", "http://[2002:7f00:1::]:{port}/", "loopback"),
    ("nat64", "http://[64:ff9b::7f00:1]:{port}/", "loopback"),
    ("teredo", "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/", "loopback"),
    ("localhost", "http://localhost:{port}/", "loopback"),
    ("localhost-trailing-dot", "http://localhost.:{port}/", "loopback"),
    ("localhost-upper-case", "http://LOCALHOST:{port}/", "loopback"),
    ("localhost-circled-l", "http://\u24dbocalhost:{port}/", "loopback"),
    ("ideographic-full-stops", "http://127\u30020\u30020\u30021:{port}/", "loopback"),
    # Unspecified: Linux connects 0.0.0.0 to local listeners.
    ("zero-ipv4", "http://0.0.0.0:{port}/", "unspecified"),
    ("zero-short", "http://0:{port}/", "unspecified"),
    ("zero-ipv6", "http://[::]:{port}/", "unspecified"),
    # Private networks.
    ("rfc1918-10", "http://10.0.0.1/", "private"),
    ("rfc1918-172-16", "http://172.16.0.1/", "private"),
    ("rfc1918-172-31", "http://172.31.255.254/", "private"),
    ("rfc1918-192-168", "http://192.168.1.1/", "private"),
    ("carrier-grade-nat", "http://100.64.0.1/", "private"),
    ("ipv6-unique-local", "http://[fc00::1]/", "private"),
    ("aws-metadata-ipv6", "http://[fd00:ec2::254]/latest/meta-data/", "private"),
    # Link-local: the cloud metadata services.
    ("metadata", "http://169.254.169.254/latest/meta-data/", "link-local"),
    ("metadata-decimal", "http://2852039166/latest/meta-data/", "link-local"),
    ("metadata-mapped-ipv6", "http://[::ffff:169.254.169.254]/", "link-local"),
    ("metadata-nat64", "http://[64:ff9b::a9fe:a9fe]/", "link-local"),
    ("ipv6-link-local", "http://[fe80::1]/", "link-local"),
    ("ipv6-zone-id", "http://[fe80::1%25eth0]/", "zone"),
    # Multicast, broadcast, documentation and other reserved ranges.
    ("multicast-ipv4", "http://224.0.0.1/", "multicast"),
    ("multicast-ipv6", "http://[ff02::1]/", "multicast"),
    ("broadcast", "http://255.255.255.255/", "reserved"),
    ("documentation-ipv4", "http://192.0.2.1/", "reserved"),
    ("documentation-ipv6", "http://[2001:db8::1]/", "reserved"),
    ("this-network", "http://0.1.2.3/", "reserved"),
    # Names whose DNS answers are not public.
    ("name-to-private", "http://internal.example.test:{port}/", "private"),
    ("name-public-and-loopback", "http://rebind.example.test:{port}/", "loopback"),
    ("name-to-metadata", "http://metadata.example.test/", "link-local"),
    ("name-to-ipv6-loopback", "http://v6-loopback.example.test:{port}/", "loopback"),
    ("name-to-mapped-private", "http://mapped-private.example.test/", "private"),
    # User information: refused whatever the host (the classic parser confusions).
    ("userinfo-public-looking", "http://example.com@127.0.0.1:{port}/", "user name"),
    ("userinfo-port-looking", "http://127.0.0.1:{port}@example.com/", "user name"),
    ("userinfo-user-password", "http://user:pass@127.0.0.1:{port}/", "user name"),
    ("userinfo-empty", "http://@127.0.0.1:{port}/", "user name"),
    ("userinfo-backslash", "http://example.com\\@127.0.0.1:{port}/", "user name"),
    # Other schemes.
    ("file", "file:///etc/passwd", "https"),
    ("gopher", "gopher://127.0.0.1:{port}/_POST%20/", "https"),
    ("ftp", "ftp://127.0.0.1:{port}/", "https"),
    ("dict", "dict://127.0.0.1:{port}/info", "https"),
    ("javascript", "javascript:alert(1)", "https"),
    ("data", "data:text/plain,hello", "https"),
    ("scheme-relative", "//127.0.0.1:{port}/", "https"),
    # Whitespace and control characters (header injection, parser differences).
    ("space", "http://127.0.0.1:{port}/a b", "control"),
    ("newline-header-injection", "http://127.0.0.1:{port}/\nX-Injected: 1", "control"),
    ("tab-in-host", "http://127.0.0.1\t:{port}/", "control"),
    ("control-character", "http://127.0.0.1:{port}/\x01", "control"),
    # No host, impossible ports, too long.
    ("empty-host", "http:///x", "no host"),
    ("port-only", "http://:{port}/", "no host"),
    ("port-zero", "http://127.0.0.1:0/", "port"),
    ("port-too-large", "http://127.0.0.1:65536/", "port"),
    ("port-not-a-number", "http://127.0.0.1:80:80/", "port"),
    ("too-long", "http://127.0.0.1:{port}/" + "a" * 2000, "2000"),
]
# Longer than the URL column: no endpoint can hold it, so it never reaches sending.
_NOT_STORABLE = {"too-long"}


def _params(corpus):
    return [pytest.param(url, reason, id=name) for name, url, reason in corpus]


def test_the_corpus_is_large_and_every_entry_is_distinct():
    urls = [url for _, url, _ in HOSTILE_URLS]
    assert len(urls) >= 30
    assert len(set(urls)) == len(urls)
    assert len({name for name, _, _ in HOSTILE_URLS}) == len(urls)


@pytest.mark.parametrize(("url", "reason"), _params(HOSTILE_URLS))
def test_the_guard_refuses_a_hostile_url_naming_the_reason(hostile, url, reason):
    with pytest.raises(targets.ForbiddenTarget) as refused:
        targets.check(url.format(port=UNUSED_PORT))
    assert not isinstance(refused.value, targets.UnresolvableTarget)
    assert reason in str(refused.value).lower()


@pytest.mark.parametrize(("url", "reason"), _params(HOSTILE_URLS))
def test_creating_an_endpoint_for_a_hostile_url_is_a_400_naming_the_reason(
    hostile, owner, url, reason
):
    response = owner.client.post(
        "/api/v1/webhooks/",
        {"name": "Hostile", "url": url.format(port=UNUSED_PORT), "events": ["*"]},
        format="json",
    )
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "url" in error["details"], error
    explained = f"{error['message']} {json.dumps(error['details'])}".lower()
    assert reason in explained, error
    assert not WebhookEndpoint.objects.exists()
    assert not AuditEvent.objects.filter(event_type="webhook.endpoint.created").exists()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://0x7f000001/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://internal.example.test/", "private"),
        ("http://example.com@127.0.0.1/", "user name"),
    ],
)
def test_moving_an_endpoint_to_a_hostile_url_is_a_400_and_keeps_the_old_url(
    hostile, owner, url, reason
):
    response = owner.client.post(
        "/api/v1/webhooks/",
        {"name": "Moving", "url": "http://public.example.test/hooks", "events": ["*"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    endpoint_id = response.json()["id"]

    response = owner.client.patch(f"/api/v1/webhooks/{endpoint_id}/", {"url": url}, format="json")

    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert reason in f"{error['message']} {json.dumps(error['details'])}".lower()
    assert WebhookEndpoint.objects.get(pk=endpoint_id).url == "http://public.example.test/hooks"
    assert not AuditEvent.objects.filter(event_type="webhook.endpoint.updated").exists()


def _send_all():
    return webhook_deliveries_send(concurrency=1)


def _only_attempt(delivery: WebhookDelivery):
    delivery.refresh_from_db()
    (attempt,) = delivery.attempts.all()
    return delivery, attempt


@pytest.mark.parametrize(
    ("url", "reason"),
    _params(entry for entry in HOSTILE_URLS if entry[0] not in _NOT_STORABLE),
)
def test_a_delivery_to_a_hostile_url_sends_nothing_and_fails_for_good(
    hostile, receiver, url, reason
):
    # Inserted without the service, as if the URL had been accepted when the rules differed.
    delivery = WebhookDeliveryFactory(endpoint__url=url.format(port=receiver.port))

    report = _send_all()

    assert receiver.requests == []
    delivery, attempt = _only_attempt(delivery)
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.next_attempt_at is None and delivery.attempt_count == 1
    assert attempt.error.startswith("Not sent"), attempt.error
    assert reason in attempt.error.lower(), attempt.error
    assert not attempt.succeeded and attempt.status_code is None
    assert (report.claimed, report.succeeded, report.failed) == (1, 0, 1)


# The same spellings reach the receiver when private targets are allowed: the guard, not an
# accident of parsing, is what keeps the hostile corpus from being sent.
@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433:{port}/hooks",
        "http://0177.0.0.1:{port}/hooks",
        "http://0x7f000001:{port}/hooks",
        "http://127.1:{port}/hooks",
        "http://localhost.:{port}/hooks",
        "http://[::ffff:127.0.0.1]:{port}/hooks",
    ],
)
def test_with_private_targets_allowed_the_same_spellings_reach_the_receiver(
    settings, receiver, url
):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    delivery = WebhookDeliveryFactory(endpoint__url=url.format(port=receiver.port))

    _send_all()

    (request,) = receiver.requests
    assert request.path == "/hooks"
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://0.0.0.0:{port}/hooks", "unspecified"),
        ("http://[::ffff:0.0.0.0]:{port}/hooks", "unspecified"),
        ("http://169.254.169.254:{port}/latest/meta-data/", "link-local"),
        ("http://224.0.0.1:{port}/", "multicast"),
    ],
)
def test_with_private_targets_allowed_unspecified_link_local_and_multicast_are_not_sent(
    settings, receiver, url, reason
):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    delivery = WebhookDeliveryFactory(endpoint__url=url.format(port=receiver.port))

    _send_all()

    assert receiver.requests == []
    delivery, attempt = _only_attempt(delivery)
    assert delivery.status == DeliveryStatus.FAILED
    assert attempt.error.startswith("Not sent") and reason in attempt.error


# https and http ------------------------------------------------------------------------------


def test_http_is_refused_when_only_https_is_allowed(settings, owner):
    settings.WEBHOOKS_ALLOW_HTTP = False
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(targets.ForbiddenTarget, match="https"):
        targets.check("http://public.example.test/hooks")

    response = owner.client.post(
        "/api/v1/webhooks/",
        {"name": "Plain", "url": "http://public.example.test/hooks", "events": ["*"]},
        format="json",
    )
    error = assert_envelope(response, 400, "VALIDATION_ERROR")
    assert "https" in error["message"] and "url" in error["details"]
    assert not WebhookEndpoint.objects.exists()


def test_http_is_not_sent_when_only_https_is_allowed_even_to_an_allowed_address(settings, receiver):
    settings.WEBHOOKS_ALLOW_HTTP = False
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    delivery = WebhookDeliveryFactory(endpoint__url=receiver.url)

    _send_all()

    assert receiver.requests == []
    delivery, attempt = _only_attempt(delivery)
    assert delivery.status == DeliveryStatus.FAILED
    assert attempt.error.startswith("Not sent") and "https" in attempt.error


def test_https_to_a_public_name_is_accepted_and_connects_to_the_resolved_address(settings):
    settings.WEBHOOKS_ALLOW_HTTP = False
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False

    target = targets.check("https://Public.Example.Test./hooks?topic=a")

    assert target == targets.Target(
        scheme="https",
        host="public.example.test",
        port=443,
        path="/hooks?topic=a",
        address=PUBLIC_V4,
    )
    assert target.connect_url == f"https://{PUBLIC_V4}:443/hooks?topic=a"
    assert target.host_header == "public.example.test"


def test_https_to_a_public_ipv6_literal_is_accepted(settings):
    settings.WEBHOOKS_ALLOW_HTTP = False
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False

    target = targets.check(f"https://[{PUBLIC_V6}]:8443/in")

    assert target.address == PUBLIC_V6
    assert target.connect_url == f"https://[{PUBLIC_V6}]:8443/in"
    assert target.host_header == f"[{PUBLIC_V6}]:8443"


def test_an_https_endpoint_on_a_public_name_is_created(settings, owner):
    settings.WEBHOOKS_ALLOW_HTTP = False
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    url = "https://public.example.test/hooks"

    response = owner.client.post(
        "/api/v1/webhooks/", {"name": "Public", "url": url, "events": ["*"]}, format="json"
    )

    assert response.status_code == 201, response.content
    assert WebhookEndpoint.objects.get(pk=response.json()["id"]).url == url


# Names that do not resolve --------------------------------------------------------------------


def test_a_name_that_does_not_resolve_is_refused_by_the_check_as_unresolvable(hostile):
    with pytest.raises(targets.UnresolvableTarget, match="does not resolve"):
        targets.check("https://nowhere.example.test/hooks")


def test_a_name_that_does_not_resolve_yet_may_be_used_for_an_endpoint(hostile, owner):
    response = owner.client.post(
        "/api/v1/webhooks/",
        {"name": "Later", "url": "https://nowhere.example.test/hooks", "events": ["*"]},
        format="json",
    )
    assert response.status_code == 201, response.content


class HungLookup:
    """A name whose DNS server never answers (anyone can set one up for their own domain): the
    lookup blocks until `answer()`, or 30 s as a safety net for a test that would wait on it."""

    def __init__(self):
        self.answered = threading.Event()
        self.ended = False

    def __call__(self):
        self.answered.wait(30)
        self.ended = True
        return [PUBLIC_V4]

    def answer(self):
        self.answered.set()


@pytest.fixture
def hung(dns):
    lookup = dns.answers["hung.example.test"] = HungLookup()
    yield lookup
    lookup.answer()


def test_a_lookup_longer_than_its_bound_is_unresolvable(hostile, hung):
    with pytest.raises(targets.UnresolvableTarget, match=r"did not resolve within 0\.2 s"):
        targets.check("https://hung.example.test/hooks", within=0.2)
    assert not hung.ended


def test_a_name_whose_dns_never_answers_does_not_hold_the_request(
    hostile, owner, hung, monkeypatch
):
    """Created, and moved, while the lookup still hangs: accepted as a host that does not
    resolve yet (the relay checks it at each send), without waiting on the DNS server."""
    monkeypatch.setattr(endpoints, "URL_LOOKUP_SECONDS", 0.2)
    created = owner.client.post(
        "/api/v1/webhooks/",
        {"name": "Hung", "url": "https://hung.example.test/hooks", "events": ["*"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    moved = owner.client.patch(
        f"/api/v1/webhooks/{created.json()['id']}/",
        {"url": "https://hung.example.test/other"},
        format="json",
    )
    assert moved.status_code == 200, moved.content
    assert not hung.ended  # both answered while the lookups hang


def test_a_delivery_to_a_name_that_does_not_resolve_is_retried_later(hostile):
    delivery = WebhookDeliveryFactory(endpoint__url="https://nowhere.example.test/hooks")
    before = timezone.now()

    _send_all()

    delivery, attempt = _only_attempt(delivery)
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.next_attempt_at > before
    assert not attempt.error.startswith("Not sent")
    assert "does not resolve" in attempt.error


# Addresses that may receive webhooks ---------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [PUBLIC_V4, "8.8.8.8", "1.1.1.1", PUBLIC_V6, "2a00:1450:4001:82a::200e", "64:ff9b::5db8:d822"],
)
def test_public_addresses_may_receive_webhooks(address):
    assert targets.address_problem(address, allow_private=False) is None


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.10.0.1",
        "::1",
        "10.0.0.5",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "fc00::1",
        "::ffff:10.0.0.1",
    ],
)
def test_with_private_targets_allowed_loopback_and_private_addresses_pass(settings, address):
    assert targets.address_problem(address, allow_private=False) is not None
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    assert targets.address_problem(address) is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address under test, nothing binds to it)
        ("::", "unspecified"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),
    ],
)
def test_with_private_targets_allowed_the_other_non_public_addresses_are_still_refused(
    settings, address, reason
):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    problem = targets.address_problem(address)
    assert problem is not None and reason in problem


# DNS rebinding and the address connected to ---------------------------------------------------


def test_a_name_rebound_to_loopback_after_creation_receives_nothing(hostile, owner, receiver, dns):
    dns.answers["shifty.example.test"] = [PUBLIC_V4]
    response = owner.client.post(
        "/api/v1/webhooks/",
        {
            "name": "Shifty",
            "url": f"http://shifty.example.test:{receiver.port}/hooks",
            "events": ["*"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content  # public when checked at creation
    dns.answers["shifty.example.test"] = ["127.0.0.1"]  # the attacker's DNS now answers this
    response = owner.client.post(
        "/api/v1/organizations/members/invite",
        {"email": "new@example.com", "role": "member"},
        format="json",
    )
    assert response.status_code == 201, response.content
    dns.calls.clear()

    _send_all()

    assert receiver.requests == []
    delivery, attempt = _only_attempt(WebhookDelivery.objects.get())
    assert delivery.event_type == "organization.member.invited"
    assert delivery.status == DeliveryStatus.FAILED
    assert attempt.error.startswith("Not sent") and "loopback" in attempt.error
    assert dns.calls == ["shifty.example.test"]  # checked at send time, once


def test_the_request_goes_to_the_checked_address_and_names_the_host(settings, receiver, dns):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    # The first lookup answers the receiver; a second one would answer somewhere else.
    answers = iter([["127.0.0.1"]])
    dns.answers["hooks.example.test"] = lambda: next(answers, ["10.255.255.1"])
    delivery = WebhookDeliveryFactory(endpoint__url=f"http://hooks.example.test:{receiver.port}/x")

    _send_all()

    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert request.path == "/x"
    assert dns.calls == ["hooks.example.test"]
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED


# Redirects, answer size, time ----------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_and_fail_the_delivery(status, receiver, other_receiver):
    first, elsewhere = receiver, other_receiver
    first.default = Answer(status, body=b"", headers={"Location": elsewhere.url})
    delivery = WebhookDeliveryFactory(endpoint__url=first.url)

    _send_all()

    assert len(first.requests) == 1
    assert elsewhere.requests == []
    delivery, attempt = _only_attempt(delivery)
    assert attempt.status_code == status and not attempt.succeeded
    assert "Redirects are not followed" in attempt.error
    assert delivery.status == DeliveryStatus.FAILED  # a 3xx is not retried
    assert delivery.next_attempt_at is None


def test_only_the_start_of_a_large_answer_is_kept(settings, receiver):
    settings.WEBHOOK_RESPONSE_EXCERPT_BYTES = 1500
    receiver.default = Answer(body=b"x" * 100_000)
    delivery = WebhookDeliveryFactory(endpoint__url=receiver.url)

    _send_all()

    delivery, attempt = _only_attempt(delivery)
    assert delivery.status == DeliveryStatus.SUCCEEDED
    assert attempt.response_excerpt == "x" * 1500


def test_a_receiver_slower_than_the_timeout_is_cut_off_and_retried(settings, receiver):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.default = Answer(delay=2.0, body=b"")
    delivery = WebhookDeliveryFactory(endpoint__url=receiver.url)
    before = timezone.now()

    _send_all()

    delivery, attempt = _only_attempt(delivery)
    assert "Timed out" in attempt.error
    assert attempt.status_code is None and not attempt.succeeded
    assert 400 <= attempt.duration_ms < 1900
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.next_attempt_at > before + timedelta(seconds=1)


# What is stored: a URI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://hooks.example.com/in", "https://hooks.example.com/in"),
        ("HTTPS://Hooks.EXAMPLE.com/In", "https://hooks.example.com/In"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://例え.テスト/ä?q=ü#ö", "https://xn--r8jz45g.xn--zckzah/%C3%A4?q=%C3%BC#%C3%B6"),
        ("https://h.example/a%20b?x=1&y=2", "https://h.example/a%20b?x=1&y=2"),
        ("https://h.example/<{|}>", "https://h.example/%3C%7B%7C%7D%3E"),
        ("https://h.example/%zz[a]#b#c", "https://h.example/%25zz%5Ba%5D#b%23c"),
        ("https://[2001:db8::1]:8443/x", "https://[2001:db8::1]:8443/x"),
        ("https://h.example.:444", "https://h.example.:444"),
    ],
)
def test_a_url_is_normalized_to_a_uri(given, stored):
    assert targets.normalize(given) == stored
    assert targets.normalize(stored) == stored  # once is enough
    assert stored.isascii()
    # A URI by RFC 3986, as the schema's `format: uri` says (Schemathesis checks it so).
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    uri = jsonschema_rs.validator_for({"format": "uri"}, validate_formats=True)
    assert uri.is_valid(stored)


@pytest.mark.parametrize(
    "url",
    [
        "https://½/",
        "https://ü_x.example/",
        "https://ä..b/",
        "https://↓.example/",
        "https://a{b}.example/",
        "https://a|b/",
    ],
)
def test_a_host_that_is_no_domain_name_is_refused(url):
    with pytest.raises(targets.ForbiddenTarget, match="not a valid domain name"):
        targets.normalize(url)
