"""The gateway under ASGI, driven in-process through Django's ASGI handler: a client that goes
away mid-stream cancels the relay, and the call is settled at what was sent (no reservation
left behind, the call recorded as cancelled with estimated usage)."""

import asyncio
import json

import pytest
from django.core.asgi import get_asgi_application

from playground import tokens
from playground.models import CallStatus, GatewayCall
from playground.serving import GatewayFront
from tenants.models import QuotaCounter
from tests.factories import MembershipFactory, issue_api_key

from .loops import finish_like_a_server

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("connections_closed_per_request"),
]


LONG_PROMPT = " ".join(f"word{index}" for index in range(40))


def _scope(body: bytes, key: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/chat/completions",
        "raw_path": b"/api/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


@pytest.fixture(params=["front", "django"])
def application(request):
    """The served application (config/asgi.py: the gateway front before Django's handler),
    and Django's ASGI handler alone: the gateway behaves the same under both."""
    django_application = get_asgi_application()
    if request.param == "django":
        return django_application
    return GatewayFront(django_application, threads=2)


def _serve(
    application, body: bytes, key: str, *, disconnect_after_chunks: int | None
) -> list[dict]:
    messages: list[dict] = []

    async def run():
        gone = asyncio.Event()
        request_sent = False

        async def receive():
            nonlocal request_sent
            if not request_sent:
                request_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)
            if message["type"] == "http.response.body":
                chunks = sum(1 for m in messages if m["type"] == "http.response.body")
                if disconnect_after_chunks is not None and chunks >= disconnect_after_chunks:
                    gone.set()
                # A real client's socket takes time: let the disconnect be noticed.
                await asyncio.sleep(0.01)

        await application(_scope(body, key), receive, send)
        await finish_like_a_server()

    asyncio.run(run())
    return messages


def _relayed_text(messages) -> str:
    text = ""
    for message in messages:
        for line in message.get("body", b"").decode().split("\n\n"):
            if line.startswith("data: {"):
                chunk = json.loads(line.removeprefix("data: "))
                for choice in chunk.get("choices", []):
                    text += choice.get("delta", {}).get("content") or ""
    return text


def test_a_stream_is_relayed_chunk_by_chunk_under_asgi(application):
    membership = MembershipFactory()
    _, raw = issue_api_key(membership, scopes=["write"])
    body = json.dumps(
        {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    ).encode()

    messages = _serve(application, body, raw, disconnect_after_chunks=None)

    start = messages[0]
    assert start["status"] == 200
    assert (b"Content-Type", b"text/event-stream") in start["headers"]
    bodies = [m for m in messages if m["type"] == "http.response.body" and m.get("body")]
    assert len(bodies) > 5  # sent as it came, not as one body
    assert bodies[-1]["body"].endswith(b"data: [DONE]\n\n")
    call = GatewayCall.objects.get()
    assert call.status == CallStatus.SUCCEEDED and not call.usage_estimated


def test_a_client_gone_mid_stream_is_settled_at_what_was_sent(application):
    membership = MembershipFactory()
    _, raw = issue_api_key(membership, scopes=["write"])
    messages_in = [{"role": "user", "content": LONG_PROMPT}]
    body = json.dumps({"model": "gpt-4", "messages": messages_in, "stream": True}).encode()

    messages = _serve(application, body, raw, disconnect_after_chunks=4)

    relayed = _relayed_text(messages)
    assert b"[DONE]" not in b"".join(m.get("body", b"") for m in messages)
    call = GatewayCall.objects.get()
    assert call.status == CallStatus.CANCELLED
    assert call.usage_estimated
    assert call.prompt_tokens == tokens.prompt_tokens(messages_in)
    # Metered at what was sent (a chunk may have been produced as the client left).
    assert (
        tokens.count_tokens(relayed) <= call.completion_tokens <= tokens.count_tokens(relayed) + 1
    )
    counter = QuotaCounter.objects.get(tenant=membership.tenant, resource="tokens")
    assert counter.used == call.total_tokens < call.reserved_tokens
