"""Logging for the CLI: readable lines on a terminal, one JSON object per line otherwise.

Kubernetes and log shippers parse JSON lines; people read text. ``auto`` picks by whether
stderr is a TTY. Extra fields passed with ``logger.info(..., extra={"fields": {...}})`` become
keys of the JSON object (and ``key=value`` pairs in text).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from connector.config import LogFormat

__all__ = ["JsonFormatter", "configure_logging"]

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_CHATTY_LIBRARIES = ("numba",)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def configure_logging(fmt: LogFormat, level: str, stream: TextIO | None = None) -> bool:
    """Send the root logger's records to ``stream`` (stderr); return whether JSON is used."""
    stream = sys.stderr if stream is None else stream
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else _TextFormatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_restream", False):
            root.removeHandler(old)
    handler._restream = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # numba logs every step of a compile at DEBUG (caught tracebacks included): a job's
    # DEBUG log is about the job.
    for chatty in _CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(root.level, logging.INFO))
    return use_json
