"""The event-stream parser (seedream_server.sse) shared by ``seedream generate`` and the tests."""

from __future__ import annotations

import pytest

from seedream_server.sse import SSEDecoder, SSEEvent, parse_events

STREAM = 'event: image_generation.partial_succeeded\ndata: {"image_index": 0}\n\ndata: [DONE]\n\n'
EXPECTED = [SSEEvent("image_generation.partial_succeeded", '{"image_index": 0}'), SSEEvent(None, "[DONE]")]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_every_line_end_of_the_spec(end: str) -> None:
    assert parse_events(STREAM.replace("\n", end)) == EXPECTED


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_chunks_of_any_size_give_the_same_events(end: str, size: int) -> None:
    """A line end (a CRLF too) may be split between two chunks off the socket."""
    text = STREAM.replace("\n", end)
    decoder = SSEDecoder()
    events = [event for start in range(0, len(text), size) for event in decoder.feed(text[start : start + size])]
    assert events + decoder.close() == EXPECTED


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed("event: a\ndata: 1\n") == []
    assert decoder.feed("\n") == [SSEEvent("a", "1")]
    assert decoder.feed("data: 2\n\n") == [SSEEvent(None, "2")]  # the name does not carry over


def test_data_lines_join_with_lf_and_one_space_is_stripped() -> None:
    text = "data:a\ndata:  b\ndata\ndata: c \n\n"
    assert parse_events(text) == [SSEEvent(None, "a\n b\n\nc ")]


def test_comments_unknown_fields_and_events_without_data_are_skipped() -> None:
    text = ": keep-alive\n\nid: 7\nretry: 10\nevent: ping\n\nfoo: bar\ndata: x\n\n"
    assert parse_events(text) == [SSEEvent(None, "x")]


def test_a_byte_order_mark_may_open_the_stream() -> None:
    assert parse_events("\ufeffdata: x\n\n") == [SSEEvent(None, "x")]
    assert parse_events("data: \ufeffx\n\n") == [SSEEvent(None, "\ufeffx")]  # only at the very start


def test_an_unfinished_event_at_the_end_is_dropped() -> None:
    assert parse_events("data: a\n\ndata: b\n") == [SSEEvent(None, "a")]
    assert parse_events("data: a\r\r") == [SSEEvent(None, "a")]  # CR CR: a line, then a blank line


def test_other_unicode_line_breaks_are_data() -> None:
    """Only CR and LF end lines (str.splitlines would also split on U+2028 and others)."""
    assert parse_events("data: a\u2028b\x1cc\n\n") == [SSEEvent(None, "a\u2028b\x1cc")]
