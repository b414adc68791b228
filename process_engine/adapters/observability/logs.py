"""Structured logs: JSON lines or plain text, by LOG_FORMAT."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

# Fields that ride along in `extra=` and belong in every JSON line when present.
CONTEXT_FIELDS = (
    "instance_id",
    "definition_id",
    "activity_id",
    "correlation_id",
    "correlation_key",
    "causation_id",
    "action",
    "idempotency_key",
    "topic",
    "partition",
    "offset",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the context fields the engine attaches."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """Readable lines; context fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as text."""
        text = super().format(record)
        context = " ".join(f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if getattr(record, n, None) is not None)
        return f"{text} [{context}]" if context else text


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send every log line to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at warning unless asked for.
    for noisy in ("apscheduler", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # "skipped: maximum number of running instances" is the timer sweep overlapping a
    # firing in progress: expected, not worth a warning.
    logging.getLogger("apscheduler.scheduler").setLevel(max(logging.ERROR, logging.getLevelName(level)))
    # A conflict inside the commit pipeline makes psycopg warn "error ignored terminating
    # <Pipeline>" on its way out; the conflict itself is raised and retried (psycopg#266).
    logging.getLogger("psycopg").setLevel(max(logging.ERROR, logging.getLevelName(level)))
