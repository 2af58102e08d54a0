"""playground.providers.http.SSEDecoder: server-sent events from text fed in pieces."""

import pytest

from playground.providers.http import LineTooLong, SSEDecoder, SSEEvent

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


def test_a_line_in_many_pieces_is_one_line():
    # Kept apart until its end: a long line fed in small pieces costs its length, once.
    pieces = ["data: "] + ["x"] * 50_000 + ["\n\n"]
    assert _decode(pieces) == [SSEEvent("message", "x" * 50_000)]


def test_a_line_past_the_limit_is_refused_before_it_ends():
    decoder = SSEDecoder(max_line=10)
    assert decoder.feed("data: 1234") == []  # 10 characters: within
    with pytest.raises(LineTooLong):
        decoder.feed("5")


def test_a_whole_line_past_the_limit_is_refused():
    with pytest.raises(LineTooLong):
        SSEDecoder(max_line=10).feed("data: 12345\n")
    assert SSEDecoder(max_line=10).feed("data: 1234\n\n") == [SSEEvent("message", "1234")]


def test_the_data_lines_of_one_event_are_bounded_together():
    decoder = SSEDecoder(max_line=10)
    assert decoder.feed("data: 1234\ndata: 5\n") == []
    with pytest.raises(LineTooLong):
        decoder.feed("data: 6789\n")
    # Each event starts again from nothing.
    decoder = SSEDecoder(max_line=10)
    assert decoder.feed("data: 1234\n\ndata: 5678\n\n") == [
        SSEEvent("message", "1234"),
        SSEEvent("message", "5678"),
    ]


def test_the_events_before_a_line_past_the_limit_come_first():
    decoder = SSEDecoder(max_line=10)
    assert decoder.feed("data: a\n\ndata: 123456789\n") == [SSEEvent("message", "a")]
    with pytest.raises(LineTooLong):
        decoder.feed("\n")
    with pytest.raises(LineTooLong):
        decoder.close()
