"""Images addressed by URL: ``s3://bucket/key`` (boto3, any S3-compatible endpoint) or local paths / ``file://``.

Writes never expose a half-written result: local files are written to a temp file in the same folder and renamed;
S3 objects appear whole (a single PUT, or a multipart upload that completes atomically).
"""

from __future__ import annotations

import fnmatch
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from .config import Settings
from .errors import (
    InputNotFoundError,
    StorageAccessError,
    TransientStorageError,
    UnsupportedURLError,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ObjectInfo:
    url: str
    size: int
    etag: str | None = None


SkippedKey = Callable[[str, str], None]  # (url, reason): a listed key that no job may read or write


class Storage(Protocol):
    def read(self, url: str) -> bytes: ...

    def write(self, url: str, data: bytes, content_type: str | None = None) -> None: ...

    def exists(self, url: str) -> bool: ...

    def list(self, prefix_url: str, start_after: str | None = None,
             on_skipped: SkippedKey | None = None) -> Iterator[ObjectInfo]: ...


def is_s3_url(url: str) -> bool:
    return url.startswith("s3://")


def location(url: str) -> str:
    """What a URL really names, for comparing places: an S3 URL as given, a local path resolved
    (``./scans/../scans/a.png`` and ``scans/a.png`` are one file)."""
    return url if is_s3_url(url) else local_path(url).resolve().as_posix()


def relative_below(url: str, root: str) -> str | None:
    """``url``'s path below the folder or prefix ``root`` (``a/p1.png``), or None when it is not below it.
    Local paths are compared resolved, so ``./scans`` and the ``scans/...`` paths a listing yields agree."""
    if is_s3_url(url) != is_s3_url(root):
        return None
    place, folder = location(url), location(root).rstrip("/") + "/"
    return place[len(folder):] if place.startswith(folder) else None


def local_path(url: str) -> Path:
    """The filesystem path of a local URL (a plain path or ``file://``)."""
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise UnsupportedURLError(f"{url}: file:// URLs must name a local path (file:///path)")
        return Path(unquote(parsed.path))
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise UnsupportedURLError(f"{url}: unsupported scheme {scheme!r}; use s3://bucket/key or a local path")
    return Path(url)


def resolve_local_url(url: str) -> str:
    """A relative local path made absolute where it is given, as a ``file://`` URL: a worker would read it from its
    own working folder (often on another machine). S3 and ``file://`` URLs and absolute paths are left as they are."""
    if "://" in url or os.path.isabs(url):
        return url
    return Path(os.path.abspath(url)).as_uri()


def split_s3_url(url: str, prefix: bool = False) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key): the one reading of an S3 URL that the API's checks and the storage
    layer share. The key is taken verbatim (no decoding, no stripping): ``s3://b//in/x.png`` is refused instead of
    silently becoming ``in/x.png``, and so are ``.``/``..`` segments, which a path-normalising S3 gateway would
    resolve elsewhere. With ``prefix=True`` an empty key or a trailing ``/`` (a folder) is allowed."""
    if not url.startswith("s3://"):
        raise UnsupportedURLError(f"{url}: expected s3://bucket/key")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or any(c in bucket for c in "?#\\"):
        raise UnsupportedURLError(f"{url}: expected s3://bucket/key")
    problem = key_problem(key, prefix)
    if problem:
        raise UnsupportedURLError(f"{url}: {problem}")
    return bucket, key


def key_problem(key: str, prefix: bool = False) -> str | None:
    """Why an S3 key is not one imgrestore reads or writes (None: it is fine)."""
    segments = key.split("/")
    if prefix and segments[-1] == "":
        segments = segments[:-1]  # "scans/" is the folder scans
    if not prefix and (not key or key.endswith("/")):
        return "names a prefix, not an object"
    if any(segment == "" for segment in segments):
        return "empty path segment ('//' or a leading '/'): refused, it would be read as another key"
    if any(segment in (".", "..") for segment in segments):
        return "'.' and '..' path segments are not allowed"
    return None


class LocalStorage:
    def read(self, url: str) -> bytes:
        path = local_path(url)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise InputNotFoundError(f"{path}: no such file")
        except IsADirectoryError:
            raise InputNotFoundError(f"{path}: is a folder, not an image file")
        except PermissionError:
            raise StorageAccessError(f"{path}: permission denied")

    def write(self, url: str, data: bytes, content_type: str | None = None) -> None:
        path = local_path(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        except PermissionError:
            raise StorageAccessError(f"{path.parent}: permission denied")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, url: str) -> bool:
        return local_path(url).is_file()

    def list(self, prefix_url: str, start_after: str | None = None,
             on_skipped: SkippedKey | None = None) -> Iterator[ObjectInfo]:
        """Recursively, skipping hidden files, in the order S3 lists keys (lexicographic by path), so a listing
        resumed after ``start_after`` (a path it yielded) yields exactly what came after it. Memory holds one
        folder's entries per level of depth, never the whole tree."""
        root = local_path(prefix_url)
        if root.is_file():
            yield _local_info(root)
            return
        for path in _files_in_key_order(root, start_after or None):
            yield _local_info(path)


