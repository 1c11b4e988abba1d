"""Structured logging: one line per event, `key=value` (readable) or JSON (`--log-format json`).

Call sites pass fields as `extra={"fields": {...}}` through `event()`; nothing here ever formats a
secret or a message payload, because call sites never hand them over.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

LOGGER = logging.getLogger("signalite")


def event(level: int, name: str, **fields: Any) -> None:
    """Log the event `name` with `fields`."""
    if LOGGER.isEnabledFor(level):
        LOGGER.log(level, name, extra={"fields": fields})


_NEEDS_QUOTES = re.compile(r'[ ="\\]')


def _quote(value: Any) -> str:
    text = value if type(value) is str else str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class TextFormatter(logging.Formatter):
    """`ts=... level=info event=channel.created arn=...`."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        ts = f"{self._stamp}.{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"event={_quote(record.getMessage())}"]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append("exception=" + _quote(self.formatException(record.exc_info).replace("\n", " | ")))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class LibraryFilter(logging.Filter):
    """Makes library records (aiohttp, asyncpg, redis) one structured line without client bytes.

    aiohttp logs a malformed request with a traceback whose exception text quotes the offending
    header line — which may carry a token. Keep the event and the exception's type, drop the rest.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            fields["exception"] = type(error).__name__
            if _client_error(error):
                # A malformed request is the client's fault, not the server's: a warning, not an error.
                record.levelno, record.levelname = logging.WARNING, "WARNING"
                record.msg, record.args = "http.malformed_request", ()
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        message = record.msg if isinstance(record.msg, str) and not record.args else record.getMessage()
        record.msg = "".join(ch if ch.isprintable() else "?" for ch in str(message)[:120])
        record.args = ()
        record.fields = fields
        return True


def _client_error(error: BaseException) -> bool:
    try:
        from aiohttp.http_exceptions import HttpProcessingError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(error, HttpProcessingError)


def configure(level: str, fmt: str) -> None:
    """Send signalite's log lines, and the libraries' (filtered), to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level.upper())
    LOGGER.propagate = False
    library_handler = logging.StreamHandler()
    library_handler.setFormatter(handler.formatter)
    library_handler.addFilter(LibraryFilter())
    for name in ("aiohttp", "asyncpg", "redis"):
        library = logging.getLogger(name)
        library.handlers[:] = [library_handler]
        library.setLevel(logging.WARNING)
        library.propagate = False
