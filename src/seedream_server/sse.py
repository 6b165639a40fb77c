"""Reading server-sent events: the one parser used by ``seedream generate`` and by the tests.

It follows the HTML standard's event-stream rules, as far as this API uses them: lines end in LF,
CRLF or CR; a line starting with ``:`` is a comment; ``field: value`` loses one space after the colon;
``data`` lines of one event join with LF; a blank line ends the event; an event without data is not
dispatched; what is pending when the stream ends is dropped. ``id`` and ``retry`` are not used by
the server and are ignored.

* :class:`SSEDecoder` is incremental: :meth:`SSEDecoder.feed` takes text chunks as they come off the
  socket (a line end may be split between chunks) and returns the events they complete.
* :func:`parse_events` reads a whole stream at once.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["SSEDecoder", "SSEEvent", "parse_events"]

_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEEvent(NamedTuple):
    """One dispatched event: its ``event:`` name (None when it has none) and its data lines joined by LF."""

    event: str | None
    data: str


class SSEDecoder:
    """Turns event-stream text, fed in chunks of any size, into :class:`SSEEvent` values."""

    def __init__(self) -> None:
        self._buffer = ""
        self._started = False
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, text: str) -> list[SSEEvent]:
        """The events completed by ``text`` (possibly none), in order."""
        buffer = self._buffer + text
        if not self._started and buffer:
            buffer = buffer.removeprefix("\ufeff")  # one byte-order mark may open the stream
            self._started = True
        events = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            if match.group() == "\r" and match.end() == len(buffer):
                break  # maybe the first half of a CRLF split between chunks: wait for the next one
            event = self._line(buffer[start : match.start()])
            if event is not None:
                events.append(event)
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def close(self) -> list[SSEEvent]:
        """The end of the stream: a held-back CR ends its line; an unfinished event is dropped."""
        events = []
        if self._buffer.endswith("\r"):
            events = self.feed("\n")  # the CR was a line end on its own; LF completes it the same way
        self._buffer, self._event, self._data = "", None, []
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            event, data = self._event, self._data
            self._event, self._data = None, []
            return SSEEvent(event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def parse_events(text: str) -> list[SSEEvent]:
    """Every complete event of a whole stream, in order."""
    decoder = SSEDecoder()
    return decoder.feed(text) + decoder.close()