def _files_in_key_order(folder: Path, start_after: str | None) -> Iterator[Path]:
    """Files under ``folder`` in lexicographic order of their path strings, each one after ``start_after``.

    A sub-folder sorts as its name plus "/", the character every path inside it continues with: "a.png" <
    "a/x.png" < "a0.png", as S3 orders keys. A sub-folder that sorts wholly before ``start_after`` is not read.
    As ``os.walk`` did, symlinked folders are not followed and unreadable folders are skipped."""
    try:
        with os.scandir(folder) as scan:
            entries = sorted(((entry.name + "/" if _is_folder(entry) else entry.name), entry) for entry in scan)
    except OSError:
        return
    for key, entry in entries:
        path = folder / entry.name
        if key.endswith("/"):
            inside = f"{path}/"
            if entry.is_symlink() or (start_after is not None and start_after >= inside
                                      and not start_after.startswith(inside)):
                continue  # a symlinked folder, or one whose every path sorts before the cursor
            yield from _files_in_key_order(path, start_after if start_after and start_after > inside else None)
        elif not entry.name.startswith(".") and (start_after is None or str(path) > start_after):
            yield path


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks, as os.walk's split into folders and files does
    except OSError:
        return False


def _local_info(path: Path) -> ObjectInfo:
    """A local file's "etag" is its modification time: enough to tell a changed input from a finished one."""
    stat = path.stat()
    return ObjectInfo(str(path), stat.st_size, str(stat.st_mtime_ns))


