"""Logging set-up: text or JSON lines, libp2p's loggers routed through ours."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
import time

__all__ = ["REQUEST_ID", "RequestIdFilter", "new_request_id", "setup_logging", "valid_request_id"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("triomcp_request_id", default=None)
"""The id of the HTTP request (or peer request) being served; Trio tasks inherit it from their spawner."""

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_request_id() -> str:
    return secrets.token_hex(8)


def valid_request_id(value: str | None) -> str | None:
    """A caller-supplied id is kept only if it is short and plain (it ends up in logs)."""
    return value if value is not None and _REQUEST_ID_RE.fullmatch(value) else None


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` from the context, so every log line names its request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [req={request_id}]" if request_id else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            out["request_id"] = request_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RequestIdFilter())
    if level != "DEBUG":
        handler.addFilter(_quiet_libp2p)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # libp2p sets propagate=False with no handler: its warnings would bypass this config.
    logging.getLogger("libp2p").propagate = True


def _quiet_libp2p(record: logging.LogRecord) -> bool:
    """libp2p's modules set their own levels and chat at INFO: keep its warnings and errors only."""
    return record.levelno >= logging.WARNING or not record.name.startswith("libp2p")
