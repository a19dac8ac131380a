"""A listing of object URLs that stands in for S3 or a folder where a test is about queueing, not storage."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from services.storage import ObjectInfo, SkippedKey


class Listing:
    """``list(prefix, start_after)`` over fixed URLs, in key order like S3; counts what it was asked. ``fail_after``
    raises after that many objects, as a listing cut short by a crash or a network error would."""

    def __init__(self, urls: Iterable[str], fail_after: int | None = None) -> None:
        self.urls = sorted(urls)
        self.fail_after = fail_after
        self.listed = 0

    def list(self, prefix_url: str, start_after: str | None = None,
             on_skipped: SkippedKey | None = None) -> Iterator[ObjectInfo]:
        for url in self.urls:
            if not url.startswith(prefix_url) or (start_after is not None and url <= start_after):
                continue
            if self.fail_after is not None and self.listed >= self.fail_after:
                raise ConnectionResetError("listing cut short")
            self.listed += 1
            yield ObjectInfo(url=url, size=100)
