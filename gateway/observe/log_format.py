"""How log lines are written: `LANEGATE_LOG_FORMAT=text` (default) or `json`.

In `json`, every record becomes one JSON object on one line, so jq, Loki or Vector read the
file directly: `ts` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, and `exception`
(the traceback as one string) when there is one. The access log's fields (`recorder`) are
merged into its object instead of being a JSON string inside `message`. Must not: add fields
from request bodies or headers (only what the records already carry).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The attribute a record carries its structured fields in (`logger.info(..., extra={...})`).
FIELDS = "lanegate_fields"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; newlines in messages and tracebacks stay escaped."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, separators=(",", ":"))


def formatter(kind: LogFormat) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)
