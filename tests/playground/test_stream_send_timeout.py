"""A streamed answer sent from a request thread (an audit export, an artifact download) gives
the thread back when its client stops reading: a piece not taken within
STREAM_SEND_TIMEOUT_SECONDS ends the stream, the response is closed (a walk slot or a cursor
it holds given back), and the thread serves other requests again. Without it, a few clients
that open exports and never read would hold every request thread of a worker."""

import asyncio
import logging
import threading
import time

import pytest
from django.http import StreamingHttpResponse

from playground.serving import _Sender

# Closing a response sends request_finished, which sees to the database connections.
pytestmark = pytest.mark.django_db


@pytest.fixture
def loop():
    """An event loop running on its own thread, as the server's is."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    loop.close()


class Client:
    """An ASGI `send` whose client takes `takes` messages, then stops reading."""

    def __init__(self, takes: int):
        self.takes = takes
        self.taken = []
        self.stuck = 0
        self.cancelled = 0

    async def send(self, message):
        if len(self.taken) < self.takes:
            self.taken.append(message)
            return
        self.stuck += 1
        try:
            await asyncio.Event().wait()  # as uvicorn's send waits for a full socket to drain
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


def streamed(pieces: int, closed: list) -> StreamingHttpResponse:
    def lines():
        try:
            for number in range(pieces):
                yield f"line {number}\n"
        finally:
            closed.append(True)

    return StreamingHttpResponse(lines(), content_type="application/x-ndjson")


def test_a_client_that_stops_reading_ends_the_stream_after_the_timeout(loop, caplog):
    client, closed = Client(takes=3), []
    response = streamed(100, closed)
    sender = _Sender(client.send, loop, timeout=0.2)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="playground.serving"):
        sender.stream(response)
    response.close()

    assert time.monotonic() - started < 5  # returned, instead of waiting for ever
    assert len(client.taken) == 3 and client.stuck == 1
    time.sleep(0.05)
    assert client.cancelled == 1  # the send waiting on the client was cancelled
    assert closed == [True]
    assert "stopped reading" in caplog.text


def test_a_client_that_reads_gets_the_whole_stream(loop):
    client, closed = Client(takes=10**6), []
    response = streamed(100, closed)

    _Sender(client.send, loop, timeout=0.2).stream(response)
    response.close()

    body = b"".join(message.get("body", b"") for message in client.taken[1:])
    assert body == b"".join(f"line {n}\n".encode() for n in range(100))
    assert client.taken[-1] == {"type": "http.response.body"}
    assert closed == [True]


def test_the_timeout_defaults_to_the_setting(loop, settings):
    settings.STREAM_SEND_TIMEOUT_SECONDS = 7

    assert _Sender(Client(1).send, loop)._timeout == 7
