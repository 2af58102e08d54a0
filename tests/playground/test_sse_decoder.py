"""playground.providers.http.SSEDecoder: server-sent events from text fed in pieces."""

import pytest

from playground.providers.http import SSEDecoder, SSEEvent

STREAM = (
    ": a comment\r\n"
    "event: delta\r\n"
    "data: first line\r\n"
    "data: second line\r\n"
    "id: 7\r\n"
    "\r\n"
    "data:no space\n"
    "\n"
    "retry: 10\r"
    'data: {"text": "a\u2028b"}\r'
    "\r"
    "event: ignored without data\n"
    "\n"
    "data: [DONE]\n"
    "\n"
)
EVENTS = [
    SSEEvent("delta", "first line\nsecond line"),
    SSEEvent("message", "no space"),
    SSEEvent("message", '{"text": "a\u2028b"}'),
    SSEEvent("message", "[DONE]"),
]


def _decode(pieces) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def test_a_stream_fed_at_once_gives_its_events():
    assert _decode([STREAM]) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_the_same_events_whatever_the_pieces(size):
    # Cuts fall everywhere, between a CR and its LF among them.
    pieces = [STREAM[start : start + size] for start in range(0, len(STREAM), size)]

    assert _decode(pieces) == EVENTS


def test_a_cr_at_the_end_of_a_piece_then_a_lf_is_one_line_end():
    assert _decode(["data: a\r", "\n\r", "\n"]) == [SSEEvent("message", "a")]


def test_each_event_comes_out_of_the_piece_that_completes_it():
    decoder = SSEDecoder()

    assert decoder.feed("data: a\n") == []
    assert decoder.feed("\ndata: b\n\ndata: c") == [
        SSEEvent("message", "a"),
        SSEEvent("message", "b"),
    ]
    assert decoder.feed("") == []
    assert decoder.close() == [SSEEvent("message", "c")]


def test_a_stream_that_ends_without_the_blank_line_still_gives_its_last_event():
    assert _decode(["data: x\n", "data: y"]) == [SSEEvent("message", "x\ny")]
    assert _decode(["data: [DONE]\n"]) == [SSEEvent("message", "[DONE]")]
    assert _decode([""]) == []
