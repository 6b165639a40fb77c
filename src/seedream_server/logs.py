"""The server's log: one configuration (text ``key=value`` lines or JSON lines on stderr), third-party debug
noise held at WARNING, and the structured line every HTTP request ends with (:func:`log_request`).

A line's structured fields travel on the record as ``fields`` (``extra={"fields": {...}}``): the text format
already has them in its message, the JSON format writes them as keys of the object.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["QUIET_LOGGERS", "JsonFormatter", "configure_logging", "log_request"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: libraries whose debug lines drown the server's (Pillow writes ~17 per image it opens)
QUIET_LOGGERS = ("PIL", "httpcore", "python_multipart", "multipart", "hpack", "urllib3", "filelock")
#: routes polled by probes and scrapers: their request lines are DEBUG, not INFO
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

request_log = logging.getLogger("seedream_server.request")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, then the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Send every log line to stderr as text or JSON at ``level``; quiet libraries stay at WARNING or above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    numeric = getattr(logging, level.upper(), logging.INFO)
    root.setLevel(numeric)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def _text(value: object) -> str:
    """A field for a ``key=value`` line: plain when it is one safe word, else quoted (no line breaks)."""
    text = str(value)
    if text and all(c.isalnum() or c in "-_./:@" for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def log_request(fields: Mapping[str, object], path: str) -> None:
    """The request's line: INFO (DEBUG for probes and scrapes that succeed), fields in order."""
    status = fields.get("status")
    quiet = path in PROBE_PATHS and isinstance(status, int) and status < 400
    message = "request " + " ".join(f"{name}={_text(value)}" for name, value in fields.items())
    request_log.log(logging.DEBUG if quiet else logging.INFO, "%s", message, extra={"fields": dict(fields)})
