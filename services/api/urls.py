"""Which URLs the API accepts: ``s3://bucket/key`` objects and prefixes, and http(s) callbacks.

Stricter than the workers (which also take local paths): over the API a local path would let a caller make a
worker read or write the worker's own disk, and ``..`` segments or ``?``/``#`` would let a URL mean something
other than what the allow-list check saw. Everything refused here is a 422 with a message.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ..storage import key_problem
from ..webhooks import CallbackRefused, IPNetwork, check_target
from .errors import ApiError

BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\?#]")

# The same rules as regular expressions, for the OpenAPI schema (clients and fuzzers see them) and as a final check
# here, so schema and code cannot disagree. ECMA-262 and Python compatible: no look-arounds. A key segment is any
# run of allowed characters except exactly "." or "..".
_CHAR = r"[^/?#\\\x00-\x1f\x7f]"
_NON_DOT = r"[^/.?#\\\x00-\x1f\x7f]"
_SEGMENT = rf"(?:{_NON_DOT}|\.{_NON_DOT}|\.\.{_CHAR}){_CHAR}*"
# No empty segments: "s3://b//in/x" would otherwise be checked as one key and written as another.
S3_OBJECT_PATTERN = rf"^s3://{BUCKET}/(?:{_SEGMENT}/)*{_SEGMENT}$"
S3_PREFIX_PATTERN = rf"^s3://{BUCKET}(?:/(?:{_SEGMENT}/)*(?:{_SEGMENT})?)?$"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?"  # a host name or IPv4 address (no IPv6 literals)
CALLBACK_PATTERN = rf"^https?://{_HOST}(?::{_PORT})?(?:[/?#][^\x00-\x20\x7f]*)?$"


def s3_parts(url: str) -> tuple[str, str] | None:
    """``s3://bucket/key`` → (bucket, key), splitting on the first slash only (no URL decoding, no query), as
    ``storage.split_s3_url`` does."""
    if not url.startswith("s3://"):
        return None
    bucket, _, key = url[len("s3://"):].partition("/")
    return bucket, key


def _invalid(what: str, message: str) -> ApiError:
    return ApiError(422, "invalid_url", f"{what}: {message}")


def check_s3_url(url: str, what: str, prefix: bool = False) -> str:
    """Returns the URL when it is a well-formed s3:// object URL (or prefix, with ``prefix=True``)."""
    if not url.startswith("s3://"):
        if "://" in url:
            scheme = url.split("://", 1)[0]
            raise _invalid(what, f"unsupported scheme {scheme[:20]!r}; the API accepts s3://bucket/key URLs only")
        raise _invalid(what, f"{url[:200]!r} is a local path; the API accepts s3://bucket/key URLs only")
    if _FORBIDDEN.search(url):
        raise _invalid(what, "control characters, backslashes, '?' and '#' are not allowed in s3:// URLs")
    bucket, key = s3_parts(url)  # type: ignore[misc]
    if not re.fullmatch(BUCKET, bucket):
        raise _invalid(what, f"{bucket[:70]!r} is not a valid bucket name")
    problem = key_problem(key, prefix)  # the storage layer's own rule: what passes here is what a worker reads
    if problem == "names a prefix, not an object":
        raise _invalid(what, f"{url} names a prefix, not an object")
    if problem:
        raise _invalid(what, problem)
    if not re.fullmatch(S3_PREFIX_PATTERN if prefix else S3_OBJECT_PATTERN, url):
        raise _invalid(what, f"{url[:200]!r} is not a valid s3:// URL")
    return url


def check_callback_url(url: str, allowed_networks: tuple[IPNetwork, ...] = ()) -> str:
    """Syntax, then egress: a host that is (or resolves to) a loopback, private, link-local, multicast or
    unspecified address is refused unless ``allowed_networks`` (IMGRESTORE_CALLBACK_ALLOWED_NETWORKS) lists it."""
    what = "callback_url"
    if re.search(r"[\x00-\x20\x7f]", url):
        raise _invalid(what, "whitespace and control characters are not allowed")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError as exc:
        raise _invalid(what, f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise _invalid(what, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise _invalid(what, "has no host")
    if port == 0:
        raise _invalid(what, "port 0 is not a valid port")
    if not re.fullmatch(CALLBACK_PATTERN, url):
        raise _invalid(what, "not a valid http(s) URL (host name or IPv4 address, optional port, path)")
    try:
        check_target(url, allowed_networks)
    except CallbackRefused as exc:
        raise _invalid(what, str(exc)) from None
    return url
