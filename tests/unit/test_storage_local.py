import os

import pytest

from services.errors import InputNotFoundError, UnsupportedURLError
from services.storage import LocalStorage, local_path, matches_any


def test_local_write_is_atomic_and_leaves_no_temp_file(tmp_path, monkeypatch):
    storage = LocalStorage()
    target = tmp_path / "deep" / "out.png"
    storage.write(str(target), b"first")
    assert target.read_bytes() == b"first"

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        storage.write(str(target), b"second, never complete")
    assert target.read_bytes() == b"first"  # readers never saw a half-written file
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


def test_file_urls_and_errors(tmp_path):
    (tmp_path / "a b.png").write_bytes(b"x")
    assert LocalStorage().read(f"file://{tmp_path}/a%20b.png") == b"x"
    assert local_path("file:///x/y.png").as_posix() == "/x/y.png"
    with pytest.raises(UnsupportedURLError, match="gs"):
        local_path("gs://bucket/key")
    with pytest.raises(UnsupportedURLError):
        local_path("file://otherhost/x.png")
    with pytest.raises(InputNotFoundError, match="no such file"):
        LocalStorage().read(str(tmp_path / "missing.png"))


def test_listing_is_recursive_in_key_order_and_skips_hidden(tmp_path):
    """Lexicographic by path, as S3 lists keys: a folder's files sort where its name plus "/" does, so "a.png" <
    "a/c.jpg" < "a0.png" < "b.png". Before the fix the root's files came first (os.walk order): b.png, then a/c.jpg."""
    for name in ("b.png", "a/c.jpg", ".hidden.png", "a/.part", "a.png", "a0.png", "a/d/e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    urls = [o.url for o in LocalStorage().list(str(tmp_path))]
    names = ["a.png", "a/c.jpg", "a/d/e.png", "a0.png", "b.png"]
    assert urls == [str(tmp_path / n) for n in names]
    assert urls == sorted(urls)
    assert matches_any("s3://b/x/Y.PNG", ["*.png", "*.jpg"]) and not matches_any("x.tif", ["*.png"])


def test_a_resumed_listing_continues_exactly_after_its_cursor(tmp_path):
    """Issue 10, bug 1: resuming after b.png skipped a/x.png (listed after it, compared before it)."""
    for name in ("b.png", "a/x.png", "a/y/z.png", "a.png", "c/d.png", "b0/e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    storage = LocalStorage()
    everything = [o.url for o in storage.list(str(tmp_path))]
    assert len(everything) == 6
    for i, cursor in enumerate(everything):
        assert [o.url for o in storage.list(str(tmp_path), cursor)] == everything[i + 1:], cursor
    # A cursor whose file is gone since (an input deleted between two pages) resumes after where it stood.
    assert [o.url for o in storage.list(str(tmp_path), str(tmp_path / "a" / "w.png"))] == everything[1:]
    assert [o.url for o in storage.list(str(tmp_path), str(tmp_path / "a" / "y" / "q.png"))] == everything[2:]