class S3Storage:
    """boto3 client configured from settings; boto retries each request, then errors are classified."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        config = Config(
            retries={"mode": settings.s3_retry_mode, "max_attempts": settings.s3_max_attempts},
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            max_pool_connections=settings.s3_max_pool_connections,
            s3={"addressing_style": settings.s3_addressing_style},
            region_name=settings.s3_region,
        )
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret,
            config=config,
        )
        mb = 1024 * 1024
        self.transfer = TransferConfig(
            multipart_threshold=settings.s3_multipart_threshold_mb * mb,
            multipart_chunksize=settings.s3_multipart_chunksize_mb * mb,
            use_threads=True,
            max_concurrency=4,
        )

    def read(self, url: str) -> bytes:
        """One GET for ordinary images; objects above the multipart threshold use parallel ranged GETs."""
        bucket, key = split_s3_url(url)
        with _classified(url):
            response = self.client.get_object(Bucket=bucket, Key=key)
            if response["ContentLength"] <= self.transfer.multipart_threshold:
                with response["Body"] as body:
                    return body.read()
            response["Body"].close()
            buffer = io.BytesIO()
            self.client.download_fileobj(bucket, key, buffer, Config=self.transfer)
            return buffer.getvalue()

    def write(self, url: str, data: bytes, content_type: str | None = None) -> None:
        bucket, key = split_s3_url(url)
        extra = {"ContentType": content_type} if content_type else None
        with _classified(url):
            self.client.upload_fileobj(io.BytesIO(data), bucket, key, ExtraArgs=extra, Config=self.transfer)

    def exists(self, url: str) -> bool:
        return self.head(url) is not None

    def head(self, url: str) -> ObjectInfo | None:
        bucket, key = split_s3_url(url)
        try:
            with _classified(url):
                meta = self.client.head_object(Bucket=bucket, Key=key)
        except InputNotFoundError:
            return None
        return ObjectInfo(url, int(meta["ContentLength"]), meta.get("ETag", "").strip('"') or None)

    def list(self, prefix_url: str, start_after: str | None = None,
             on_skipped: SkippedKey | None = None) -> Iterator[ObjectInfo]:
        """Page by page (1000 keys a request), so memory stays flat for any number of keys; in key order,
        optionally resuming after the URL ``start_after``. Keys no job may use (``key_problem``) are not yielded:
        ``on_skipped(url, reason)`` hears of each (a backfill's failure report lists them)."""
        bucket, prefix = split_s3_url(prefix_url, prefix=True)
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = split_s3_url(start_after)[1]
        with _classified(prefix_url):
            for page in paginator.paginate(**kwargs):
                for item in page.get("Contents", ()):
                    if item["Key"].endswith("/"):
                        continue  # a "folder" marker object, not an image
                    problem = key_problem(item["Key"])
                    if problem:  # a key no job may read or write: skipped, never becomes a job
                        url = f"s3://{bucket}/{item['Key']}"
                        log.warning("listing skipped a key", extra={"url": url[:1024], "reason": problem})
                        if on_skipped is not None:
                            on_skipped(url, problem)
                        continue
                    yield ObjectInfo(f"s3://{bucket}/{item['Key']}", int(item["Size"]), item["ETag"].strip('"'))


class _classified:
    """Turns boto/botocore failures into our permanent vs transient storage errors."""

    _NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
    _ACCESS = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def _missing_bucket(self) -> StorageAccessError:
        bucket = self.url[len("s3://"):].partition("/")[0]
        return StorageAccessError(f"{self.url}: bucket {bucket!r} does not exist (NoSuchBucket); check the bucket "
                                  "name and the endpoint (IMGRESTORE_S3_ENDPOINT_URL)")

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, S3UploadFailedError) and isinstance(exc.__cause__, ClientError):
            exc = exc.__cause__  # the store's own error code, not boto3's wording of it
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":  # the code every S3-compatible store sends; the message text is its own
                raise self._missing_bucket() from None
            if code in self._NOT_FOUND or status == 404:
                raise InputNotFoundError(f"{self.url}: no such object") from None
            if code in self._ACCESS or status in (401, 403):
                raise StorageAccessError(f"{self.url}: access refused by the store ({code or status})") from None
            if status is None or status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                raise TransientStorageError(f"{self.url}: store unavailable ({code or status}) after retries") from None
            raise StorageAccessError(f"{self.url}: request rejected by the store ({code}: {error.get('Message')})") from None
        if isinstance(exc, S3UploadFailedError):  # no ClientError behind it: boto3's text quotes the code
            text = str(exc)
            if "NoSuchBucket" in text:
                raise self._missing_bucket() from None
            if any(c in text for c in self._ACCESS):
                raise StorageAccessError(f"{self.url}: upload refused by the store: {text}") from None
            raise TransientStorageError(f"{self.url}: upload failed after retries: {text}") from None
        from urllib3.exceptions import HTTPError as Urllib3Error

        # Connection resets, timeouts, unreachable endpoints, bodies cut short mid-stream.
        if isinstance(exc, (BotoCoreError, Urllib3Error, ConnectionError, TimeoutError)):
            raise TransientStorageError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        return False


class StorageRouter:
    """Picks the backend by URL; the S3 client is created on first use (one per process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local = LocalStorage()
        self._s3: S3Storage | None = None

    @property
    def s3(self) -> S3Storage:
        if self._s3 is None:
            self._s3 = S3Storage(self.settings)
        return self._s3

    def for_url(self, url: str) -> Storage:
        return self.s3 if is_s3_url(url) else self.local

    def read(self, url: str) -> bytes:
        return self.for_url(url).read(url)

    def write(self, url: str, data: bytes, content_type: str | None = None) -> None:
        self.for_url(url).write(url, data, content_type)

    def exists(self, url: str) -> bool:
        return self.for_url(url).exists(url)

    def list(self, prefix_url: str, start_after: str | None = None,
             on_skipped: SkippedKey | None = None) -> Iterator[ObjectInfo]:
        return self.for_url(prefix_url).list(prefix_url, start_after, on_skipped)


def matches_any(url: str, patterns: list[str]) -> bool:
    """Shell-style include patterns on the file name (e.g. ``*.png``); case-insensitive."""
    name = url.rsplit("/", 1)[-1].lower()
    return any(fnmatch.fnmatch(name, p.strip().lower()) for p in patterns if p.strip())
