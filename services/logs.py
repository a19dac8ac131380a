"""Structured logging: one JSON object a line (or plain text), with the ``extra`` fields a call passes."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]+)@", re.I)


# Webhook URLs are chosen by clients, who often put a token in the query string; S3 presigned URLs carry signatures.
_HTTP_QUERY = re.compile(r"(?P<base>https?://[^\s?#'\"<>]*)\?[^\s'\"<>]*", re.I)


def redact(text: str) -> str:
    """Hides the password of any ``scheme://user:password@host`` URL and the query string of any http(s) URL."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _HTTP_QUERY.sub(lambda m: f"{m['base']}?…", text)


def _redacted(value: object) -> object:
    """Extras too: a URL passed as a field is as secret as one in the message."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (dict, list, tuple)):
        return json.loads(redact(json.dumps(value, default=str)))
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = _redacted(value)
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={_redacted(v)}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        )
        line = f"{record.levelname.lower():7} {record.name}: {redact(record.getMessage())}"
        return f"{line} {extras}".rstrip()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
